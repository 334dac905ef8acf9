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
COUNT_SETTER(set_max_connections, limits.max_connections, 1, 1000000)
COUNT_SETTER(set_reserved_admin, limits.reserved_admin, 1, 1000000)
COUNT_SETTER(set_max_per_uid, limits.max_per_uid, 1, 1000000)
COUNT_SETTER(set_idle_timeout_ms, limits.idle_timeout_ms, 0, 86400000)
COUNT_SETTER(set_max_output_per_conn, limits.max_output_per_conn, 4096, 1ull << 30)
COUNT_SETTER(set_max_output_total, limits.max_output_total, 65536, 1ull << 34)
COUNT_SETTER(set_stall_timeout_ms, limits.stall_timeout_ms, 1, 3600000)
COUNT_SETTER(set_max_input_total, limits.max_input_total, 2 * VARLINK_MAX_MESSAGE_BYTES, 1ull << 34)

static int set_tap_prefix(struct banger_config *c, const char *v)
{
	return policy_set_tap_prefix(&c->policy, v);
}

static int set_dm_prefix(struct banger_config *c, const char *v)
{
	return policy_set_dm_prefix(&c->policy, v);
}

static int set_dm_uuid_prefix(struct banger_config *c, const char *v)
{
	return policy_set_dm_uuid_prefix(&c->policy, v);
}

static int add_loop_root(struct banger_config *c, const char *v)
{
	return policy_add_loop_root(&c->policy, v);
}

static int add_api_sock_root(struct banger_config *c, const char *v)
{
	return policy_add_api_sock_root(&c->policy, v);
}

static int add_firecracker_name(struct banger_config *c, const char *v)
{
	return policy_add_firecracker_name(&c->policy, v);
}

static void clear_loop_roots(struct banger_config *c)
{
	memset(c->policy.loop_roots, 0, sizeof(c->policy.loop_roots));
	c->policy.n_loop_roots = 0;
}

static void clear_api_sock_roots(struct banger_config *c)
{
	memset(c->policy.api_sock_roots, 0, sizeof(c->policy.api_sock_roots));
	c->policy.n_api_sock_roots = 0;
}

static void clear_firecracker_names(struct banger_config *c)
{
	memset(c->policy.firecracker_names, 0, sizeof(c->policy.firecracker_names));
	c->policy.n_firecracker_names = 0;
}

struct config_key {
	const char *key; /* in the file; the flag is the same with '-' for '_' */
	const char *flag;
	config_setter set;
	void (*clear)(
	    struct banger_config *c); /* list keys: the command line replaces the file's list */
	const char *meta;
	const char *help;
};

static const struct config_key config_keys[] = {
    {"state_dir", "state-dir", set_state_dir, NULL, "DIR", "state directory"},
    {"listen", "listen", set_listen, NULL, "PATH", "control socket (when not socket-activated)"},
    {"user", "user", set_user, NULL, "NAME", "user to run as after start-up"},
    {"admin_group", "admin-group", set_admin_group, NULL, "GROUP",
     "members may call mutating methods"},
    {"helper", "helper", set_helper, NULL, "PATH", "banger-privhelper executable"},
    {"helper_socket", "helper-socket", set_helper_socket, NULL, "PATH",
     "split mode: the helper\'s socket (no spawn)"},
    {"audit_log", "audit-log", set_audit_log, NULL, "FILE", "helper's audit log file"},
    {"log_level", "log-level", set_log_level, NULL, "LEVEL", "error|warning|notice|info|debug"},
    {"api_sock_wait_ms", "api-sock-wait-ms", set_api_sock_wait_ms, NULL, "MS",
     "how long SetHandles waits for firecracker to listen on its api socket"},
    {"helper_hello_timeout_ms", "helper-hello-timeout-ms", set_helper_hello_timeout_ms, NULL, "MS",
     "the helper must answer HELLO within this, or it is stuck"},
    {"helper_probe_timeout_ms", "helper-probe-timeout-ms", set_helper_probe_timeout_ms, NULL, "MS",
     "the helper must answer PROBE (SetHandles) within this"},
    {"helper_scan_timeout_ms", "helper-scan-timeout-ms", set_helper_scan_timeout_ms, NULL, "MS",
     "the helper must answer SCAN (reconcile) within this"},
    {"helper_teardown_timeout_ms", "helper-teardown-timeout-ms", set_helper_teardown_timeout_ms,
     NULL, "MS", "the helper must answer TEARDOWN within this"},
    {"max_connections", "max-connections", set_max_connections, NULL, "N",
     "client connections in all"},
    {"reserved_admin_connections", "reserved-admin-connections", set_reserved_admin, NULL, "N",
     "of those, kept for admins (root, the daemon user, the admin group)"},
    {"max_connections_per_uid", "max-connections-per-uid", set_max_per_uid, NULL, "N",
     "connections of each non-admin uid"},
    {"idle_timeout_ms", "idle-timeout-ms", set_idle_timeout_ms, NULL, "MS",
     "close a connection with no call in flight after this (0: never)"},
    {"max_output_per_connection", "max-output-per-connection", set_max_output_per_conn, NULL,
     "BYTES", "unread replies past this: stop reading that client"},
    {"max_output_total", "max-output-total", set_max_output_total, NULL, "BYTES",
     "all clients' unread replies past this: drop the one adding"},
    {"max_input_total", "max-input-total", set_max_input_total, NULL, "BYTES",
     "readers' unparsed input past this: drop the reader adding"},
    {"stall_timeout_ms", "stall-timeout-ms", set_stall_timeout_ms, NULL, "MS",
     "drop a stopped client that still does not read after this"},
    {"tap_prefix", "tap-prefix", set_tap_prefix, NULL, "PREFIX", "tap devices banger may delete"},
    {"dm_prefix", "dm-prefix", set_dm_prefix, NULL, "PREFIX", "DM names banger may remove"},
    {"dm_uuid_prefix", "dm-uuid-prefix", set_dm_uuid_prefix, NULL, "PREFIX",
     "DM uuids banger may remove"},
    {"loop_root", "loop-root", add_loop_root, clear_loop_roots, "DIR",
     "loop backing files must lie below (repeatable)"},
    {"api_sock_root", "api-sock-root", add_api_sock_root, clear_api_sock_roots, "DIR",
     "firecracker api sockets must lie below (repeatable)"},
    {"firecracker_name", "firecracker-name", add_firecracker_name, clear_firecracker_names, "NAME",
     "executable names that count as firecracker (repeatable)"},
};

void config_init(struct banger_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	field_set(cfg->state_dir, sizeof(cfg->state_dir), BANGER_DEFAULT_STATE_DIR);
	field_set(cfg->listen, sizeof(cfg->listen), BANGER_DEFAULT_LISTEN);
	field_set(cfg->helper, sizeof(cfg->helper), BANGER_LIBEXECDIR "/banger-privhelper");
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->api_sock_wait_ms = CONFIG_DEFAULT_API_SOCK_WAIT_MS;
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

static const struct config_key *key_by_name(const char *key)
{
	for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
		if (strcmp(config_keys[i].key, key) == 0)
			return &config_keys[i];
	return NULL;
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
		const struct config_key *k = key_by_name(key);
		if (!k) {
			snprintf(why, why_size, "%s:%u: unknown key '%s'", path, lineno, key);
			return -EINVAL;
		}
		int r = k->set(cfg, value);
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
	for (size_t i = 0; i < ELEMENTSOF(config_keys); i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s %s", config_keys[i].flag, config_keys[i].meta);
		fprintf(out, "  %-25s %s\n", left, config_keys[i].help);
	}
	fprintf(out, "  %-25s %s\n  %-25s %s\n", "--help", "show this help", "--version",
		"show the version");
}

int config_parse_args(struct banger_config *cfg, int argc, char **argv, char *why, size_t why_size)
{
	enum { OPT_CONFIG = 1000, OPT_HELP, OPT_VERSION };
	struct option options[ELEMENTSOF(config_keys) + 4];
	bool replaced[ELEMENTSOF(config_keys)] = {false};
	const char *config_path = NULL;
	int c, r;

	for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
		options[i] = (struct option){config_keys[i].flag, required_argument, NULL, (int)i};
	options[ELEMENTSOF(config_keys) + 0] =
	    (struct option){"config", required_argument, NULL, OPT_CONFIG};
	options[ELEMENTSOF(config_keys) + 1] = (struct option){"help", no_argument, NULL, OPT_HELP};
	options[ELEMENTSOF(config_keys) + 2] =
	    (struct option){"version", no_argument, NULL, OPT_VERSION};
	options[ELEMENTSOF(config_keys) + 3] = (struct option){0};

	/* Pass 1: only --config, --help, --version, and the syntax of everything. */
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
			config_path = optarg;
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
	if (config_path || access(BANGER_DEFAULT_CONFIG, F_OK) == 0) {
		r = config_load_file(cfg, config_path ? config_path : BANGER_DEFAULT_CONFIG, why,
				     why_size);
		if (r < 0)
			return r;
	}

	/* Pass 2: flags over the file. */
	optind = 1;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		if (c < 0 || c >= (int)ELEMENTSOF(config_keys))
			continue;
		const struct config_key *k = &config_keys[c];
		if (k->clear && !replaced[c]) {
			k->clear(cfg);
			replaced[c] = true;
		}
		r = k->set(cfg, optarg);
		if (r < 0) {
			snprintf(why, why_size, "--%s '%s': %s", k->flag, optarg, strerror(-r));
			return -EINVAL;
		}
	}
	return 0;
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
