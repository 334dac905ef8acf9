/*
 * bangerd's state directory (DESIGN §2). This file owns every path below
 * the state dir; nothing else in the daemon builds one.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * Create the state dir if needed and make it owned by uid:gid, mode 0700.
 * Refuses a symlink, a non-directory, or (when not root) a dir owned by
 * someone else. Returns 0 or -errno with why set.
 */
int store_prepare_dir(const char *dir, uid_t uid, gid_t gid, char *why, size_t why_size);
