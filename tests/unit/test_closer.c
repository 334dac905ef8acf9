/*
 * common/closer.c: every fd handed over is closed, off the caller's thread;
 * a close that hangs is left to its thread, which still closes the rest of
 * the queue and then frees the closer (LeakSanitizer, in the ASan build,
 * fails the test if it does not).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "closer.h"
#include "testlib.h"

#define WAIT_MS 10000

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t threads(void)
{
	DIR *d = opendir("/proc/self/task");
	size_t n = 0;
	CHECK(d != NULL, "opendir /proc/self/task: %s", strerror(errno));
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Wait, with a bound, until this process is down to its main thread again. */
static void wait_single_threaded(void)
{
	long deadline = now_ms() + WAIT_MS;
	while (threads() > 1) {
		CHECK(now_ms() < deadline, "a closer thread still runs after %d ms", WAIT_MS);
		poll(NULL, 0, 5);
	}
}

static void plain(void)
{
	enum { PIPES = 64 };
	int fds[2 * PIPES];
	struct fd_closer *c = fd_closer_new();
	unsigned long abandoned = fd_closer_abandoned();

	CHECK(c != NULL, "fd_closer_new");
	for (int i = 0; i < PIPES; i++)
		CHECK(pipe2(fds + 2 * i, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	for (int i = 0; i < 2 * PIPES; i++)
		fd_closer_close(c, fds[i]);
	fd_closer_free(c);
	for (int i = 0; i < 2 * PIPES; i++)
		CHECK(!fd_open(fds[i]), "fd %d still open after fd_closer_free", fds[i]);
	CHECK(fd_closer_abandoned() == abandoned, "nothing was left behind");
	wait_single_threaded();
}

/*
 * A TCP socket whose close lingers: SO_LINGER of a minute, its send queue full of bytes
 * a peer that never reads has not taken. close() sleeps until they are sent or the peer
 * resets the connection. *peer gets the accepted end.
 */
static int lingering_socket(int *peer)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int small = 4096;
	struct linger linger = {.l_onoff = 1, .l_linger = 60};
	char buf[4096] = {0};

	CHECK(lst >= 0 && fd >= 0, "socket: %s", strerror(errno));
	CHECK(setsockopt(lst, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0, "SO_RCVBUF");
	CHECK(bind(lst, (struct sockaddr *)&addr, sizeof(addr)) == 0, "bind: %s", strerror(errno));
	CHECK(listen(lst, 1) == 0 && getsockname(lst, (struct sockaddr *)&addr, &len) == 0,
	      "listen: %s", strerror(errno));
	CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0, "SO_SNDBUF");
	CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect: %s",
	      strerror(errno));
	*peer = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
	CHECK(*peer >= 0, "accept: %s", strerror(errno));
	close(lst);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger)) == 0, "SO_LINGER");
	while (send(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	CHECK(errno == EAGAIN, "filling the send queue: %s", strerror(errno));
	return fd;
}

static void stuck(void)
{
	int peer, pipe_fds[2];
	struct fd_closer *c = fd_closer_new();
	unsigned long abandoned = fd_closer_abandoned();

	CHECK(c != NULL, "fd_closer_new");
	int lingering = lingering_socket(&peer);
	CHECK(pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	/* The queue is last in, first out: the pipe ends wait behind the hanging close. */
	fd_closer_close(c, pipe_fds[0]);
	fd_closer_close(c, pipe_fds[1]);
	fd_closer_close(c, lingering);
	long started = now_ms();
	fd_closer_free(c); /* returns: a close that hangs is not waited for */
	long took = now_ms() - started;
	CHECK(took < WAIT_MS, "fd_closer_free took %ld ms", took);
	CHECK(fd_closer_abandoned() == abandoned + 3, "3 fds left closing, %lu counted",
	      fd_closer_abandoned() - abandoned);
	CHECK(fd_open(pipe_fds[0]) && fd_open(pipe_fds[1]), "the queue waits behind the close");

	/* The peer resets: the close returns, the thread closes the rest and frees the closer. */
	struct linger reset = {.l_onoff = 1, .l_linger = 0};
	CHECK(setsockopt(peer, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) == 0, "SO_LINGER 0");
	close(peer);
	wait_single_threaded();
	CHECK(!fd_open(pipe_fds[0]) && !fd_open(pipe_fds[1]), "the queue was finished");
	CHECK(!fd_open(lingering), "the lingering socket was closed");
}

int main(int argc, char **argv)
{
	static const struct t_case cases[] = {{"plain", plain}, {"stuck", stuck}};
	CHECK(t_run_case(cases, sizeof(cases) / sizeof(*cases), argc, argv), "no case %s",
	      argc > 1 ? argv[1] : "(none)");
	return 0;
}
