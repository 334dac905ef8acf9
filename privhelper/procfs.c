/*
 * See procfs.h. Reads only /proc; never signals, never writes. Every read
 * is bounded.
 */
#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "path.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define DELETED_SUFFIX " (deleted)" /* what d_path() appends to an unlinked file */

int pidfd_open_pid(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	return fd >= 0 ? fd : negative_errno();
}

int pidfd_get_pid(int pidfd)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -EBADF : negative_errno();
	while (fgets(line, sizeof(line), f)) {
		int pid;
		if (sscanf(line, "Pid: %d", &pid) == 1) {
			if (pid > 0)
				return pid;
			/* -1: the process exited; 0: it lives in a pid namespace we cannot see. */
			return pid < 0 ? -ESRCH : -EXDEV;
		}
	}
	return -EBADF; /* an fd, but not a pidfd */
}

bool pidfd_has_exited(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	/* A pidfd polls readable once its process has exited. */
	return poll(&p, 1, 0) != 0;
}

static int readlink_at(int dirfd, const char *name, char *buf, size_t size)
{
	ssize_t n = readlinkat(dirfd, name, buf, size);
	if (n < 0)
		return negative_errno();
	if ((size_t)n >= size)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return 0;
}

int read_line_at(int dirfd, const char *name, char *buf, size_t size)
{
	size_t len = 0;

	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len == size)
		return -ENAMETOOLONG; /* no room for the NUL: the line may go on */
	buf[len] = '\0';
	return strlen(buf) == len ? 0 : -EINVAL;
}

bool strip_deleted_suffix(char *path)
{
	size_t n = strlen(path), suffix = strlen(DELETED_SUFFIX);
	if (n <= suffix || strcmp(path + n - suffix, DELETED_SUFFIX) != 0)
		return false;
	path[n - suffix] = '\0';
	return true;
}

/* ESRCH and ENOENT both mean the process is gone (or was never there). */
static int gone_as_esrch(int r)
{
	return r == -ENOENT || r == -ESRCH ? -ESRCH : r;
}

int proc_open_dir(pid_t pid)
{
	char dir[32];
	snprintf(dir, sizeof(dir), "/proc/%d", (int)pid);
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd >= 0 ? fd : gone_as_esrch(negative_errno());
}

int proc_readlink(int proc_dirfd, const char *name, char *buf, size_t size)
{
	return gone_as_esrch(readlink_at(proc_dirfd, name, buf, size));
}

int proc_exe_is_firecracker(const struct ps_policy *policy, int proc_dirfd, bool *is_fc)
{
	char exe[PATH_MAX];
	*is_fc = false;
	int r = readlink_at(proc_dirfd, "exe", exe, sizeof(exe));
	if (r < 0)
		return gone_as_esrch(r); /* kernel threads have no exe: ENOENT */
	/* A firecracker binary upgraded on disk while the VM runs still is firecracker. */
	strip_deleted_suffix(exe);
	*is_fc = policy_firecracker_name_allowed(policy, path_basename(exe));
	return 0;
}

#define COMM_MAX_BYTES 15 /* TASK_COMM_LEN - 1 */

bool proc_comm_may_be_firecracker(const struct ps_policy *policy, int proc_dirfd)
{
	char comm[64];
	if (read_line_at(proc_dirfd, "comm", comm, sizeof(comm)) < 0)
		return true; /* cannot tell: assume it may be */
	for (uint32_t i = 0; i < policy->n_firecracker_names; i++)
		if (strncmp(comm, policy->firecracker_names[i], COMM_MAX_BYTES) == 0)
			return true;
	return false;
}

int proc_start_time(int dirfd, uint64_t *start_time)
{
	char buf[2048]; /* comm's 15 bytes and 52 numbers */
	int r = read_line_at(dirfd, "stat", buf, sizeof(buf));
	if (r < 0)
		return gone_as_esrch(r);
	/* comm may hold spaces and parentheses: fields start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EPROTO;
	p++;
	/* After ')' come fields 3, 4, ...; start time is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EPROTO;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno != 0 || end == p + 1)
		return -EPROTO;
	*start_time = v;
	return 0;
}
