/*
 * See unixsock.h. Reads only the kernel's tables: sock_diag over netlink
 * and the fd links in /proc; never opens, connects to or reads another
 * process's socket. Looking into another network namespace means entering
 * it for one socket() call; the helper always comes back, or dies.
 */
#include "unixsock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "array.h"
#include "clock.h"
#include "log.h"
#include "macro.h"

#define DIAG_RECV_BYTES	  (32 * 1024)
#define DIAG_TIMEOUT_SEC  2
#define SOCKET_LINK_MAX	  64 /* "socket:[18446744073709551615]" fits */
#define KERNEL_MINOR_BITS 20

int netns_home_open(struct netns_home *home)
{
	struct stat st;
	home->fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home->fd < 0)
		return negative_errno();
	if (fstat(home->fd, &st) < 0)
		return negative_errno();
	home->ino = st.st_ino;
	return 0;
}

int unixsock_available(const struct netns_home *home)
{
	struct listener_table t = {0};
	_cleanup_close_ int self = open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (self < 0)
		return negative_errno();
	int r = listener_table_cover(&t, home, self);
	listener_table_free(&t);
	return r;
}

bool unix_node_equal(const struct unix_node *a, const struct unix_node *b)
{
	return a->dev == b->dev && a->ino == b->ino;
}

int unix_node_of_fd(int fd, struct unix_node *node)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	/* sock_diag has 32 bits for the inode: a truncated match would be no identity at all. */
	if (st.st_ino > UINT32_MAX)
		return -EOVERFLOW;
	/* sock_diag reports the superblock's s_dev as the kernel keeps it, not stat's encoding. */
	node->dev = (uint32_t)((major(st.st_dev) << KERNEL_MINOR_BITS) | minor(st.st_dev));
	node->ino = (uint32_t)st.st_ino;
	return 0;
}

/* The inode of the network namespace of the process at proc_dirfd; -ESRCH when it is gone. */
static int netns_of(int proc_dirfd, uint64_t *ino)
{
	struct stat st;
	if (fstatat(proc_dirfd, "ns/net", &st, 0) < 0)
		return errno == ENOENT ? -ESRCH : negative_errno();
	*ino = st.st_ino;
	return 0;
}

/* A sock_diag socket in the network namespace netns (of the process at proc_dirfd). */
static int diag_socket_for(const struct netns_home *home, int proc_dirfd, uint64_t netns)
{
	_cleanup_close_ int ns = -1;
	if (netns != home->ino) {
		ns = openat(proc_dirfd, "ns/net", O_RDONLY | O_CLOEXEC);
		if (ns < 0)
			return errno == ENOENT ? -ESRCH : negative_errno();
		if (setns(ns, CLONE_NEWNET) < 0)
			return negative_errno();
	}
	/* A netlink socket belongs to the namespace it was made in, wherever we go next. */
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	int err = fd < 0 ? negative_errno() : 0;
	if (ns >= 0 && setns(home->fd, CLONE_NEWNET) < 0) {
		/* Every later answer would be about the wrong namespace: stop here. */
		log_warn("cannot return to the helper's network namespace");
		_exit(EXIT_FAILURE);
	}
	if (fd >= 0) {
		struct timeval tv = {DIAG_TIMEOUT_SEC, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return fd >= 0 ? fd : err;
}

/* One answer of the dump: a listening stream socket bound to a node goes into the table. */
static int table_add(struct listener_table *t, const struct nlmsghdr *h)
{
	const struct unix_diag_msg *m = NLMSG_DATA(h);
	const struct unix_diag_vfs *vfs = NULL;
	const char *name = NULL;
	size_t name_len = 0;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EPROTO;
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
	for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == UNIX_DIAG_VFS && RTA_PAYLOAD(a) >= sizeof(*vfs))
			vfs = RTA_DATA(a);
		else if (a->rta_type == UNIX_DIAG_NAME && RTA_PAYLOAD(a) > 0) {
			name = RTA_DATA(a);
			name_len = RTA_PAYLOAD(a);
		}
	}
	/* Unbound and abstract listeners have no node: nothing can name them by path. */
	if (!vfs || m->udiag_type != SOCK_STREAM || m->udiag_state != TCP_LISTEN)
		return 0;
	if (grow_array(&t->v, &t->capacity, t->n + 1, sizeof(*t->v), 256) < 0)
		return -ENOMEM;
	struct unix_listener *l = &t->v[t->n];
	l->sock_ino = m->udiag_ino;
	l->node = (struct unix_node){.dev = vfs->udiag_vfs_dev, .ino = vfs->udiag_vfs_ino};
	l->name = name ? strndup(name, name_len) : NULL;
	if (name && !l->name)
		return -ENOMEM;
	t->n++;
	t->sorted = false;
	return 0;
}

/* Dump the listeners of fd's namespace into the table; 0 at the end of the answers, or -errno. */
static int diag_dump(int fd, struct listener_table *t)
{
	struct {
		struct nlmsghdr h;
		struct unix_diag_req r;
	} q = {
	    .h = {.nlmsg_len = sizeof(q),
		  .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		  .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
	    .r = {.sdiag_family = AF_UNIX,
		  .udiag_states = 1u << TCP_LISTEN,
		  .udiag_show = UDIAG_SHOW_VFS | UDIAG_SHOW_NAME},
	};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return negative_errno();
	_cleanup_free_ char *buf = malloc(DIAG_RECV_BYTES);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = recv(fd, buf, DIAG_RECV_BYTES, 0);
		if (n < 0)
			return negative_errno();
		/* NLMSG_OK/NEXT compare signed with unsigned: the same walk, spelled out. */
		for (size_t off = 0, step; off + sizeof(struct nlmsghdr) <= (size_t)n;
		     off += step) {
			struct nlmsghdr *h = (struct nlmsghdr *)(buf + off);
			if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > (size_t)n - off)
				return -EPROTO;
			step = NLMSG_ALIGN(h->nlmsg_len);
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR)
				return ((const struct nlmsgerr *)NLMSG_DATA(h))->error;
			int r = table_add(t, h);
			if (r < 0)
				return r;
		}
	}
}

int listener_table_cover(struct listener_table *t, const struct netns_home *home, int proc_dirfd)
{
	uint64_t netns;
	int r = netns_of(proc_dirfd, &netns);
	if (r < 0)
		return r;
	for (size_t i = 0; i < t->n_netns; i++)
		if (t->netns[i] == netns)
			return 0;
	if (grow_array(&t->netns, &t->netns_capacity, t->n_netns + 1, sizeof(*t->netns), 16) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = diag_socket_for(home, proc_dirfd, netns);
	if (fd < 0)
		return fd;
	r = diag_dump(fd, t);
	if (r < 0)
		return r;
	t->netns[t->n_netns++] = netns;
	return 0;
}

static int compare_sock_ino(const void *a, const void *b)
{
	uint64_t x = ((const struct unix_listener *)a)->sock_ino;
	uint64_t y = ((const struct unix_listener *)b)->sock_ino;
	return x < y ? -1 : x > y;
}

const struct unix_listener *listener_table_find(struct listener_table *t, uint64_t sock_ino)
{
	if (!t->sorted && t->n) {
		qsort(t->v, t->n, sizeof(*t->v), compare_sock_ino);
		t->sorted = true;
	}
	struct unix_listener key = {.sock_ino = sock_ino};
	return t->n ? bsearch(&key, t->v, t->n, sizeof(*t->v), compare_sock_ino) : NULL;
}

void listener_table_free(struct listener_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].name);
	free(t->v);
	free(t->netns);
	memset(t, 0, sizeof(*t));
}

/* A socket's fd link, as only the kernel writes it: "socket:[ino]" (a file's link starts '/'). */
static bool parse_socket_link(const char *link, uint64_t *ino)
{
	int end = 0;
	return sscanf(link, "socket:[%" SCNu64 "]%n", ino, &end) == 1 && end > 0 &&
	       link[end] == '\0';
}

/* The clock is read once per this many fds: a process may hold a million. */
#define FDS_PER_CLOCK_READ 256

int proc_for_each_socket(int proc_dirfd, uint64_t deadline_ns, socket_fn fn, void *userdata)
{
	unsigned seen = 0;
	int fd = openat(proc_dirfd, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : negative_errno();
	_cleanup_closedir_ DIR *dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return negative_errno();
	}
	errno = 0;
	for (struct dirent *e; (e = readdir(dir)); errno = 0) {
		char link[SOCKET_LINK_MAX];
		uint64_t ino;
		if (deadline_ns && ++seen % FDS_PER_CLOCK_READ == 0 &&
		    monotonic_ns() >= deadline_ns)
			return -ETIME;
		ssize_t n = readlinkat(dirfd(dir), e->d_name, link, sizeof(link) - 1);
		if (n < 0)
			continue; /* "." and "..", or an fd closed since readdir */
		link[n] = '\0';
		if (!parse_socket_link(link, &ino))
			continue;
		int r = fn(ino, userdata);
		if (r != 0)
			return r;
	}
	/* A process that exits while we read loses its fd directory under us. */
	return errno == ENOENT || errno == ESRCH ? -ESRCH : -errno;
}
