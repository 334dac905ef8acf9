/*
 * A man in the middle between bangerd and banger-privhelper, for tests that
 * must lose the helper at one exact moment (DESIGN §1, death of the helper;
 * §3, nothing is torn down on unknown). bangerd execs this as if it were the
 * helper: its socket is on fd 3 and argv holds the policy. The proxy starts
 * the real helper ($BANGER_HELPER) on a socketpair of its own with the same
 * argv and relays every datagram, fds included, both ways, unchanged.
 *
 * With BANGER_PROXY_HOLD_TYPE=<type> and BANGER_PROXY_FIFO=<path>, the first
 * request of that type from bangerd is not passed on: the proxy writes
 * "held\n" to the FIFO and relays nothing more, so the test knows the request
 * is in flight and can kill the proxy then. The real helper has
 * PR_SET_PDEATHSIG, so SIGKILL to the proxy takes both down, as if the helper
 * itself had died.
 *
 * Two more ways to make liveness hard to establish (issue 11: "unknown is
 * tested"), each a test-only lie on the helper's side:
 *   BANGER_PROXY_UNINSPECTED=N  every SCAN reply says N processes could not
 *                               be inspected (as a process beyond the
 *                               helper's reach would make it say)
 *   BANGER_PROXY_DELAY_TYPE=T with BANGER_PROXY_DELAY_MS=M  every reply of
 *                               type T reaches bangerd M ms late
 * Otherwise it parses no more than the header's type field and alters no
 * byte: the real helper and bangerd judge the traffic.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdpass.h"
#include "log.h"
#include "privsep.h"

#ifndef CLOSE_RANGE_CLOEXEC
#include <linux/close_range.h>
#endif

#define PROXY_DAEMON_FD 3

/* One direction of the relay; at most one datagram waits for its destination. */
struct relay_dir {
	const char *name;
	int from;
	int to;
	bool pending;
	size_t len;
	int fds[FDPASS_MAX_FDS];
	size_t nfds;
	unsigned char
	    buf[PS_MAX_MESSAGE_BYTES + 1]; /* + 1 so a larger datagram shows as truncated */
};

static void relay_release(struct relay_dir *r)
{
	fdpass_close_all(r->fds, &r->nfds);
	r->pending = false;
	r->len = 0;
}

/* Returns 1 with a datagram pending, 0 when the source hung up, -EAGAIN when nothing is queued. */
static int relay_receive(struct relay_dir *r)
{
	struct fdpass_recv in;
	int k = fdpass_recv(r->from, r->buf, sizeof(r->buf), FDPASS_MAX_FDS, true, &in);
	if (k <= 0)
		return k == -EAGAIN ? -EAGAIN : 0;
	/* Relay it as it came: the receiver at the other end decides what is a violation. */
	if (in.truncated || in.ctruncated || in.foreign_cmsg)
		log_warnx("%s: datagram arrived truncated or with foreign control data", r->name);
	r->len = in.len;
	memcpy(r->fds, in.fds, in.nfds * sizeof(int));
	r->nfds = in.nfds;
	r->pending = true;
	return 1;
}

/* Returns 1 when the datagram went out, 0 when the destination hung up, -EAGAIN when full. */
static int relay_send(struct relay_dir *r)
{
	struct iovec iov = {.iov_base = r->buf, .iov_len = r->len};
	int k = fdpass_send(r->to, &iov, 1, r->fds, r->nfds);
	if (k == -EAGAIN)
		return -EAGAIN;
	relay_release(r); /* sent (the receiver holds its own copies of the fds) or undeliverable */
	return k == 0 ? 1 : 0;
}

static uint16_t datagram_type(const struct relay_dir *r)
{
	struct ps_header h;
	if (r->len < sizeof(h))
		return 0;
	memcpy(&h, r->buf, sizeof(h));
	return h.type;
}

/* A type number from the environment, or -1 when unset. */
static long env_type(const char *name)
{
	const char *v = getenv(name);
	if (!v || !v[0])
		return -1;
	char *end;
	long t = strtol(v, &end, 10);
	if (*end != '\0' || t <= 0 || t > UINT16_MAX)
		fatalx(1, "%s '%s' is not a message type", name, v);
	return t;
}

/* The lies a test asked for, told to bangerd about the helper's replies. */
static void doctor_reply(struct relay_dir *r, long uninspected, long delay_type, long delay_ms)
{
	uint16_t type = datagram_type(r);
	if (uninspected >= 0 && type == PS_SCAN_REPLY &&
	    r->len >= sizeof(struct ps_header) + offsetof(struct ps_scan_reply, uninspected) +
			  sizeof(uint32_t)) {
		uint32_t n = (uint32_t)uninspected;
		memcpy(r->buf + sizeof(struct ps_header) +
			   offsetof(struct ps_scan_reply, uninspected),
		       &n, sizeof(n));
	}
	if (delay_type > 0 && type == delay_type) {
		struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
		log_info("delaying a %s by %ld ms", ps_type_name(type), delay_ms);
		nanosleep(&ts, NULL);
	}
}

static void announce_hold(const char *fifo, uint16_t type)
{
	static const char msg[] = "held\n";
	/* Non-blocking: a test that is not listening must not stall us forever. */
	int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		log_warn("cannot open %s to announce the hold", fifo);
		return;
	}
	if (write(fd, msg, sizeof(msg) - 1) != (ssize_t)(sizeof(msg) - 1))
		log_warn("writing to %s", fifo);
	close(fd);
	log_info("holding a %s from bangerd; relaying nothing more", ps_type_name(type));
}

static pid_t spawn_helper(const char *helper, char **argv, int *sock_out)
{
	int sv[2];
	pid_t parent = getpid();

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		fatal(1, "socketpair");
	argv[0] = (char *)helper;
	pid_t pid = fork();
	if (pid < 0)
		fatal(1, "fork");
	if (pid == 0) {
		/* Killing the proxy must take the real helper down with it. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
			_exit(127);
		if (dup2(sv[1], PROXY_DAEMON_FD) < 0) /* replaces our copy of bangerd's socket */
			_exit(127);
		close_range(PROXY_DAEMON_FD + 1, ~0U, 0);
		execv(helper, argv);
		_exit(127);
	}
	close(sv[1]);
	*sock_out = sv[0];
	return pid;
}

/* End the way the real helper ended, so bangerd's wait status says what happened to it. */
static _noreturn_ void exit_like(pid_t child)
{
	int status;
	if (waitpid(child, &status, 0) != child)
		exit(1);
	if (WIFEXITED(status))
		exit(WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
	}
	exit(128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
}

static void relay_events(struct relay_dir *r, struct pollfd *src, struct pollfd *dst)
{
	if (r->pending)
		dst->events |= POLLOUT;
	else
		src->events |= POLLIN;
}

int main(int argc, char **argv)
{
	static struct relay_dir to_helper = {.name = "bangerd -> helper"};
	static struct relay_dir to_daemon = {.name = "helper -> bangerd"};
	const char *helper = getenv("BANGER_HELPER");
	const char *hold = getenv("BANGER_PROXY_HOLD_TYPE");
	const char *fifo = getenv("BANGER_PROXY_FIFO");
	long hold_type = -1;
	bool held = false;
	int helper_sock;
	const char *uninspected_env = getenv("BANGER_PROXY_UNINSPECTED");
	long uninspected = uninspected_env && uninspected_env[0] ? atol(uninspected_env) : -1;
	long delay_type = env_type("BANGER_PROXY_DELAY_TYPE");
	const char *delay_env = getenv("BANGER_PROXY_DELAY_MS");
	long delay_ms = delay_env ? atol(delay_env) : 0;

	(void)argc;
	log_init("banger-helper-proxy", LOG_LEVEL_INFO);
	if (!helper || !helper[0])
		fatalx(1, "BANGER_HELPER is not set: cannot start the real helper");
	if (hold && fifo) {
		char *end;
		hold_type = strtol(hold, &end, 10);
		if (*end != '\0' || hold_type <= 0 || hold_type > UINT16_MAX)
			fatalx(1, "BANGER_PROXY_HOLD_TYPE '%s' is not a message type", hold);
	}
	/* bangerd gone means we are done; EOF says so too, this covers a stall. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		fatal(1, "PR_SET_PDEATHSIG");
	signal(SIGPIPE, SIG_IGN);

	pid_t child = spawn_helper(helper, argv, &helper_sock);
	if (fcntl(PROXY_DAEMON_FD, F_SETFL, O_NONBLOCK) < 0 ||
	    fcntl(helper_sock, F_SETFL, O_NONBLOCK) < 0)
		fatal(1, "O_NONBLOCK");
	to_helper.from = to_daemon.to = PROXY_DAEMON_FD;
	to_daemon.from = to_helper.to = helper_sock;
	log_info("relaying between bangerd and %s (pid %d)", helper, (int)child);

	for (;;) {
		struct pollfd pfd[2] = {{.fd = PROXY_DAEMON_FD}, {.fd = helper_sock}};
		if (!held) {
			relay_events(&to_helper, &pfd[0], &pfd[1]);
			relay_events(&to_daemon, &pfd[1], &pfd[0]);
		}
		/* While holding, poll for nothing but a hang-up (always reported). */
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal(1, "poll");
		}
		/* A hang-up on a socket we are not reading would never show as EOF: end here. */
		if (((pfd[0].revents & (POLLHUP | POLLERR)) && !(pfd[0].events & POLLIN)) ||
		    ((pfd[1].revents & (POLLHUP | POLLERR)) && !(pfd[1].events & POLLIN)))
			break;
		if (held)
			continue;
		bool eof = false;
		struct relay_dir *dirs[2] = {&to_helper, &to_daemon};
		for (size_t i = 0; i < 2 && !eof && !held; i++) {
			struct relay_dir *r = dirs[i];
			int k = r->pending ? relay_send(r) : relay_receive(r);
			if (k == 0) {
				eof = true;
			} else if (k == 1 && r == &to_helper && r->pending &&
				   datagram_type(r) == hold_type) {
				held = true;
				announce_hold(fifo, (uint16_t)hold_type);
			} else if (k == 1 && r->pending) {
				if (r == &to_daemon)
					doctor_reply(r, uninspected, delay_type, delay_ms);
				/* forward at once; a full destination keeps it pending */
				if (relay_send(r) == 0)
					eof = true;
			}
		}
		if (eof)
			break;
	}
	/* Either side hung up: close both, so the other sees EOF too, and follow the helper. */
	close(PROXY_DAEMON_FD);
	close(helper_sock);
	exit_like(child);
}
