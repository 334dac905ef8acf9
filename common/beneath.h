/*
 * Opening a path only as it lies beneath a trusted directory. A path
 * string that is "under a root" by prefix says nothing about where it leads
 * in this mount namespace: a symlink or a mount on the way can take it
 * anywhere. open_beneath() has the kernel walk it from the root itself
 * (openat2 with RESOLVE_BENEATH; where a seccomp filter hides openat2, one
 * component at a time) and refuse every symlink on the way, so the fd it
 * returns is a file that this process reaches from the root by exactly
 * that name. It never follows a symlink below the root, never creates
 * anything.
 */
#pragma once

/*
 * Open path, which must lie strictly below root (both in their normal
 * spelling, see path.h), walking from root with no symlinks and no escape.
 * root itself is opened as given (it is configuration, not a request).
 * flags are open(2) flags, O_CLOEXEC is added; no O_CREAT. Returns an fd,
 * -EINVAL when path is not below root, or the -errno of the walk: -ENOENT,
 * -ELOOP (a symlink on the way, the last component included), -ENOTDIR,
 * -EXDEV (an escape), -EACCES, ...
 */
int open_beneath(const char *root, const char *path, int flags);
