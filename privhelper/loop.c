/*
 * Loop teardown with the loop ioctls on the opened device. A request names
 * a loop as /dev/loopN (exactly that spelling) or, when its number was
 * never reported, by its backing file; either way the helper detaches a
 * loop only when the file the kernel names as its backing file, opened
 * beneath a loop root, is the loop's own file (or the kernel says that
 * file was deleted), and it checks and clears through one fd, so that
 * what it verified is what it detaches, then confirms the detach happened.
 * Never detaches a loop outside the roots, never opens a path a request
 * names other than /dev/loopN (a backing file is opened O_PATH, and only
 * by the name the kernel gives).
 *
 * A loop number is reused as soon as it is free, so a stale record's
 * /dev/loopN may be another VM's loop now, on a file under the roots too.
 * When the request carries the diskseq bangerd recorded for the loop, the
 * device's own (BLKGETDISKSEQ, read through the fd that will detach it:
 * while we hold it open nobody can re-attach the loop) must be that one;
 * any other means the attach we were asked about is gone, and the loop is
 * reported absent and left alone. Without a diskseq (records of an older
 * bangerd) the backing-file checks alone decide, as before.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/major.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "beneath.h"
#include "log.h"
#include "macro.h"
#include "path.h"
#include "policy.h"
#include "procfs.h"
#include "teardown.h"

#define LOOP_DEV_PREFIX	      "/dev/loop"
#define LOOP_INDEX_MAX_DIGITS 7 /* the loop driver has at most 1 << 20 minors */

/*
 * A detach the kernel defers because someone else has the device open
 * (losetup -a, blkid, a udev probe: usually for a moment) completes on
 * their last close. Bound: LOOP_DETACH_CHECKS looks, LOOP_DETACH_CHECK_DELAY_MS
 * apart, so about 0.5 s per loop before it is reported busy; the kernel
 * still detaches it (autoclear) once the last holder lets go.
 */
#define LOOP_DETACH_CHECKS	   10
#define LOOP_DETACH_CHECK_DELAY_MS 50

/* N of a decimal index in its one spelling (no sign, no leading zero); false otherwise. */
static bool parse_index(const char *digits, unsigned *n)
{
	size_t len = strspn(digits, "0123456789");
	if (len == 0 || len > LOOP_INDEX_MAX_DIGITS || digits[len] != '\0' ||
	    (digits[0] == '0' && len > 1))
		return false;
	*n = (unsigned)strtoul(digits, NULL, 10);
	return true;
}

static bool loop_dev_index(const char *name, unsigned *n)
{
	size_t len = strlen(LOOP_DEV_PREFIX);
	return strncmp(name, LOOP_DEV_PREFIX, len) == 0 && parse_index(name + len, n);
}

bool loop_name_check(const struct ps_policy *p, struct ps_teardown_result *r)
{
	unsigned n;
	enum ps_reason reason;

	if (loop_dev_index(r->name, &n))
		return true;
	if (!path_is_normal_absolute(r->name))
		reason = PS_REASON_BAD_NAME;
	else if (policy_loop_file_allowed(p, r->name))
		return true;
	else if (strncmp(r->name, "/dev/", 5) == 0)
		reason = PS_REASON_BAD_NAME; /* a device, but not /dev/loopN */
	else
		reason = PS_REASON_OUTSIDE_ROOTS;
	teardown_set(r, PS_TEARDOWN_REFUSED, reason, 0);
	return false;
}

/*
 * The full backing path of loopN from sysfs (the status's lo_file_name
 * stops at 64 bytes), without the mark of an unlinked file; *deleted says
 * whether it was there. -ENOENT when loopN is not bound.
 */
static int loop_backing_path(unsigned n, char *buf, size_t size, bool *deleted)
{
	char dir[64];

	snprintf(dir, sizeof(dir), "/sys/block/loop%u/loop", n);
	_cleanup_close_ int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	int r = read_line_at(fd, "backing_file", buf, size);
	if (r == 0)
		*deleted = strip_deleted_suffix(buf);
	return r;
}

/*
 * Open /dev/loopN and read its status through that fd. Returns 1 when
 * bound (*fd_out owns the fd), 0 when there is no such loop or it is not
 * bound, -ENOTBLK when /dev/loopN is not loop device N, or -errno.
 */
static int loop_open_bound(unsigned n, int *fd_out, struct loop_info64 *info)
{
	char dev[32];
	struct stat st;

	snprintf(dev, sizeof(dev), LOOP_DEV_PREFIX "%u", n);
	_cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT || errno == ENXIO ? 0 : negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != LOOP_MAJOR)
		return -ENOTBLK;
	if (ioctl(fd, LOOP_GET_STATUS64, info) < 0)
		return errno == ENXIO ? 0 : negative_errno();
	/* lo_number ties the fd to the sysfs name loopN that the backing path is read from. */
	if (info->lo_number != n)
		return -ENOTBLK;
	*fd_out = TAKE_FD(fd);
	return 1;
}

/*
 * Errors of the looking itself (resources, a race openat2 asks us to retry,
 * flags it does not know), which say nothing about where the name leads.
 */
static bool open_error_is_helpers(int err)
{
	return err == -EIO || err == -ENOMEM || err == -EMFILE || err == -ENFILE ||
	       err == -EAGAIN || err == -EINTR || err == -EINVAL || err == -E2BIG;
}

/*
 * Is the file the kernel names for the loop the loop's own file, reached
 * from root as this process sees it? The name is d_path() of the loop's
 * file, which is honest only in the mount namespace that opened it: here
 * the same string may lead nowhere (a private mount, PrivateTmp=), to
 * another file, or through a symlink out of the root. So it must open
 * beneath root with no symlinks and have the status's device and inode.
 * 1 yes, 0 no (nothing we can open by that name counts as proof), or
 * -errno when the helper could not look.
 */
static int loop_backing_is_beneath(const char *root, const char *backing,
				   const struct loop_info64 *info)
{
	struct stat st;

	_cleanup_close_ int fd = open_beneath(root, backing, O_PATH);
	if (fd < 0)
		return open_error_is_helpers(fd) ? fd : 0;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	return (uint64_t)st.st_dev == info->lo_device && (uint64_t)st.st_ino == info->lo_inode;
}

/*
 * May bound loopN be detached? Its backing file, as the kernel names it,
 * must lie under a loop root and, unless the kernel says it was deleted,
 * open beneath that root as the very file of the status read through the
 * fd (sysfs and the fd are read apart).
 */
static bool loop_verify(const struct ps_policy *p, unsigned n, const struct loop_info64 *info,
			char *backing, size_t size, struct ps_teardown_result *r)
{
	bool deleted;

	int err = loop_backing_path(n, backing, size, &deleted);
	if (err < 0) {
		/* ENOENT: unbound since the status was read. */
		teardown_set(r, err == -ENOENT ? PS_TEARDOWN_ABSENT : PS_TEARDOWN_FAILED, 0,
			     err == -ENOENT ? 0 : err);
		return false;
	}
	const char *root = path_is_normal_absolute(backing) ? policy_loop_root(p, backing) : NULL;
	if (!root) {
		teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS, 0);
		return false;
	}
	/*
	 * An unlinked file cannot be opened by any name, so the kernel's word
	 * that it was deleted from under the root is all there is to go on. The
	 * word is only a suffix: a file whose name really ends in " (deleted)"
	 * reads the same and passes on the same terms (its name, suffix and
	 * all, lies under the same root), even one that is not ours, seen from
	 * another mount namespace. The kernel offers no other handle on it.
	 */
	if (deleted)
		return true;
	err = loop_backing_is_beneath(root, backing, info);
	if (err < 0)
		teardown_set(r, PS_TEARDOWN_FAILED, 0, err);
	else if (err == 0)
		teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED, 0);
	return err == 1;
}

/* Whether loopN is still bound to backing (sysfs, so that looking holds no reference). */
static bool loop_still_bound(unsigned n, const char *backing)
{
	char now[PATH_MAX];
	bool deleted;

	int r = loop_backing_path(n, now, sizeof(now), &deleted);
	if (r == -ENOENT)
		return false;
	/* Bound to another file: ours is gone and the number already reused. */
	return r < 0 || strcmp(now, backing) == 0;
}

/*
 * Detach through the fd that was verified. Without another opener the
 * kernel completes the detach when our fd closes; with one it does not
 * refuse but marks the loop autoclear, so the loop stays bound until the
 * last holder closes: give that a bounded while, then report busy.
 */
static void loop_clear(int *fd, unsigned n, const char *backing, struct ps_teardown_result *r)
{
	struct loop_info64 info;

	if (ioctl(*fd, LOOP_CLR_FD, 0) < 0) {
		if (errno == ENXIO)
			teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
		else
			teardown_set(r, errno == EBUSY ? PS_TEARDOWN_BUSY : PS_TEARDOWN_FAILED, 0,
				     negative_errno());
		return;
	}
	/* Only ENXIO proves the detach is ours to finish; anything else is checked in sysfs. */
	bool bound = ioctl(*fd, LOOP_GET_STATUS64, &info) == 0 || errno != ENXIO;
	*fd = safe_close(*fd);
	for (int i = 0; bound && i < LOOP_DETACH_CHECKS; i++) {
		if (i > 0)
			sleep_ms(LOOP_DETACH_CHECK_DELAY_MS);
		bound = loop_still_bound(n, backing);
	}
	if (bound)
		teardown_set(r, PS_TEARDOWN_BUSY, 0, -EBUSY);
	else
		teardown_set(r, PS_TEARDOWN_REMOVED, 0, 0);
}

/* Is the open loop still the attach whose diskseq the request recorded (if it did)? */
static bool loop_same_attach(int fd, struct ps_teardown_result *r)
{
	uint64_t seq;

	if (r->diskseq == 0)
		return true;
	if (ioctl(fd, BLKGETDISKSEQ, &seq) < 0) {
		teardown_set(r, PS_TEARDOWN_FAILED, 0, negative_errno());
		return false;
	}
	r->diskseq_found = seq;
	if (seq != r->diskseq)
		teardown_set(r, PS_TEARDOWN_ABSENT, PS_REASON_DISKSEQ_CHANGED, 0);
	return seq == r->diskseq;
}

static void loop_detach(const struct ps_policy *p, unsigned n, struct ps_teardown_result *r)
{
	_cleanup_close_ int fd = -1;
	struct loop_info64 info;
	char backing[PATH_MAX];

	int bound = loop_open_bound(n, &fd, &info);
	if (bound == -ENOTBLK)
		teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_BAD_NAME, 0);
	else if (bound < 0)
		teardown_set(r, PS_TEARDOWN_FAILED, 0, bound);
	else if (bound == 0)
		teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
	else if (loop_same_attach(fd, r) && loop_verify(p, n, &info, backing, sizeof(backing), r))
		loop_clear(&fd, n, backing, r);
	if (r->status == PS_TEARDOWN_REMOVED)
		log_debug("loop%u detached", n);
}

/* How bad an outcome is, to report the worst of several loops on one file. */
static uint32_t status_rank(uint32_t status)
{
	/* The statuses count up from removed to failed; absent is better than removed. */
	return status == PS_TEARDOWN_ABSENT ? 0 : status;
}

/* Every loop the kernel lists with this backing file, each verified and detached on its own. */
static void loop_detach_file(const struct ps_policy *p, struct ps_teardown_result *r)
{
	_cleanup_closedir_ DIR *block = opendir("/sys/block");
	char backing[PATH_MAX];
	bool deleted;
	unsigned n;

	teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
	if (!block) {
		teardown_set(r, PS_TEARDOWN_FAILED, 0, negative_errno());
		return;
	}
	for (struct dirent *e; (e = readdir(block));) {
		if (strncmp(e->d_name, "loop", 4) != 0 || !parse_index(e->d_name + 4, &n))
			continue;
		if (loop_backing_path(n, backing, sizeof(backing), &deleted) < 0 ||
		    strcmp(backing, r->name) != 0)
			continue;
		struct ps_teardown_result one = {.diskseq = r->diskseq};
		loop_detach(p, n, &one);
		if (status_rank(one.status) > status_rank(r->status))
			teardown_set(r, one.status, one.reason, one.err);
	}
}

void loop_teardown(const struct ps_policy *p, struct ps_teardown_result *r)
{
	unsigned n;

	if (loop_dev_index(r->name, &n))
		loop_detach(p, n, r);
	else
		loop_detach_file(p, r);
}
