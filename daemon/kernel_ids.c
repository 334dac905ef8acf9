/* See kernel_ids.h. */
#include "kernel_ids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomicfile.h"
#include "macro.h"

#define LOOP_INDEX_MAX	      (1u << 20) /* the loop driver's limit on minors */
#define SYSFS_ATTR_MAX_BYTES  4096	 /* what sysfs reports as every attribute's size */
#define DISKSEQ_READ_ATTEMPTS 3

/* N of /dev/loopN in its one spelling: printing N back must give dev again. */
static int loop_index(const char *dev, unsigned *n)
{
	char again[32];
	int used = 0;

	if (sscanf(dev, "/dev/loop%u%n", n, &used) != 1 || dev[used] != '\0' ||
	    *n >= LOOP_INDEX_MAX)
		return -EINVAL;
	snprintf(again, sizeof(again), "/dev/loop%u", *n);
	return strcmp(again, dev) == 0 ? 0 : -EINVAL;
}

/* A positive decimal number up to max in sysfs attribute name; -ENXIO when it is not there. */
static int read_sysfs_number(int dirfd, const char *name, uint64_t max, uint64_t *out)
{
	_cleanup_free_ char *text = NULL;
	char *end;

	int r = read_file_at(dirfd, name, SYSFS_ATTR_MAX_BYTES, &text, NULL);
	if (r < 0)
		return r == -ENOENT ? -ENXIO : r;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno != 0 || end == text || (*end != '\n' && *end != '\0') || v == 0 || v > max)
		return -EIO;
	*out = v;
	return 0;
}

static int read_diskseq(int dirfd, uint64_t *seq)
{
	return read_sysfs_number(dirfd, "diskseq", UINT64_MAX, seq);
}

int loop_diskseq_read(const char *dev, uint64_t *seq)
{
	char dir[64];
	unsigned n;

	int r = loop_index(dev, &n);
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "/sys/block/loop%u", n);
	_cleanup_close_ int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return errno == ENOENT ? -ENXIO : negative_errno();
	/*
	 * The attribute loop/ exists only while the loop is attached. The same
	 * diskseq before and after finding it there means no detach or attach
	 * came between (each takes a new number): it is this attach's.
	 */
	for (int attempt = 0; attempt < DISKSEQ_READ_ATTEMPTS; attempt++) {
		uint64_t before, after;
		if ((r = read_diskseq(dirfd, &before)) < 0)
			return r;
		if (faccessat(dirfd, "loop/backing_file", F_OK, 0) < 0)
			return errno == ENOENT ? -ENXIO : negative_errno();
		if ((r = read_diskseq(dirfd, &after)) < 0)
			return r;
		if (before == after) {
			*seq = before;
			return 0;
		}
	}
	return -EAGAIN;
}

int tap_ifindex_read(const char *name, uint32_t *ifindex)
{
	char dir[64];
	uint64_t v;

	snprintf(dir, sizeof(dir), "/sys/class/net/%s", name);
	_cleanup_close_ int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return errno == ENOENT ? -ENXIO : negative_errno();
	/* One read: the number of whichever link bore the name at that instant. */
	int r = read_sysfs_number(dirfd, "ifindex", INT32_MAX, &v);
	if (r < 0)
		return r;
	*ifindex = (uint32_t)v;
	return 0;
}
