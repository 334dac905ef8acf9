/*
 * Step 4 of bangerd's start-up (DESIGN §1): become the daemon user for
 * good. Started as root, every failure here is fatal; the result is read
 * back from the kernel and checked, including that root cannot be regained.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Look up user: uid/gid, refusing root. Returns 0 or -errno with why set. */
int privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, char *why, size_t why_size);

/* Drop to uid/gid: no capabilities, empty bounding set, no supplementary groups, no_new_privs. */
int privdrop_to(uid_t uid, gid_t gid, char *why, size_t why_size);

/* Not root: nothing to drop, but still no_new_privs and no capabilities. */
int privdrop_unprivileged(char *why, size_t why_size);
