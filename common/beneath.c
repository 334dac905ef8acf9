/*
 * See beneath.h. openat2(2) with RESOLVE_BENEATH does the walk in the
 * kernel, so nothing can be swapped between our checks and the open. glibc
 * 2.36 has no wrapper: the raw system call. Where it is refused (ENOSYS: a
 * kernel before 5.6, or systemd's seccomp filter, which blocks openat2
 * under RestrictSUIDSGID= because it cannot read the mode in struct
 * open_how; EPERM from older systemd) the same
 * walk is done one component at a time, each opened O_NOFOLLOW from the
 * fd of the one before: the path is in normal spelling, so there is no
 * "." or ".." to resolve and a symlink anywhere fails the walk.
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

static bool is_symlink_at(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

static int walk_beneath(int dirfd, const char *rel, int flags)
{
	char component[NAME_MAX + 1];
	_cleanup_close_ int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0)
		return negative_errno();
	for (const char *p = rel;;) {
		size_t len = strcspn(p, "/");
		if (len == 0 || len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(component, p, len);
		component[len] = '\0';
		bool last = p[len] == '\0';
		int next = openat(cur, component,
				  last ? flags | O_CLOEXEC | O_NOFOLLOW
				       : O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (next < 0)
			/* O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; say what it is. */
			return errno == ENOTDIR && !last && is_symlink_at(cur, component)
				   ? -ELOOP
				   : negative_errno();
		safe_close(cur);
		cur = next;
		if (last)
			break;
		p += len + 1;
	}
	struct stat st;
	/* O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing. */
	if (fstat(cur, &st) < 0)
		return negative_errno();
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	return TAKE_FD(cur);
}

/*
 * Open path beneath root (rootfd: root already open, or -1 to open it
 * here), with openat2 or, when that is refused or walk is set, by hand.
 */
static int beneath(int rootfd, const char *root, const char *path, int flags, bool walk)
{
	_cleanup_close_ int own = -1;

	if (!path_is_under(path, root) || strcmp(path, root) == 0)
		return -EXDEV;
	const char *rel = path + strlen(root) + (strcmp(root, "/") == 0 ? 0 : 1);
	if (rootfd < 0) {
		rootfd = own = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rootfd < 0)
			return negative_errno();
	}
	struct open_how how = {
	    .flags = (unsigned)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	if (!walk) {
		int fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
		/* Refused: ENOSYS from systemd 252's filter (RestrictSUIDSGID= cannot read
		 * open_how), EPERM from older ones. Then the same walk, by hand. */
		if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
			return fd >= 0 ? fd : negative_errno();
	}
	return walk_beneath(rootfd, rel, flags);
}

int open_beneath_at(int rootfd, const char *root, const char *path, int flags)
{
	return beneath(rootfd, root, path, flags, false);
}

int open_beneath(const char *root, const char *path, int flags)
{
	return beneath(-1, root, path, flags, false);
}

int open_beneath_walk(const char *root, const char *path, int flags)
{
	return beneath(-1, root, path, flags, true);
}
