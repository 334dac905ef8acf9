/*
 * One datagram in, one datagram out, with file descriptors (SCM_RIGHTS).
 * Byte-level socket I/O lives here and nowhere else (like OpenSSH's
 * monitor_fdpass.c). This layer judges nothing: it reports what the kernel
 * delivered, including truncation flags, and the caller decides what is a
 * violation. Received fds arrive O_CLOEXEC and are owned by the caller.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Largest number of fds any banger message carries (a SCAN reply part). */
#define FDPASS_MAX_FDS 64
/*
 * The most fds one message can carry at all (the kernel's SCM_MAX_FD). A receiver that
 * must never let the kernel drop fds on its own thread (a close that can block) asks for
 * this many, and then judges the count itself.
 */
#define FDPASS_RECV_MAX_FDS 253

struct fdpass_recv {
	size_t len; /* bytes of the datagram that fit in the buffer */
	int fds[FDPASS_RECV_MAX_FDS];
	size_t nfds;	   /* fds actually received; all owned by the caller */
	bool truncated;	   /* MSG_TRUNC: the datagram was larger than the buffer */
	bool ctruncated;   /* MSG_CTRUNC: more fds (or control data) than the buffer allowed */
	bool foreign_cmsg; /* a control message other than SCM_RIGHTS arrived */
};

/* Returns 0 or -errno. Never raises SIGPIPE. */
/* Room for the SCM_RIGHTS message of up to FDPASS_MAX_FDS fds. */
union fdpass_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
};

/* Point msg's control at control, holding fds (nfds ≤ FDPASS_MAX_FDS, none when 0). */
void fdpass_control_fill(struct msghdr *msg, union fdpass_control *control, const int *fds,
			 size_t nfds);

int fdpass_send(int sock, const struct iovec *iov, size_t iovcnt, const int *fds, size_t nfds);

/*
 * Receive one datagram into buf. max_fds (<= FDPASS_RECV_MAX_FDS) sizes the
 * control buffer, so a peer that sends more gets MSG_CTRUNC reported.
 * Returns 1 on a datagram, 0 on EOF, -errno on error (with no fd left open).
 */
int fdpass_recv(int sock, void *buf, size_t cap, size_t max_fds, bool nonblock,
		struct fdpass_recv *out);

void fdpass_close_all(int *fds, size_t *nfds);
