/* privhelper/procfs.c: the facts a pidfd-guarded look at /proc gives, on processes of our own. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "policy.h"
#include "procfs.h"
#include "testlib.h"

int main(void)
{
	/* A pidfd names its process; once the process is reaped it names none. */
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		pause();
		_exit(0);
	}
	int pidfd = pidfd_open_pid(child);
	CHECK(pidfd >= 0, "pidfd_open: %s", strerror(-pidfd));
	CHECK(pidfd_get_pid(pidfd) == child, "pidfd_get_pid gives the child");
	CHECK(!pidfd_has_exited(pidfd), "a live child has not exited");
	CHECK(pidfd_get_pid(0) == -EBADF, "stdin is no pidfd");

	int dirfd = proc_open_dir(child);
	CHECK(dirfd >= 0, "proc_open_dir");
	uint64_t t1 = 0, t2 = 0;
	CHECK(proc_start_time(dirfd, &t1) == 0 && t1 > 0, "start time of the child");
	int self = proc_open_dir(getpid());
	CHECK(proc_start_time(self, &t2) == 0 && t2 > 0 && t2 <= t1, "ours is no later");

	/* The name test reads the executable, whatever argv[0] or comm say. */
	struct ps_policy p;
	policy_init(&p);
	CHECK(policy_add_firecracker_name(&p, "test_procfs") == 0, "policy name");
	bool is_fc = false;
	CHECK(proc_exe_is_firecracker(&p, self, &is_fc) == 0 && is_fc, "our exe has the name");
	policy_init(&p);
	CHECK(policy_add_firecracker_name(&p, "firecracker") == 0, "policy name");
	CHECK(proc_exe_is_firecracker(&p, self, &is_fc) == 0 && !is_fc, "ours is no firecracker");

	char root[64];
	CHECK(proc_readlink(self, "root", root, sizeof(root)) == 0 && strcmp(root, "/") == 0,
	      "our root is /");

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	CHECK(pidfd_has_exited(pidfd), "the reaped child has exited");
	CHECK(pidfd_get_pid(pidfd) == -ESRCH, "a reaped child's pidfd names no pid");
	CHECK(proc_start_time(dirfd, &t1) == -ESRCH, "a reaped child's /proc is gone");
	close(dirfd);
	close(self);
	close(pidfd);
	return 0;
}
