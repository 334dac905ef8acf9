/* See bench_varlink.h. */
#include "bench_varlink.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"
#include "testlib.h"

struct bv_conn *bv_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct bv_conn *c = calloc(1, sizeof(*c));

	CHECK(c, "calloc");
	CHECK(strlen(path) < sizeof(sa.sun_path), "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(c->fd >= 0, "socket: %s", strerror(errno));
	CHECK(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", path,
	      strerror(errno));
	return c;
}

void bv_close(struct bv_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

yajl_gen bv_request_begin(const char *method)
{
	yajl_gen g = json_gen_new();
	CHECK(g, "json_gen_new");
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "method", method);
	json_gen_string(g, "parameters");
	yajl_gen_map_open(g);
	return g;
}

char *bv_request_end(yajl_gen g, size_t *len)
{
	const unsigned char *buf;
	size_t n;

	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	CHECK(yajl_gen_get_buf(g, &buf, &n) == yajl_gen_status_ok, "building a request");
	char *req = malloc(n + 1);
	CHECK(req, "malloc");
	memcpy(req, buf, n);
	req[n] = '\0'; /* Varlink's message terminator, sent as part of the call */
	yajl_gen_free(g);
	*len = n + 1;
	return req;
}

void bv_send(struct bv_conn *c, const char *req, size_t len)
{
	while (len > 0) {
		ssize_t n = write(c->fd, req, len);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "sending a call: %s", n < 0 ? strerror(errno) : "wrote nothing");
		req += n;
		len -= (size_t)n;
	}
}

void bv_fill(struct bv_conn *c)
{
	ssize_t n;

	CHECK(c->len < BV_REPLY_MAX_BYTES, "a reply longer than %d bytes", BV_REPLY_MAX_BYTES);
	do
		n = read(c->fd, c->buf + c->len, BV_REPLY_MAX_BYTES - c->len);
	while (n < 0 && errno == EINTR);
	CHECK(n >= 0, "reading a reply: %s", strerror(errno));
	CHECK(n > 0, "bangerd closed the connection with %zu reply bytes pending", c->len);
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
}

ptrdiff_t bv_reply_length(const struct bv_conn *c)
{
	const char *end = memchr(c->buf, '\0', c->len);
	return end ? end - c->buf : -1;
}

void bv_consume(struct bv_conn *c, size_t len)
{
	size_t taken = len + 1;
	memmove(c->buf, c->buf + taken, c->len - taken);
	c->len -= taken;
	c->buf[c->len] = '\0';
}

char *bv_call(struct bv_conn *c, const char *req, size_t len)
{
	ptrdiff_t n;

	bv_send(c, req, len);
	while ((n = bv_reply_length(c)) < 0)
		bv_fill(c);
	char *reply = strndup(c->buf, (size_t)n);
	CHECK(reply, "strndup");
	bv_consume(c, (size_t)n);
	return reply;
}

yajl_val bv_parse_success(const char *reply, const char *what)
{
	char why[256];
	yajl_val tree;

	CHECK(json_parse(reply, JSON_MAX_DEPTH, &tree, why, sizeof(why)) == 0,
	      "%s: reply is not JSON (%s): %s", what, why, reply);
	CHECK(YAJL_IS_OBJECT(tree), "%s: reply is not an object: %s", what, reply);
	CHECK(json_get_string(tree, "error", &(const char *){NULL}) == -ENOENT,
	      "%s: error reply: %s", what, reply);
	yajl_val params;
	CHECK(json_get_object(tree, "parameters", &params) == 0, "%s: no parameters: %s", what,
	      reply);
	return tree;
}

yajl_val bv_param(yajl_val reply, const char *const *path)
{
	yajl_val v;
	if (json_get_object(reply, "parameters", &v) < 0)
		return NULL;
	for (; *path; path++) {
		if (!YAJL_IS_OBJECT(v))
			return NULL;
		v = yajl_tree_get(v, (const char *[]){*path, NULL}, yajl_t_any);
		if (!v)
			return NULL;
	}
	return v;
}

bool bv_is_string(yajl_val v, const char *want)
{
	return v && YAJL_IS_STRING(v) && v->u.string && strcmp(v->u.string, want) == 0;
}
