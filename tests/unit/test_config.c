/* daemon/config.c: strict file parsing with file:line errors; flags over the file. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "testlib.h"

static const char *write_file(const char *text)
{
	static char path[64];
	strcpy(path, "/tmp/banger-test-config-XXXXXX");
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp");
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write");
	close(fd);
	return path;
}

static int load(const char *text, struct banger_config *cfg, char *why, size_t size)
{
	const char *path = write_file(text);
	config_init(cfg);
	int r = config_load_file(cfg, path, why, size);
	unlink(path);
	return r;
}

/*
 * A file that sets every key of the table (comments, blank lines and spaces
 * around '=' in between), each to a value no default has: every value read
 * back proves the key reached its own field, and no other.
 */
static const char every_key[] = "# comment\n"
				"\n"
				"state_dir = /srv/banger\n"
				"listen = /run/banger-test/bangerd.sock\n"
				"user = banger\n"
				"admin_group = banger-admins\n"
				"helper = /opt/banger/banger-privhelper\n"
				"helper_socket = /run/banger-test/privhelper.sock\n"
				"audit_log = /var/log/banger/audit.log\n"
				"log_level = debug\n"
				"api_sock_wait_ms = 1500\n"
				"helper_hello_timeout_ms = 1100\n"
				"helper_probe_timeout_ms = 1200\n"
				"helper_scan_timeout_ms = 1300\n"
				"helper_teardown_timeout_ms = 1400\n"
				"max_vms = 500\n"
				"max_connections = 300\n"
				"reserved_admin_connections = 7\n"
				"max_connections_per_uid = 9\n"
				"idle_timeout_ms = 45000\n"
				"max_output_per_connection = 8192\n"
				"max_output_total = 131072\n"
				"max_input_total = 4194304\n"
				"stall_timeout_ms = 2500\n"
				"tap_prefix=bgt\n"
				"dm_prefix = bangerx-\n"
				"dm_uuid_prefix = BANGERX-\n"
				"loop_root = /a\n"
				"loop_root = /b\n"
				"  api_sock_root = /run/vms  \n"
				"firecracker_name = fc-one\n"
				"firecracker_name = fc-two\n";

/* Whether a line of text, leading blanks aside, sets key ("key =" or "key="). */
static bool sets_key(const char *text, const char *key)
{
	size_t n = strlen(key);
	for (const char *line = text; line;) {
		const char *s = line + strspn(line, " \t");
		if (strncmp(s, key, n) == 0 && s[n + strspn(s + n, " \t")] == '=')
			return true;
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

/*
 * bangerd --help lists a flag for every key of the table: each must be set
 * in every_key, so that a key added to the table is added here too.
 */
static void every_key_is_tested(void)
{
	struct banger_config cfg;
	char why[512], line[256];
	char *help_argv[] = {"bangerd", "--help", NULL};
	FILE *out = tmpfile();
	CHECK(out, "tmpfile");
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	CHECK(saved >= 0 && dup2(fileno(out), STDOUT_FILENO) == STDOUT_FILENO, "redirect stdout");
	config_init(&cfg);
	int r = config_parse_args(&cfg, 2, help_argv, why, sizeof(why));
	fflush(stdout);
	CHECK(dup2(saved, STDOUT_FILENO) == STDOUT_FILENO, "restore stdout");
	close(saved);
	CHECK(r == 1, "--help answered: %d", r);
	rewind(out);
	int keys = 0;
	while (fgets(line, sizeof(line), out)) {
		char flag[64];
		if (sscanf(line, " --%63[a-z_-] ", flag) != 1 || strcmp(flag, "config") == 0 ||
		    strcmp(flag, "help") == 0 || strcmp(flag, "version") == 0)
			continue;
		for (char *c = flag; *c; c++)
			if (*c == '-')
				*c = '_';
		CHECK(sets_key(every_key, flag),
		      "the key %s (from --help) is not set in this test's file", flag);
		keys++;
	}
	fclose(out);
	CHECK(keys == 28, "--help names %d keys; this test knows 28", keys);
}

static void every_key_read(void)
{
	struct banger_config cfg;
	char why[512];
	const struct varlink_limits *l = &cfg.limits;
	const struct ps_policy *p = &cfg.policy;

	CHECK(load(every_key, &cfg, why, sizeof(why)) == 0, "valid file: %s", why);
	CHECK(strcmp(cfg.state_dir, "/srv/banger") == 0, "state_dir %s", cfg.state_dir);
	CHECK(strcmp(cfg.listen, "/run/banger-test/bangerd.sock") == 0, "listen %s", cfg.listen);
	CHECK(strcmp(cfg.user, "banger") == 0, "user %s", cfg.user);
	CHECK(strcmp(cfg.admin_group, "banger-admins") == 0, "admin_group %s", cfg.admin_group);
	CHECK(strcmp(cfg.helper, "/opt/banger/banger-privhelper") == 0, "helper %s", cfg.helper);
	CHECK(strcmp(cfg.helper_socket, "/run/banger-test/privhelper.sock") == 0,
	      "helper_socket %s", cfg.helper_socket);
	CHECK(strcmp(cfg.audit_log, "/var/log/banger/audit.log") == 0, "audit_log %s",
	      cfg.audit_log);
	CHECK(cfg.log_level == LOG_LEVEL_DEBUG, "log_level %d", cfg.log_level);
	CHECK(cfg.api_sock_wait_ms == 1500, "api_sock_wait_ms %u", cfg.api_sock_wait_ms);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_HELLO] == 1100, "helper_hello_timeout_ms %u",
	      cfg.helper_timeout_ms[HELPER_OP_HELLO]);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_PROBE] == 1200, "helper_probe_timeout_ms %u",
	      cfg.helper_timeout_ms[HELPER_OP_PROBE]);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_SCAN] == 1300, "helper_scan_timeout_ms %u",
	      cfg.helper_timeout_ms[HELPER_OP_SCAN]);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_TEARDOWN] == 1400, "helper_teardown_timeout_ms %u",
	      cfg.helper_timeout_ms[HELPER_OP_TEARDOWN]);
	CHECK(cfg.max_vms == 500, "max_vms %u", cfg.max_vms);
	CHECK(l->max_connections == 300, "max_connections %zu", l->max_connections);
	CHECK(l->reserved_admin == 7, "reserved_admin_connections %zu", l->reserved_admin);
	CHECK(l->max_per_uid == 9, "max_connections_per_uid %zu", l->max_per_uid);
	CHECK(l->idle_timeout_ms == 45000, "idle_timeout_ms %u", l->idle_timeout_ms);
	CHECK(l->max_output_per_conn == 8192, "max_output_per_connection %zu",
	      l->max_output_per_conn);
	CHECK(l->max_output_total == 131072, "max_output_total %zu", l->max_output_total);
	CHECK(l->max_input_total == 4194304, "max_input_total %zu", l->max_input_total);
	CHECK(l->stall_timeout_ms == 2500, "stall_timeout_ms %u", l->stall_timeout_ms);
	CHECK(strcmp(p->tap_prefix, "bgt") == 0, "tap_prefix %s", p->tap_prefix);
	CHECK(strcmp(p->dm_prefix, "bangerx-") == 0, "dm_prefix %s", p->dm_prefix);
	CHECK(strcmp(p->dm_uuid_prefix, "BANGERX-") == 0, "dm_uuid_prefix %s", p->dm_uuid_prefix);
	CHECK(p->n_loop_roots == 2 && strcmp(p->loop_roots[0], "/a") == 0 &&
		  strcmp(p->loop_roots[1], "/b") == 0,
	      "loop_root: %u roots", p->n_loop_roots);
	CHECK(p->n_api_sock_roots == 1 && strcmp(p->api_sock_roots[0], "/run/vms") == 0,
	      "api_sock_root: %u roots, the first '%s'", p->n_api_sock_roots, p->api_sock_roots[0]);
	CHECK(p->n_firecracker_names == 2 && strcmp(p->firecracker_names[0], "fc-one") == 0 &&
		  strcmp(p->firecracker_names[1], "fc-two") == 0,
	      "firecracker_name: %u names", p->n_firecracker_names);
	CHECK(config_finish(&cfg, why, sizeof(why)) == 0, "complete: %s", why);
	CHECK(p->n_firecracker_names == 2, "names from the file keep the default out");
}

int main(void)
{
	struct banger_config cfg;
	char why[512];

	every_key_is_tested();
	every_key_read();

	CHECK(load("state_dir = /a\nbogus = 1\n", &cfg, why, sizeof(why)) < 0 &&
		  strstr(why, ":2: unknown key 'bogus'"),
	      "unknown key names file:line: %s", why);
	CHECK(load("state_dir = relative\n", &cfg, why, sizeof(why)) < 0 &&
		  strstr(why, ":1: bad value for state_dir"),
	      "bad value: %s", why);
	CHECK(load("just words\n", &cfg, why, sizeof(why)) < 0 && strstr(why, ":1: expected"),
	      "no '=': %s", why);
	CHECK(load("log_level = loud\n", &cfg, why, sizeof(why)) < 0, "bad level");
	CHECK(load("loop_root = /x/../y\n", &cfg, why, sizeof(why)) < 0, "abnormal root");

	/* Flags override the file; a list flag replaces the file's list. */
	const char *path = write_file("loop_root = /from-file\ntap_prefix = bgf\n");
	char *argv[] = {"bangerd",    "--config",     (char *)path, "--loop-root",
			"/from-flag", "--tap-prefix", "bgx",	    NULL};
	config_init(&cfg);
	CHECK(config_parse_args(&cfg, 7, argv, why, sizeof(why)) == 0, "args: %s", why);
	unlink(path);
	CHECK(cfg.policy.n_loop_roots == 1 && strcmp(cfg.policy.loop_roots[0], "/from-flag") == 0,
	      "list replaced");
	CHECK(strcmp(cfg.policy.tap_prefix, "bgx") == 0, "flag wins");

	/* The helper's deadlines: defaults, the file's keys, flags over them, bounds. */
	config_init(&cfg);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_HELLO] == 10000 &&
		  cfg.helper_timeout_ms[HELPER_OP_PROBE] == 2000 &&
		  cfg.helper_timeout_ms[HELPER_OP_SCAN] == 10000 &&
		  cfg.helper_timeout_ms[HELPER_OP_TEARDOWN] == 30000,
	      "deadline defaults");
	path = write_file("helper_probe_timeout_ms = 750\nhelper_teardown_timeout_ms = 45000\n");
	char *deadlines[] = {"bangerd", "--config", (char *)path, "--helper-probe-timeout-ms",
			     "500",	NULL};
	config_init(&cfg);
	CHECK(config_parse_args(&cfg, 5, deadlines, why, sizeof(why)) == 0, "deadlines: %s", why);
	unlink(path);
	CHECK(cfg.helper_timeout_ms[HELPER_OP_PROBE] == 500 &&
		  cfg.helper_timeout_ms[HELPER_OP_TEARDOWN] == 45000 &&
		  cfg.helper_timeout_ms[HELPER_OP_SCAN] == 10000,
	      "deadline flag over file");
	CHECK(load("helper_scan_timeout_ms = 99\n", &cfg, why, sizeof(why)) < 0 &&
		  strstr(why, ":1: bad value for helper_scan_timeout_ms"),
	      "deadline below 100 ms: %s", why);
	CHECK(load("helper_hello_timeout_ms = 600001\n", &cfg, why, sizeof(why)) < 0,
	      "deadline above 600000 ms");

	char *bad[] = {"bangerd", "--no-such-flag", NULL};
	config_init(&cfg);
	CHECK(config_parse_args(&cfg, 2, bad, why, sizeof(why)) < 0 &&
		  strstr(why, "unknown option"),
	      "unknown flag: %s", why);
	char *missing[] = {"bangerd", "--config", "/nonexistent/banger.conf", NULL};
	config_init(&cfg);
	CHECK(config_parse_args(&cfg, 3, missing, why, sizeof(why)) < 0 &&
		  strstr(why, "/nonexistent"),
	      "missing config file: %s", why);
	return 0;
}
