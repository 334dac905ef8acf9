/*
 * Facts about a process, read from /proc in the PID-reuse-safe order of
 * DESIGN §4: the caller holds a pidfd for the process first, reads /proc
 * second, and only then asks the pidfd whether the process still lives. If
 * it does, the pid cannot have been recycled in between, so the facts
 * belong to the process the pidfd names.
 *
 * Only reads that cannot wait on the process itself: links (exe, fd/N,
 * ns/net, root, cwd) and stat/comm, never cmdline or environ, which take
 * the target's mmap lock and hang behind a process stuck in D state. What
 * argv says proves nothing anyway (unixsock.h is where identity comes from).
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

int pidfd_open_pid(pid_t pid);
/* The pid a pidfd names, from /proc/self/fdinfo: >0, or -ESRCH when it exited, -EBADF when fd is
 * not a pidfd. */
int pidfd_get_pid(int pidfd);
bool pidfd_has_exited(int pidfd);

/*
 * Read a one-line /proc or sysfs file, dirfd/name, into buf without its
 * newline. Returns 0, -ENAMETOOLONG when it does not fit, -EINVAL for an
 * embedded NUL, or -errno (-ENOENT once the object is gone).
 */
int read_line_at(int dirfd, const char *name, char *buf, size_t size);
/* Cut the " (deleted)" the kernel appends to the name of an unlinked file; whether it was there. */
bool strip_deleted_suffix(char *path);

/* /proc/PID as an O_PATH directory fd, or -ESRCH. */
int proc_open_dir(pid_t pid);

/* Start time of the process (clock ticks after boot, /proc/PID/stat field 22). */
int proc_start_time(int proc_dirfd, uint64_t *start_time);

/* Cheap first filter for a /proc walk: is pid's executable one of the firecracker names? */
int proc_exe_is_firecracker(const struct ps_policy *policy, int proc_dirfd, bool *is_fc);

/*
 * For a process whose exe we may not read (it lives in a user namespace
 * above ours): could it be a firecracker? Its comm (readable by anyone)
 * starts as the executable's name cut to 15 bytes; a comm that matches no
 * policy name rules it out. A firecracker that renamed its main thread
 * AND sits beyond CAP_SYS_PTRACE's reach would be missed: both are needed.
 */
bool proc_comm_may_be_firecracker(const struct ps_policy *policy, int proc_dirfd);

/* A magic link of the process (root, cwd) as a host path; -ESRCH when it is gone. */
int proc_readlink(int proc_dirfd, const char *name, char *buf, size_t size);
