/*
 * See beneath.h. glibc 2.36 has no openat2() wrapper, so this calls the
 * system call; the kernel has had it, with all three resolve flags, since
 * 5.6. Where a seccomp filter hides it, the same walk is done by hand.
 */
#include "beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "path.h"

/*
 * One component, opened from dirfd without following it. O_PATH |
 * O_NOFOLLOW opens a symlink itself rather than failing, so the type is
 * checked on the fd: a symlink is -ELOOP, as openat2 would say.
 */
static int open_component(int dirfd, const char *name, int flags, bool last)
{
	struct stat st;

	_cleanup_close_ int fd =
	    openat(dirfd, name, (last ? flags : O_PATH) | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	if (!last && !S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return TAKE_FD(fd);
}

/*
 * The walk by hand: each component from the fd of the one before, none
 * followed. A normal path has no "." or "..", so nothing climbs out.
 * Unlike the kernel's walk it makes no final check that the result is
 * still below the root: if a directory on the way is moved out meanwhile,
 * the file found is the one that directory held, reached from the root.
 */
static int walk_beneath(int rootfd, const char *relative, int flags)
{
	_cleanup_close_ int dirfd = -1;
	char name[NAME_MAX + 1];

	for (const char *p = relative;;) {
		size_t len = strcspn(p, "/");
		if (len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, p, len);
		name[len] = '\0';
		bool last = p[len] == '\0';
		int fd = open_component(dirfd >= 0 ? dirfd : rootfd, name, flags, last);
		if (fd < 0 || last)
			return fd;
		safe_close(dirfd);
		dirfd = fd;
		p += len + 1;
	}
}

int open_beneath(const char *root, const char *path, int flags)
{
	struct open_how how = {
	    .flags = (unsigned)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};

	if (!path_is_under(path, root) || strcmp(path, root) == 0 || (flags & O_CREAT))
		return -EINVAL;
	/* Normal spellings: what follows root is "/rest", or "rest" when root is "/". */
	const char *relative = path + strlen(root);
	if (*relative == '/')
		relative++;
	_cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return negative_errno();
	int fd = (int)syscall(SYS_openat2, rootfd, relative, &how, sizeof(how));
	if (fd >= 0)
		return fd;
	/*
	 * systemd's RestrictSUIDSGID= (set in banger-privhelper@.service)
	 * blocks openat2 outright, since a filter cannot see the mode inside
	 * struct open_how: ENOSYS in systemd 252, EPERM in older releases.
	 * Falling back on either is safe: the walk is as strict, and an EPERM
	 * that is not the filter's (an LSM's) meets the walk again.
	 */
	if (errno == ENOSYS || errno == EPERM)
		return walk_beneath(rootfd, relative, flags);
	return negative_errno();
}
