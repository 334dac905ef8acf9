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
 * atomic_write_at in its steps, for a caller that makes many files durable
 * with one sync (group commit, daemon/store_writer.c). The caller keeps the
 * order: temp written, temp synced (fdatasync, or syncfs of the whole
 * filesystem), atomic_temp_commit, atomic_sync_dir.
 *
 * atomic_temp_write: create ".<name>.tmp.<random>" in dirfd (O_EXCL, mode
 * exactly) and write data; returns the open fd (not synced) and the temp's
 * name in tmp, or -errno with nothing left behind.
 */
int atomic_temp_write(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
		      char *tmp, size_t tmp_size);
/* Rename tmp over name; on failure the temp is unlinked. 0 or -errno. */
int atomic_temp_commit(int dirfd, const char *tmp, const char *name);
/* fsync a directory (AT_FDCWD: "."). 0 or -errno. */
int atomic_sync_dir(int dirfd);

/*
 * Read all of dirfd/name (O_NOFOLLOW) into a malloc'ed NUL-terminated
 * buffer. -ENOENT if missing, -EFBIG over max_bytes, -ELOOP for a symlink,
 * -EISDIR for a directory, -EINVAL for another non-regular file.
 */
int read_file_at(int dirfd, const char *name, size_t max_bytes, char **data, size_t *len);
