/*
 * Open a path only as it lies beneath a root, as the host sees it: no
 * symlink, no magic link (/proc/PID/root...), no ".." may lead out. The
 * helper uses it wherever a path from a request or from the kernel must be
 * tied to a file under a policy root by the file's identity (st_dev,
 * st_ino), not by how its name is spelled.
 */
#pragma once

/*
 * path must be root itself's descendant in normal spelling (path.h).
 * Returns an fd opened with flags | O_CLOEXEC, or -errno: -EXDEV when path
 * is not under root, -ELOOP when a component is a symlink, -ENOENT...
 */
int open_beneath(const char *root, const char *path, int flags);
/* The same with root already open (O_PATH|O_DIRECTORY), for many paths under one root; -1: not. */
int open_beneath_at(int rootfd, const char *root, const char *path, int flags);

/* The same without openat2 (the fallback on ENOSYS), one component at a time: for tests. */
int open_beneath_walk(const char *root, const char *path, int flags);
