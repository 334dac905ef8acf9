/*
 * privhelper/unixsock.c against the kernel: a socket we bind and listen on
 * is found by its node (the stat of its path, in sock_diag's encoding),
 * through the fds we hold; a connected or unbound socket is no listener.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "macro.h"
#include "procfs.h"
#include "testlib.h"
#include "unixsock.h"

static int listen_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0,
	      "listen on %s", path);
	return fd;
}

static uint64_t sock_ino(int fd)
{
	struct stat st;
	CHECK(fstat(fd, &st) == 0, "fstat");
	return st.st_ino;
}

struct seen {
	uint64_t want[3];
	bool found[3];
};

static int note(uint64_t ino, void *userdata)
{
	struct seen *s = userdata;
	for (int i = 0; i < 3; i++)
		s->found[i] |= s->want[i] == ino;
	return 0;
}

int main(void)
{
	char dir[] = "/tmp/banger-unixsock-XXXXXX", path[100], other[100];
	CHECK(mkdtemp(dir), "mkdtemp");
	t_pathf(path, sizeof(path), "%s/api.sock", dir);
	t_pathf(other, sizeof(other), "%s/other.sock", dir);
	int lfd = listen_at(path);
	int ofd = listen_at(other);
	int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	CHECK(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");

	struct unix_node node, onode;
	int pfd = open(path, O_PATH | O_CLOEXEC);
	CHECK(unix_node_of_fd(pfd, &node) == 0, "node of the socket file");
	close(pfd);
	pfd = open(other, O_PATH | O_CLOEXEC);
	CHECK(unix_node_of_fd(pfd, &onode) == 0 && !unix_node_equal(&node, &onode), "two nodes");
	close(pfd);
	pfd = open(dir, O_PATH | O_CLOEXEC);
	CHECK(unix_node_of_fd(pfd, &onode) == -ENOTSOCK, "a directory is no socket");
	close(pfd);

	struct netns_home home;
	CHECK(netns_home_open(&home) == 0, "netns home");
	int self = proc_open_dir(getpid());

	/* The dump: our listener is there, bound to exactly the node stat gave. */
	struct listener_table t = {0};
	CHECK(listener_table_cover(&t, &home, self) == 0, "dump our namespace's listeners");
	CHECK(listener_table_cover(&t, &home, self) == 0 && t.n_netns == 1, "dumped once");
	const struct unix_listener *l = listener_table_find(&t, sock_ino(lfd));
	CHECK(l && unix_node_equal(&l->node, &node), "our listener is bound to the stat'ed node");
	CHECK(l->name && strcmp(l->name, path) == 0, "its bound name");
	CHECK(!listener_table_find(&t, sock_ino(cfd)), "a connected socket is no listener");

	/* What PROBE asks of the table: only our listener is bound to node. */
	l = listener_table_find(&t, sock_ino(ofd));
	CHECK(l && !unix_node_equal(&l->node, &node), "another listener, another node");

	/* Walking our own fds finds all three sockets. */
	struct seen s = {.want = {sock_ino(lfd), sock_ino(ofd), sock_ino(cfd)}};
	CHECK(proc_for_each_socket(self, 0, note, &s) == 0, "walk our fds");
	CHECK(s.found[0] && s.found[1] && s.found[2], "every socket we hold is seen");

	/* A walk past its deadline stops (the clock is read once per 256 fds) with -ETIME. */
	int dups[300];
	for (size_t i = 0; i < ELEMENTSOF(dups); i++)
		dups[i] = dup(cfd);
	struct seen late = {.want = {sock_ino(lfd)}};
	CHECK(proc_for_each_socket(self, 1, note, &late) == -ETIME, "a walk out of time stops");
	CHECK(proc_for_each_socket(self, monotonic_ns() + 60000000000u, note, &late) == 0,
	      "a walk with time left reads every fd");
	for (size_t i = 0; i < ELEMENTSOF(dups); i++)
		close(dups[i]);

	listener_table_free(&t);
	close(lfd);
	close(ofd);
	close(cfd);
	close(self);
	close(home.fd);
	unlink(path);
	unlink(other);
	rmdir(dir);
	return 0;
}
