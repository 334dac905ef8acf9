/* See store.h. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

int store_prepare_dir(const char *dir, uid_t uid, gid_t gid, char *why, size_t why_size)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: %s", dir, strerror(-r));
		return r;
	}
	/* O_NOFOLLOW on the last component: the dir itself must not be a symlink. */
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: %s", dir,
			 r == -ELOOP ? "is a symlink" : strerror(-r));
		return r;
	}
	if (geteuid() == 0) {
		if (fchown(fd, uid, gid) < 0) {
			int r = negative_errno();
			snprintf(why, why_size, "state dir %s: chown: %s", dir, strerror(-r));
			return r;
		}
	} else if (st.st_uid != uid) {
		snprintf(why, why_size, "state dir %s is owned by uid %u, not by us (%u)", dir,
			 st.st_uid, uid);
		return -EPERM;
	}
	if (fchmod(fd, 0700) < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: chmod: %s", dir, strerror(-r));
		return r;
	}
	return 0;
}
