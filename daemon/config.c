/*
 * See config.h. One table maps each key to a setter, shared by the file
 * parser and the flag parser so the two can never disagree on what a
 * setting means or accepts.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build_config.h"
#include "log.h"
#include "path.h"

typedef int (*config_setter)(struct banger_config *cfg, const char *value);

static int set_path(char *field, size_t size, const char *value)
{
	if (!path_is_normal_absolute(value))
		return -EINVAL;
	return field_set(field, size, value);
}

static int set_state_dir(struct banger_config *c, const char *v)
{
	return set_path(c->state_dir, sizeof(c->state_dir), v);
}

static int set_listen(struct banger_config *c, const char *v)
{
	return set_path(c->listen, sizeof(c->listen), v);
}

static int set_helper(struct banger_config *c, const char *v)
{
	return set_path(c->helper, sizeof(c->helper), v);
}

static int set_helper_socket(struct banger_config *c, const char *v)
{
	return set_path(c->helper_socket, sizeof(c->helper_socket), v);
}

static int set_audit_log(struct banger_config *c, const char *v)
{
	return set_path(c->audit_log, sizeof(c->audit_log), v);
}

static int set_user(struct banger_config *c, const char *v)
{
	if (v[0] == '\0' || strchr(v, ':') || strchr(v, '/'))
		return -EINVAL;
	return field_set(c->user, sizeof(c->user), v);
}

static int set_admin_group(struct banger_config *c, const char *v)
{
	if (v[0] == '\0' || strchr(v, ':') || strchr(v, '/'))
		return -EINVAL;
	return field_set(c->admin_group, sizeof(c->admin_group), v);
}

static int set_log_level(struct banger_config *c, const char *v)
{
	int r = log_level_from_string(v);
	if (r < 0)
		return r;
	c->log_level = r;
	return 0;
}

/* A whole number in [min, max], in its plain decimal spelling. */
static int parse_count(const char *v, unsigned long long min, unsigned long long max,
		       unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || end == v || *end || v[0] < '0' || v[0] > '9' || n < min || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}

#define COUNT_SETTER(name, field, min, max)                                                        \
	static int name(struct banger_config *c, const char *v)                                    \
	{                                                                                          \
		unsigned long long n;                                                              \
		int r = parse_count(v, min, max, &n);                                              \
		if (r == 0)                                                                        \
			c->field = (__typeof__(c->field))n;                                        \
		return r;                                                                          \
	}

COUNT_SETTER(set_api_sock_wait_ms, api_sock_wait_ms, 0, CONFIG_MAX_API_SOCK_WAIT_MS)
COUNT_SETTER(set_helper_hello_timeout_ms, helper_timeout_ms[HELPER_OP_HELLO],
	     CONFIG_MIN_HELPER_TIMEOUT_MS, CONFIG_MAX_HELPER_TIMEOUT_MS)
COUNT_SETTER(set_helper_probe_timeout_ms, helper_timeout_ms[HELPER_OP_PROBE],
	     CONFIG_MIN_HELPER_TIMEOUT_MS, CONFIG_MAX_HELPER_TIMEOUT_MS)
COUNT_SETTER(set_helper_scan_timeout_ms, helper_timeout_ms[HELPER_OP_SCAN],
	     CONFIG_MIN_HELPER_TIMEOUT_MS, CONFIG_MAX_HELPER_TIMEOUT_MS)
COUNT_SETTER(set_helper_teardown_timeout_ms, helper_timeout_ms[HELPER_OP_TEARDOWN],
	     CONFIG_MIN_HELPER_TIMEOUT_MS, CONFIG_MAX_HELPER_TIMEOUT_MS)
COUNT_SETTER(set_max_vms, max_vms, 1, PS_SCAN_MAX_SOCKETS)
COUNT_SETTER(set_max_connections, limits.max_connections, 1, 1000000)
COUNT_SETTER(set_reserved_admin, limits.reserved_admin, 1, 1000000)
COUNT_SETTER(set_max_per_uid, limits.max_per_uid, 1, 1000000)
COUNT_SETTER(set_idle_timeout_ms, limits.idle_timeout_ms, 0, 86400000)
COUNT_SETTER(set_max_output_per_conn, limits.max_output_per_conn, 4096, 1ull << 30)
COUNT_SETTER(set_max_output_total, limits.max_output_total, 65536, 1ull << 34)
COUNT_SETTER(set_stall_timeout_ms, limits.stall_timeout_ms, 1, 3600000)
COUNT_SETTER(set_max_input_total, limits.max_input_total, 2 * VARLINK_MAX_MESSAGE_BYTES, 1ull << 34)

struct config_key {
	const char *key; /* in the file; the flag is the same with '-' for '_' */
	const char *flag;
	config_setter set;
	const char *meta;
	const char *help;
};

static const struct config_key config_keys[] = {
    {"state_dir", "state-dir", set_state_dir, "DIR", "state directory"},
    {"listen", "listen", set_listen, "PATH", "control socket (when not socket-activated)"},
    {"user", "user", set_user, "NAME", "user to run as after start-up"},
    {"admin_group", "admin-group", set_admin_group, "GROUP", "members may call mutating methods"},
    {"helper", "helper", set_helper, "PATH", "banger-privhelper executable"},
    {"helper_socket", "helper-socket", set_helper_socket, "PATH",
     "split mode: the helper\'s socket (no spawn)"},
    {"audit_log", "audit-log", set_audit_log, "FILE", "helper's audit log file"},
    {"log_level", "log-level", set_log_level, "LEVEL", "error|warning|notice|info|debug"},
    {"api_sock_wait_ms", "api-sock-wait-ms", set_api_sock_wait_ms, "MS",
     "how long SetHandles waits for firecracker to listen on its api socket"},
    {"helper_hello_timeout_ms", "helper-hello-timeout-ms", set_helper_hello_timeout_ms, "MS",
     "the helper must answer HELLO within this, or it is stuck"},
    {"helper_probe_timeout_ms", "helper-probe-timeout-ms", set_helper_probe_timeout_ms, "MS",
     "the helper must answer PROBE (SetHandles) within this"},
    {"helper_scan_timeout_ms", "helper-scan-timeout-ms", set_helper_scan_timeout_ms, "MS",
     "the helper must answer SCAN (reconcile) within this"},
    {"helper_teardown_timeout_ms", "helper-teardown-timeout-ms", set_helper_teardown_timeout_ms,
     "MS", "the helper must answer TEARDOWN within this"},
    {"max_vms", "max-vms", set_max_vms, "N",
     "VM records bangerd keeps (Register of a new id past it: TooManyVMs)"},
    {"max_connections", "max-connections", set_max_connections, "N", "client connections in all"},
    {"reserved_admin_connections", "reserved-admin-connections", set_reserved_admin, "N",
     "of those, kept for admins (root, the daemon user, the admin group)"},
    {"max_connections_per_uid", "max-connections-per-uid", set_max_per_uid, "N",
     "connections of each non-admin uid"},
    {"idle_timeout_ms", "idle-timeout-ms", set_idle_timeout_ms, "MS",
     "close a connection with no call in flight after this (0: never)"},
    {"max_output_per_connection", "max-output-per-connection", set_max_output_per_conn, "BYTES",
     "unread replies past this: stop reading that client"},
    {"max_output_total", "max-output-total", set_max_output_total, "BYTES",
     "all clients' unread replies past this: drop the one adding"},
    {"max_input_total", "max-input-total", set_max_input_total, "BYTES",
     "readers' unparsed input past this: drop the reader adding"},
    {"stall_timeout_ms", "stall-timeout-ms", set_stall_timeout_ms, "MS",
     "drop a stopped client that still does not read after this"},
};

/*
 * Settings are numbered: bangerd's own keys first, then the helper's policy
 * flags (policy_flags[], proto/policy.h), which bangerd takes from its file
 * and command line alike and passes on to the helper.
 */
#define N_OWN_KEYS ELEMENTSOF(config_keys)
#define N_SETTINGS (N_OWN_KEYS + POLICY_N_FLAGS)

static const struct policy_flag *policy_setting(size_t i)
{
	return i >= N_OWN_KEYS ? &policy_flags[i - N_OWN_KEYS] : NULL;
}

/* The flag's name without its dashes: "state-dir". */
static const char *setting_flag(size_t i)
{
	return policy_setting(i) ? policy_setting(i)->flag + 2 : config_keys[i].flag;
}

static int setting_set(struct banger_config *cfg, size_t i, const char *value)
{
	const struct policy_flag *f = policy_setting(i);
	return f ? policy_flag_set(f, &cfg->policy, value) : config_keys[i].set(cfg, value);
}

/* A list setting given on the command line replaces the file's list (only policy has lists). */
static void setting_clear(struct banger_config *cfg, size_t i)
{
	const struct policy_flag *f = policy_setting(i);
	if (f)
		policy_flag_clear(f, &cfg->policy);
}

void config_init(struct banger_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	field_set(cfg->state_dir, sizeof(cfg->state_dir), BANGER_DEFAULT_STATE_DIR);
	field_set(cfg->listen, sizeof(cfg->listen), BANGER_DEFAULT_LISTEN);
	field_set(cfg->helper, sizeof(cfg->helper), BANGER_LIBEXECDIR "/banger-privhelper");
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->api_sock_wait_ms = CONFIG_DEFAULT_API_SOCK_WAIT_MS;
	cfg->max_vms = PS_SCAN_MAX_SOCKETS;
	cfg->helper_timeout_ms[HELPER_OP_HELLO] = CONFIG_DEFAULT_HELPER_HELLO_TIMEOUT_MS;
	cfg->helper_timeout_ms[HELPER_OP_PROBE] = CONFIG_DEFAULT_HELPER_PROBE_TIMEOUT_MS;
	cfg->helper_timeout_ms[HELPER_OP_SCAN] = CONFIG_DEFAULT_HELPER_SCAN_TIMEOUT_MS;
	cfg->helper_timeout_ms[HELPER_OP_TEARDOWN] = CONFIG_DEFAULT_HELPER_TEARDOWN_TIMEOUT_MS;
	varlink_limits_default(&cfg->limits);
	policy_init(&cfg->policy);
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/* The setting a file key names, or -1. */
static int setting_by_key(const char *key)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (policy_setting(i) ? policy_flag_is_key(policy_setting(i), key)
				      : strcmp(config_keys[i].key, key) == 0)
			return (int)i;
	return -1;
}

int config_load_file(struct banger_config *cfg, const char *path, char *why, size_t why_size)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[PATH_MAX + 128];
	unsigned lineno = 0;

	if (!f) {
		int r = negative_errno();
		snprintf(why, why_size, "%s: %s", path, strerror(-r));
		return r;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(why, why_size, "%s:%u: line too long", path, lineno);
			return -EINVAL;
		}
		char *s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(why, why_size, "%s:%u: expected 'key = value'", path, lineno);
			return -EINVAL;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		int k = setting_by_key(key);
		if (k < 0) {
			snprintf(why, why_size, "%s:%u: unknown key '%s'", path, lineno, key);
			return -EINVAL;
		}
		int r = setting_set(cfg, (size_t)k, value);
		if (r < 0) {
			snprintf(why, why_size, "%s:%u: bad value for %s: '%s' (%s)", path, lineno,
				 key, value, strerror(-r));
			return -EINVAL;
		}
	}
	if (ferror(f)) {
		snprintf(why, why_size, "%s: read error", path);
		return -EIO;
	}
	return 0;
}

static void print_usage(FILE *out)
{
	fprintf(out,
		"Usage: bangerd [OPTIONS]\n\n"
		"Tracks the host resources of Firecracker microVMs and tears down what\n"
		"they leave behind. See bangerd(8) and bangerd.conf(5).\n\n"
		"  --config FILE             configuration file (default " BANGER_DEFAULT_CONFIG
		" if it exists)\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct policy_flag *f = policy_setting(i);
		char left[64];
		snprintf(left, sizeof(left), "--%s %s", setting_flag(i),
			 f ? f->meta : config_keys[i].meta);
		fprintf(out, "  %-25s %s\n", left, f ? f->help : config_keys[i].help);
	}
	fprintf(out, "  %-25s %s\n  %-25s %s\n", "--help", "show this help", "--version",
		"show the version");
}

enum { OPT_CONFIG = 1000, OPT_HELP, OPT_VERSION };
#define N_OPTIONS (N_SETTINGS + 4)

/* One long option per setting, then --config, --help, --version. */
static void options_build(struct option options[N_OPTIONS])
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		options[i] = (struct option){setting_flag(i), required_argument, NULL, (int)i};
	options[N_SETTINGS + 0] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
	options[N_SETTINGS + 1] = (struct option){"help", no_argument, NULL, OPT_HELP};
	options[N_SETTINGS + 2] = (struct option){"version", no_argument, NULL, OPT_VERSION};
	options[N_SETTINGS + 3] = (struct option){0};
}

/*
 * Pass 1: only --config, --help, --version, and the syntax of everything.
 * Returns 0, 1 when --help/--version was answered, or -EINVAL with why set.
 */
static int scan_args(int argc, char **argv, const struct option *options, const char **config_path,
		     char *why, size_t why_size)
{
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		if (c == OPT_HELP) {
			print_usage(stdout);
			return 1;
		}
		if (c == OPT_VERSION) {
			printf("bangerd %s\n", BANGER_VERSION);
			return 1;
		}
		if (c == OPT_CONFIG)
			*config_path = optarg;
		if (c == '?' || c == ':') {
			snprintf(why, why_size, "unknown option or missing value: %s (see --help)",
				 argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		snprintf(why, why_size, "unexpected argument '%s'", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* Pass 2: flags over the file; a list flag replaces the file's list. */
static int apply_args(struct banger_config *cfg, int argc, char **argv,
		      const struct option *options, char *why, size_t why_size)
{
	bool replaced[N_SETTINGS] = {false};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		if (c < 0 || c >= (int)N_SETTINGS)
			continue;
		if (!replaced[c]) {
			setting_clear(cfg, (size_t)c);
			replaced[c] = true;
		}
		int r = setting_set(cfg, (size_t)c, optarg);
		if (r < 0) {
			snprintf(why, why_size, "--%s '%s': %s", setting_flag((size_t)c), optarg,
				 strerror(-r));
			return -EINVAL;
		}
	}
	return 0;
}

int config_parse_args(struct banger_config *cfg, int argc, char **argv, char *why, size_t why_size)
{
	struct option options[N_OPTIONS];
	const char *config_path = NULL;

	options_build(options);
	int r = scan_args(argc, argv, options, &config_path, why, why_size);
	if (r != 0)
		return r;
	if (config_path || access(BANGER_DEFAULT_CONFIG, F_OK) == 0) {
		r = config_load_file(cfg, config_path ? config_path : BANGER_DEFAULT_CONFIG, why,
				     why_size);
		if (r < 0)
			return r;
	}
	return apply_args(cfg, argc, argv, options, why, why_size);
}

int config_finish(struct banger_config *cfg, char *why, size_t why_size)
{
	const struct varlink_limits *l = &cfg->limits;
	if (l->reserved_admin >= l->max_connections) {
		snprintf(why, why_size,
			 "reserved_admin_connections (%zu) must be below max_connections (%zu)",
			 l->reserved_admin, l->max_connections);
		return -EINVAL;
	}
	if (l->max_output_total < l->max_output_per_conn) {
		snprintf(why, why_size,
			 "max_output_total (%zu) must be at least max_output_per_connection (%zu)",
			 l->max_output_total, l->max_output_per_conn);
		return -EINVAL;
	}
	return policy_finish(&cfg->policy, why, why_size);
}
