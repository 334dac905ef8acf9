/*
 * See varlink_client.h. Replies are read into one growing buffer and cut at
 * their NUL; bytes after the NUL (the next reply of a "more" stream, read in
 * the same read()) stay buffered for the next call. Every reply goes
 * through json_parse, so a hostile or broken server can make bangerctl
 * fail, never crash.
 */
#include "varlink_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdpass.h"
#include "json.h"
#include "macro.h"

#define VARLINK_CLIENT_READ_CHUNK 65536

struct varlink_client {
	int fd;
	char *buf;  /* received bytes not yet returned as replies */
	size_t len; /* bytes in buf */
	size_t cap; /* allocated size of buf */
};

/* What a reply without "parameters" reads as: an object with no members. */
static struct yajl_val_s empty_object = {.type = yajl_t_object};

int varlink_client_connect(const char *path, struct varlink_client **out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);

	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	struct varlink_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = TAKE_FD(fd);
	*out = c;
	return 0;
}

void varlink_client_free(struct varlink_client *c)
{
	if (!c)
		return;
	safe_close(c->fd);
	free(c->buf);
	free(c);
}

void varlink_client_freep(struct varlink_client **c)
{
	varlink_client_free(*c);
}

yajl_gen varlink_client_call_begin(const char *method)
{
	yajl_gen g = json_gen_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "method", method);
	json_gen_string(g, "parameters");
	yajl_gen_map_open(g);
	return g;
}

int varlink_client_send(struct varlink_client *c, yajl_gen call, bool more, const int *fds,
			size_t nfds)
{
	_cleanup_(yajl_gen_freep) yajl_gen g = call;
	const unsigned char *text;
	size_t len;

	if (!g)
		return -ENOMEM;
	yajl_gen_map_close(g); /* parameters */
	if (more)
		json_gen_kv_bool(g, "more", true);
	yajl_gen_map_close(g);
	if (yajl_gen_get_buf(g, &text, &len) != yajl_gen_status_ok)
		return -EINVAL; /* a generator error: a string was not UTF-8, say */

	/*
	 * One sendmsg for the text and its NUL, so the fds ride on the call's
	 * first byte. A blocking stream sendmsg returns only when all of it is
	 * queued (we install no signal handler that could interrupt it).
	 */
	struct iovec iov[2] = {
	    {.iov_base = (void *)text, .iov_len = len},
	    {.iov_base = (void *)"", .iov_len = 1},
	};
	return fdpass_send(c->fd, iov, ELEMENTSOF(iov), fds, nfds);
}

/* Make room for one more read, within the cap. */
static int buffer_grow(struct varlink_client *c)
{
	if (c->cap - c->len >= VARLINK_CLIENT_READ_CHUNK)
		return 0;
	if (c->len > VARLINK_CLIENT_MAX_REPLY_BYTES)
		return -EMSGSIZE;
	size_t cap = c->cap ? c->cap * 2 : VARLINK_CLIENT_READ_CHUNK * 2;
	char *buf = realloc(c->buf, cap);
	if (!buf)
		return -ENOMEM;
	c->buf = buf;
	c->cap = cap;
	return 0;
}

/*
 * A json_get_*() result for an optional member: absent keeps the default, any
 * other failure is a malformed reply, and says why.
 */
static int optional_member(struct varlink_client_reply *reply, int r, const char *why)
{
	if (r == 0 || r == -ENOENT)
		return 0;
	strcpy(reply->why, why);
	return -EBADMSG;
}

/* Pick the envelope out of a parsed reply. */
static int reply_decode(struct varlink_client_reply *reply)
{
	yajl_val tree = reply->tree;

	if (!YAJL_IS_OBJECT(tree)) {
		strcpy(reply->why, "the reply is not a JSON object");
		return -EBADMSG;
	}
	/* The defaults: json_get_*() writes only what it found. */
	reply->error = NULL;
	reply->parameters = &empty_object;
	reply->continues = false;
	if (optional_member(reply, json_get_string(tree, "error", &reply->error),
			    "\"error\" is not a string") < 0 ||
	    optional_member(reply, json_get_object(tree, "parameters", &reply->parameters),
			    "\"parameters\" is not an object") < 0 ||
	    optional_member(reply, json_get_bool(tree, "continues", &reply->continues),
			    "\"continues\" is not a boolean") < 0)
		return -EBADMSG;
	return 0;
}

int varlink_client_read_reply(struct varlink_client *c, struct varlink_client_reply *reply)
{
	size_t scanned = 0;
	char *nul;

	memset(reply, 0, sizeof(*reply));
	while (
	    !(nul = c->len > scanned ? memchr(c->buf + scanned, '\0', c->len - scanned) : NULL)) {
		scanned = c->len;
		int r = buffer_grow(c);
		if (r < 0)
			return r;
		ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n == 0)
			return -ECONNRESET;
		c->len += (size_t)n;
	}

	size_t text_len = (size_t)(nul - c->buf);
	int r = 0;
	if (text_len > VARLINK_CLIENT_MAX_REPLY_BYTES)
		r = -EMSGSIZE;
	else if (json_parse(c->buf, JSON_MAX_DEPTH, &reply->tree, reply->why, sizeof(reply->why)) <
		 0)
		r = -EBADMSG;
	else
		r = reply_decode(reply);
	/* The reply is consumed whatever it held; what follows it stays. */
	memmove(c->buf, nul + 1, c->len - text_len - 1);
	c->len -= text_len + 1;
	if (r < 0) {
		varlink_client_reply_clear(reply);
		return r;
	}
	return 0;
}

void varlink_client_reply_clear(struct varlink_client_reply *reply)
{
	if (reply->tree)
		json_free(reply->tree);
	reply->tree = NULL;
	reply->parameters = NULL;
	reply->error = NULL;
	reply->continues = false;
}

int varlink_client_call(struct varlink_client *c, yajl_gen call, const int *fds, size_t nfds,
			struct varlink_client_reply *reply)
{
	int r = varlink_client_send(c, call, false, fds, nfds);
	if (r < 0)
		return r;
	return varlink_client_read_reply(c, reply);
}
