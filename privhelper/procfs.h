/*
 * Facts about a process, read from /proc in the PID-reuse-safe order of
 * DESIGN §4: the caller holds a pidfd for the process first, reads /proc
 * second, and only then asks the pidfd whether the process still lives. If
 * it does, the pid cannot have been recycled in between, so the facts
 * belong to the process the pidfd names.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

/* Firecracker's own default when it is started without --api-sock. */
#define FIRECRACKER_DEFAULT_API_SOCK "/run/firecracker.socket"
#define PROC_CMDLINE_MAX_BYTES	     (128 * 1024)

struct proc_facts {
	pid_t pid;
	uint64_t start_time;	 /* clock ticks after boot, /proc/PID/stat field 22 */
	bool is_firecracker;	 /* the executable's name is one of the policy's names */
	bool has_api_sock;	 /* api_sock could be determined from argv (and root/cwd) */
	char api_sock[PATH_MAX]; /* as seen from the host: resolved under /proc/PID/root */
};

int pidfd_open_pid(pid_t pid);
/* The pid a pidfd names, from /proc/self/fdinfo: >0, or -ESRCH when it exited, -EBADF when fd is
 * not a pidfd. */
int pidfd_get_pid(int pidfd);
bool pidfd_has_exited(int pidfd);

/*
 * Read exe name, argv and start time of pid. Call with a pidfd already
 * open for pid; the facts are only trustworthy if pidfd_has_exited() is
 * false afterwards. Returns 0, -ESRCH (gone), -EACCES (not allowed to look) or -errno.
 */
int proc_inspect(const struct ps_policy *policy, pid_t pid, struct proc_facts *f);

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

/*
 * The api socket path argv names: exactly one "--api-sock PATH" or
 * "--api-sock=PATH" element, or firecracker's default when there is none.
 * Exposed for tests. Returns 0 with *path pointing into argv, or -ENOENT.
 */
int argv_find_api_sock(const char *argv, size_t len, const char **path);
