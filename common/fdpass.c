/*
 * See fdpass.h. The control buffer is sized exactly for max_fds, so an
 * extra fd is MSG_CTRUNC, never silently accepted.
 */
#include "fdpass.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "macro.h"

void fdpass_close_all(int *fds, size_t *nfds)
{
	for (size_t i = 0; i < *nfds; i++)
		fds[i] = safe_close(fds[i]);
	*nfds = 0;
}

void fdpass_control_fill(struct msghdr *msg, union fdpass_control *control, const int *fds,
			 size_t nfds)
{
	msg->msg_control = NULL;
	msg->msg_controllen = 0;
	if (nfds == 0)
		return;
	memset(control, 0, sizeof(*control));
	msg->msg_control = control->buf;
	msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
}

int fdpass_send(int sock, const struct iovec *iov, size_t iovcnt, const int *fds, size_t nfds)
{
	union fdpass_control control;
	struct msghdr msg = {
	    .msg_iov = (struct iovec *)iov,
	    .msg_iovlen = iovcnt,
	};

	if (nfds > FDPASS_MAX_FDS)
		return -E2BIG;
	fdpass_control_fill(&msg, &control, fds, nfds);
	for (;;) {
		ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n >= 0)
			return 0;
		if (errno != EINTR)
			return negative_errno();
	}
}

int fdpass_recv(int sock, void *buf, size_t cap, size_t max_fds, bool nonblock,
		struct fdpass_recv *out)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * FDPASS_RECV_MAX_FDS)];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    /* Room for max_fds and not one more: the kernel then flags extra fds. */
	    .msg_controllen = max_fds > 0 ? CMSG_SPACE(sizeof(int) * max_fds) : 0,
	};
	ssize_t n;

	if (max_fds > FDPASS_RECV_MAX_FDS)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (msg.msg_controllen == 0)
		msg.msg_control = NULL;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (nonblock ? MSG_DONTWAIT : 0));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();

	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			out->foreign_cmsg = true;
			continue;
		}
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *data = CMSG_DATA(c);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (out->nfds < FDPASS_RECV_MAX_FDS)
				out->fds[out->nfds++] = fd;
			else
				safe_close(fd);
		}
	}
	out->len = (size_t)n;
	out->truncated = (msg.msg_flags & MSG_TRUNC) != 0;
	out->ctruncated = (msg.msg_flags & MSG_CTRUNC) != 0;
	if (n == 0 && out->nfds == 0 && !out->truncated && !out->ctruncated)
		return 0;
	return 1;
}
