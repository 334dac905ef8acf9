/*
 * bangerd's configuration: a strict "key = value" file (DESIGN §1 step 1),
 * then command-line flags over it. Anything unknown or malformed refuses
 * start-up with file:line; nothing is guessed.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>

#include "helper_client.h"
#include "policy.h"
#include "varlink.h"

#define BANGER_DEFAULT_CONFIG	 "/etc/banger/bangerd.conf"
#define BANGER_DEFAULT_STATE_DIR "/var/lib/banger"
#define BANGER_DEFAULT_LISTEN	 "/run/banger/bangerd.sock"
/* firecracker binds its api socket just after it starts: SetHandles gives it this long. */
#define CONFIG_DEFAULT_API_SOCK_WAIT_MS 2000
#define CONFIG_MAX_API_SOCK_WAIT_MS	60000
/*
 * How long the helper may take to answer each operation before it counts as
 * stuck. TEARDOWN's must outlast the helper's own bounded retries (about 1 s
 * per busy DM device, 0.5 s per busy loop, up to 8 of each).
 */
#define CONFIG_DEFAULT_HELPER_HELLO_TIMEOUT_MS	  10000
#define CONFIG_DEFAULT_HELPER_PROBE_TIMEOUT_MS	  2000
#define CONFIG_DEFAULT_HELPER_SCAN_TIMEOUT_MS	  10000
#define CONFIG_DEFAULT_HELPER_TEARDOWN_TIMEOUT_MS 30000
#define CONFIG_MIN_HELPER_TIMEOUT_MS		  100
#define CONFIG_MAX_HELPER_TIMEOUT_MS		  600000

struct banger_config {
	char state_dir[PATH_MAX];
	char listen[PATH_MAX];
	char user[64]; /* empty: stay the user we were started as */
	char helper[PATH_MAX];
	char helper_socket[PATH_MAX]; /* split mode: connect here instead of spawning */
	char audit_log[PATH_MAX];
	char admin_group[64]; /* members may call mutating methods; empty: none */
	int log_level;
	unsigned api_sock_wait_ms;
	unsigned max_vms; /* records bangerd keeps; at most PS_SCAN_MAX_SOCKETS (one SCAN) */
	unsigned helper_timeout_ms[HELPER_N_OPS]; /* per operation: then the helper is stuck */
	struct varlink_limits limits;		  /* what clients may make bangerd hold */
	struct ps_policy policy;
};

void config_init(struct banger_config *cfg);

/* Load one config file. Returns 0 or -errno; why says "file:line: what". */
int config_load_file(struct banger_config *cfg, const char *path, char *why, size_t why_size);

/*
 * Parse argv: --config FILE first (default BANGER_DEFAULT_CONFIG when it
 * exists), then every other flag over it. A list flag given on the command
 * line replaces the file's list. Returns 0, 1 when --help/--version was
 * answered, or -EINVAL with why set.
 */
int config_parse_args(struct banger_config *cfg, int argc, char **argv, char *why, size_t why_size);

/* Final checks once file and flags are merged (policy complete, paths absolute). */
int config_finish(struct banger_config *cfg, char *why, size_t why_size);
