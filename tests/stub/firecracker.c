/*
 * A stand-in for firecracker in tests. Like the real one it binds and
 * listens on its api socket (`--api-sock PATH`, `--api-sock=PATH`, or
 * firecracker's default /run/firecracker.socket), because that listening
 * socket is what makes a process a VM's firecracker (DESIGN §4). Then it
 * waits to be killed. Built as "firecracker" and, for negative tests,
 * under other names; linked statically so it also runs inside a
 * jailer-style chroot with nothing else in it.
 *
 * A socket file that nobody listens on (a killed run's) is replaced. A
 * bind that fails (another process listens there, or the path is not ours
 * to write) is reported on stderr and the stub keeps running: that is
 * exactly an impostor that only carries a VM's argv. Extra modes for the attacker's side of tests:
 *   --connect-to PATH     connect to PATH and hold the connection
 *   --send-listener PATH  after listening, pass the listening fd to PATH
 *                         (SCM_RIGHTS) and keep a copy
 *   --listen-after-ms N   wait N ms before binding (a slow start)
 *   --recv-listener PATH  bind PATH, accept once, receive an fd, ack it and
 *                         hold it (ready once PATH listens; the sender is
 *                         ready only after the ack)
 *   --dup-listener N      hold the listening socket in N more fds (dups)
 *   --hold-fds N          hold N more fds (copies of one socket), its soft
 *                         fd limit raised to the hard one: a process that is
 *                         costly to inspect
 * With STUB_READY_FD=N in the environment it writes "ready\n" to fd N once
 * all of that is done, so a test waits for an event instead of sleeping.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_API_SOCK "/run/firecracker.socket"

static const char *option(int argc, char **argv, const char *name)
{
	size_t len = strlen(name);
	const char *value = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], name) == 0 && i + 1 < argc)
			value = argv[++i];
		else if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=')
			value = argv[i] + len + 1;
	}
	return value;
}

static int unix_socket_at(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa->sun_path, path);
	return socket(AF_UNIX, SOCK_STREAM, 0);
}

static int connect_to(const char *path);

static int listen_at(const char *path)
{
	struct sockaddr_un sa;
	/* A socket file nobody listens on is a dead run's leftover: take its place. */
	int probe = connect_to(path);
	if (probe >= 0)
		close(probe);
	else if (errno == ECONNREFUSED)
		unlink(path);
	int fd = unix_socket_at(path, &sa);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa;
	int fd = unix_socket_at(path, &sa);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int send_fd(const char *path, int fd)
{
	int sock = connect_to(path);
	if (sock < 0)
		return -1;
	char byte = 'L';
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	/* The receiver's ack: only then does it hold the fd (in flight it is in nobody's table). */
	int r = sendmsg(sock, &msg, 0) == 1 && read(sock, &byte, 1) == 1 ? 0 : -1;
	close(sock);
	return r;
}

/* Take one fd over the rendezvous socket lfd (already listening), and ack it. */
static int recv_fd(int lfd)
{
	int conn = accept(lfd, NULL, NULL);
	close(lfd);
	if (conn < 0)
		return -1;
	char byte;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};
	int fd = -1;
	if (recvmsg(conn, &msg, 0) == 1) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		if (c && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	}
	if (fd >= 0 && write(conn, "A", 1) != 1)
		fd = -1;
	close(conn);
	return fd;
}

static void warn(const char *what, const char *path)
{
	fprintf(stderr, "stub firecracker: %s %s: %s\n", what, path, strerror(errno));
}

/* n copies of one socket (or as many as the hard limit allows, said on stderr). */
static void hold_fds(long n)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	long held = fd >= 0;
	while (fd >= 0 && held < n && dup(fd) >= 0)
		held++;
	if (held < n)
		fprintf(stderr, "stub firecracker: held %ld of %ld fds: %s\n", held, n,
			strerror(errno));
}

int main(int argc, char **argv)
{
	const char *recv_from = option(argc, argv, "--recv-listener");
	const char *connect_path = option(argc, argv, "--connect-to");
	const char *send_path = option(argc, argv, "--send-listener");
	const char *api_sock = option(argc, argv, "--api-sock");
	const char *delay = option(argc, argv, "--listen-after-ms");
	const char *fds = option(argc, argv, "--hold-fds");
	if (fds)
		hold_fds(atol(fds));
	if (delay) {
		long ms = atol(delay);
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}

	int rendezvous = -1;
	if (recv_from) {
		/* Ready once the handoff can come; the sender waits for our ack. */
		rendezvous = listen_at(recv_from);
		if (rendezvous < 0)
			warn("cannot listen for a listener at", recv_from);
	} else if (connect_path) {
		if (connect_to(connect_path) < 0)
			warn("cannot connect to", connect_path);
	} else {
		const char *path = api_sock ? api_sock : DEFAULT_API_SOCK;
		int fd = listen_at(path);
		if (fd < 0)
			warn("cannot listen on", path);
		else if (send_path && send_fd(send_path, fd) < 0)
			warn("cannot pass the listener to", send_path);
		const char *dups = option(argc, argv, "--dup-listener");
		for (long i = 0, n = dups ? atol(dups) : 0; fd >= 0 && i < n; i++)
			if (dup(fd) < 0)
				warn("cannot dup the listener on", path);
	}

	const char *ready = getenv("STUB_READY_FD");
	if (ready) {
		int fd = atoi(ready);
		if (write(fd, "ready\n", 6) != 6)
			warn("cannot report ready on fd", ready);
		close(fd);
	}
	if (rendezvous >= 0 && recv_fd(rendezvous) < 0)
		warn("cannot receive a listener at", recv_from);
	for (;;)
		pause();
}
