/*
 * The helper's policy (DESIGN §4): what it may probe, scan and tear down.
 * bangerd builds one from its configuration and hands it to the helper as
 * command-line flags; the helper parses it back, fixes it for its lifetime,
 * and echoes it in HELLO so bangerd can check the two agree. The checks
 * here are pure string tests; the helper feeds them facts read from the
 * kernel, never names taken on trust.
 */
#pragma once

#include <stdbool.h>

#include "privsep.h"

#define POLICY_DEFAULT_FIRECRACKER_NAME "firecracker"

void policy_init(struct ps_policy *p);

/*
 * The policy's settings, one row each: the helper parses its command line
 * with this table, bangerd's configuration takes the same settings from
 * its file (key: the flag with '_' for '-') and its own flags, and bangerd
 * builds the helper's command line from it. A list setting (repeatable
 * flag) keeps entry_size-byte entries at offset and their count at
 * count_offset; a single one is one string field.
 */
enum policy_kind {
	POLICY_PREFIX, /* printable, no '/', not empty */
	POLICY_ROOT,   /* a directory in normal spelling, not "/" */
	POLICY_NAME,   /* an executable name: not empty, no '/' */
};

struct policy_flag {
	const char *flag; /* "--tap-prefix" */
	const char *meta;
	const char *help;
	enum policy_kind kind;
	size_t offset, size;
	size_t entry_size, count_offset; /* lists only; entry_size 0 for a single value */
};

/* The rows of policy_flags[], in this order. */
enum {
	POLICY_FLAG_TAP_PREFIX,
	POLICY_FLAG_DM_PREFIX,
	POLICY_FLAG_DM_UUID_PREFIX,
	POLICY_FLAG_LOOP_ROOT,
	POLICY_FLAG_API_SOCK_ROOT,
	POLICY_FLAG_FIRECRACKER_NAME,
	POLICY_N_FLAGS
};
extern const struct policy_flag policy_flags[POLICY_N_FLAGS];

/* Set a single setting, or add one entry to a list: 0 or -EINVAL/-ENAMETOOLONG/-E2BIG. */
int policy_flag_set(const struct policy_flag *f, struct ps_policy *p, const char *value);
/* Fill in defaults (firecracker name) and check that every required field is set. */
int policy_finish(struct ps_policy *p, char *why, size_t why_size);

/* bangerd's side (policy_args.c): policy_flag_set() by name, for its code and tests. */
int policy_set_tap_prefix(struct ps_policy *p, const char *prefix);
int policy_set_dm_prefix(struct ps_policy *p, const char *prefix);
int policy_set_dm_uuid_prefix(struct ps_policy *p, const char *prefix);
int policy_add_loop_root(struct ps_policy *p, const char *root);
int policy_add_api_sock_root(struct ps_policy *p, const char *root);
int policy_add_firecracker_name(struct ps_policy *p, const char *name);

bool policy_equal(const struct ps_policy *a, const struct ps_policy *b);

/* Empty a list setting (the command line replaces the file's list); a single one is left. */
void policy_flag_clear(const struct policy_flag *f, struct ps_policy *p);
/* Does a configuration key ("loop_root") name this setting? */
bool policy_flag_is_key(const struct policy_flag *f, const char *key);

/* Helper command-line flags for this policy: a NULL-terminated vector of static storage in p. */
size_t policy_to_args(const struct ps_policy *p, const char **argv, size_t max);
#define POLICY_MAX_ARGS (2 * (3 + 2 * PS_POLICY_MAX_ROOTS + PS_POLICY_MAX_NAMES))

bool policy_api_sock_allowed(const struct ps_policy *p, const char *path);
/* The root path lies under (the first that fits), or NULL: to open it beneath that root. */
const char *policy_api_sock_root(const struct ps_policy *p, const char *path);
const char *policy_loop_root(const struct ps_policy *p, const char *path);
bool policy_loop_file_allowed(const struct ps_policy *p, const char *path);
bool policy_firecracker_name_allowed(const struct ps_policy *p, const char *exe_basename);
bool policy_tap_name_allowed(const struct ps_policy *p, const char *ifname);
bool policy_dm_name_allowed(const struct ps_policy *p, const char *name);
bool policy_dm_uuid_allowed(const struct ps_policy *p, const char *uuid);
