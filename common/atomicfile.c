/*
 * See atomicfile.h. The order of steps is what makes a write atomic and
 * durable: the data must be on disk (fdatasync) before the rename makes it
 * visible, or a crash could leave a complete-looking name over an empty
 * file; the directory must be synced after the rename, or a crash could
 * bring back the old name.
 */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

#define TEMP_NAME_ATTEMPTS 16

static bool name_is_one_component(const char *name)
{
	return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Create ".<name>.tmp.<random>" exclusively; never opens an existing file or follows a link. */
static int create_temp(int dirfd, const char *name, mode_t mode, char *tmp, size_t tmp_size)
{
	for (int attempt = 0; attempt < TEMP_NAME_ATTEMPTS; attempt++) {
		uint64_t rnd;
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
			rnd = ((uint64_t)getpid() << 32) ^ (uint64_t)attempt ^ (uintptr_t)&rnd;
		int n = snprintf(tmp, tmp_size, ".%s.tmp.%012llx", name,
				 (unsigned long long)(rnd & 0xffffffffffffULL));
		if (n < 0 || (size_t)n >= tmp_size)
			return -ENAMETOOLONG;
		int fd =
		    openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return negative_errno();
	}
	return -EEXIST;
}

/* AT_FDCWD stands for ".", which has to be opened for it. */
int atomic_sync_dir(int dirfd)
{
	_cleanup_close_ int cwd = -1;
	if (dirfd == AT_FDCWD) {
		cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cwd < 0)
			return negative_errno();
		dirfd = cwd;
	}
	return fsync(dirfd) < 0 ? negative_errno() : 0;
}

/* Give the temp its exact mode and content (not yet synced). */
static int fill_temp(int fd, mode_t mode, const void *data, size_t len)
{
	/* The umask may have narrowed mode at creation; the caller asked for exactly mode. */
	if (fchmod(fd, mode) < 0)
		return negative_errno();
	return write_all(fd, data, len);
}

int atomic_temp_write(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
		      char *tmp, size_t tmp_size)
{
	if (!name_is_one_component(name))
		return -EINVAL;
	int fd = create_temp(dirfd, name, mode, tmp, tmp_size);
	if (fd < 0)
		return fd;
	int r = fill_temp(fd, mode, data, len);
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		close(fd);
		return r;
	}
	return fd;
}

int atomic_temp_commit(int dirfd, const char *tmp, const char *name)
{
	if (renameat(dirfd, tmp, dirfd, name) == 0)
		return 0;
	int r = negative_errno();
	unlinkat(dirfd, tmp, 0);
	return r;
}

int atomic_write_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode)
{
	char tmp[NAME_MAX + 1];

	_cleanup_close_ int fd = atomic_temp_write(dirfd, name, data, len, mode, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	/* On disk before anyone can see it under name. */
	if (fdatasync(fd) < 0) {
		int r = negative_errno();
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	int r = atomic_temp_commit(dirfd, tmp, name);
	return r < 0 ? r : atomic_sync_dir(dirfd);
}

int read_file_at(int dirfd, const char *name, size_t max_bytes, char **data, size_t *len)
{
	struct stat st;

	if (!name_is_one_component(name))
		return -EINVAL;
	/* O_NONBLOCK: a FIFO planted under the name must not hang us in open(). */
	_cleanup_close_ int fd =
	    openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > max_bytes)
		return -EFBIG;

	/* st_size is a hint only: the file may grow under us, so reading stops at the cap. */
	size_t cap = (size_t)st.st_size + 1;
	size_t used = 0;
	_cleanup_free_ char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (used == cap) {
			if (used > max_bytes)
				return -EFBIG;
			size_t grown = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
			char *p = realloc(buf, grown + 1);
			if (!p)
				return -ENOMEM;
			buf = p;
			cap = grown;
		}
		ssize_t n = read(fd, buf + used, cap - used);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	if (used > max_bytes)
		return -EFBIG;
	buf[used] = '\0';
	*data = TAKE_PTR(buf);
	if (len)
		*len = used;
	return 0;
}
