/*
 * The kernel's word on api sockets (DESIGN §4): which AF_UNIX socket is
 * listening on which filesystem node (NETLINK_SOCK_DIAG with
 * UDIAG_SHOW_VFS, asked in the network namespace the socket lives in), and
 * which sockets a process holds (the socket:[ino] links in /proc/PID/fd).
 * Together they say that a process serves an api socket without reading a
 * single string the process chose: not its name, not its argv, not a path
 * resolved in its root or mount namespace.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A filesystem node as sock_diag reports it: the superblock's kernel dev_t
 * (MAJOR << 20 | MINOR, not stat's encoding) and the inode number cut to
 * 32 bits (struct unix_diag_vfs has no more). Compared whole.
 */
struct unix_node {
	uint32_t dev;
	uint32_t ino;
};

/* A listening stream socket bound to a node; name is the path given to bind(), for messages. */
struct unix_listener {
	uint64_t sock_ino;
	struct unix_node node;
	char *name;
};

/*
 * What one request knows of listeners: dumps of every network namespace met so far. As
 * many namespaces as the processes have (a fixed cap let anyone with 257 namespaces make
 * every scan incomplete); the scan's time budget bounds the work.
 */
struct listener_table {
	struct unix_listener *v;
	size_t n, capacity;
	uint64_t *netns;
	size_t n_netns, netns_capacity;
	bool sorted;
};

/* The helper's own network namespace, to come back to after looking into another one. */
struct netns_home {
	int fd;
	uint64_t ino;
};

int netns_home_open(struct netns_home *home);
/*
 * Does the kernel answer sock_diag for AF_UNIX (CONFIG_UNIX_DIAG, the
 * unix_diag module)? Without it no process can be identified: 0 or -errno.
 */
int unixsock_available(const struct netns_home *home);

bool unix_node_equal(const struct unix_node *a, const struct unix_node *b);
/* The node of an fd opened on a socket file (O_PATH); -ENOTSOCK when it is no socket. */
int unix_node_of_fd(int fd, struct unix_node *node);

/*
 * Make sure the table holds the listeners of the network namespace of the
 * process whose /proc directory is proc_dirfd. Returns 0, -ESRCH when the
 * process is gone, -EPERM without the privilege to look, or -errno.
 */
int listener_table_cover(struct listener_table *t, const struct netns_home *home, int proc_dirfd);
const struct unix_listener *listener_table_find(struct listener_table *t, uint64_t sock_ino);
void listener_table_free(struct listener_table *t);

/*
 * Call fn for every socket the process holds (its socket inode), until fn
 * returns non-zero (that value is returned). 0 when all were seen, -ESRCH
 * when the process is gone, -EACCES when its fds may not be read, -ETIME
 * once CLOCK_MONOTONIC passes deadline_ns (0: none) with fds still unread.
 */
typedef int (*socket_fn)(uint64_t sock_ino, void *userdata);
int proc_for_each_socket(int proc_dirfd, uint64_t deadline_ns, socket_fn fn, void *userdata);
