/* daemon/config.c: strict file parsing with file:line errors; flags over the file. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
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

int main(void)
{
	struct banger_config cfg;
	char why[512];

	CHECK(load("# comment\n\nstate_dir = /srv/banger\ntap_prefix=bgt\n"
		   "loop_root = /a\nloop_root = /b\n  api_sock_root = /run/vms  \n"
		   "dm_prefix = banger-\ndm_uuid_prefix = BANGER-\nuser = banger\n",
		   &cfg, why, sizeof(why)) == 0,
	      "valid file: %s", why);
	CHECK(strcmp(cfg.state_dir, "/srv/banger") == 0 && cfg.policy.n_loop_roots == 2 &&
		  strcmp(cfg.policy.api_sock_roots[0], "/run/vms") == 0,
	      "values read");
	CHECK(config_finish(&cfg, why, sizeof(why)) == 0, "complete: %s", why);

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
