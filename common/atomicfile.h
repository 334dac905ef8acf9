/*
 * Whole-file I/O relative to a directory fd: a writer that leaves either
 * the old file or the new one, never a torn mix (DESIGN §2), and a reader
 * that refuses symlinks and caps what it loads. Names are single path
 * components ("vm.json"), so no path walk can be redirected.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * Write data to dirfd/name atomically: a temp file in the same dir (O_EXCL,
 * mode), write all, fdatasync, renameat over name, fsync(dirfd). On any
 * failure the temp is unlinked and name is untouched. Returns 0 or -errno
 * (-EINVAL for a name that is not a single component). An error from the
 * final fsync(dirfd) is returned although the rename has happened: the new
 * content is in place but not yet known to be durable.
 */
int atomic_write_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode);

/*
 * Read all of dirfd/name (O_NOFOLLOW) into a malloc'ed NUL-terminated
 * buffer. -ENOENT if missing, -EFBIG over max_bytes, -ELOOP for a symlink,
 * -EISDIR for a directory, -EINVAL for another non-regular file.
 */
int read_file_at(int dirfd, const char *name, size_t max_bytes, char **data, size_t *len);
