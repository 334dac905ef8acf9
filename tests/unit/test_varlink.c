/*
 * proto/varlink.c, driven through varlink_server_add_connection() on a real
 * event loop: which call the fds that came over the socket belong to, and
 * error replies that name what the client sent, whatever its length.
 */
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "macro.h"
#include "testlib.h"
#include "varlink.h"

#define IFACE	    "io.banger.Test"
#define MAX_REPLIES 4

static const char description[] = "interface io.banger.Test\n"
				  "method Echo() -> ()\n"
				  "method TakeFd() -> (fds: int)\n";

/* Echo takes no fds; TakeFd counts the fds its call came with. */
static void method_echo(struct varlink_call *c, yajl_val params, void *userdata)
{
	(void)params;
	(void)userdata;
	varlink_reply(c, NULL, false);
}

static void method_take_fd(struct varlink_call *c, yajl_val params, void *userdata)
{
	(void)params;
	(void)userdata;
	size_t n = varlink_call_nfds(c);
	for (size_t i = 0; i < n; i++) {
		int fd = varlink_call_take_fd(c, i);
		CHECK(fd >= 0, "fd %zu of the call", i);
		close(fd);
	}
	yajl_gen g = varlink_params_begin();
	json_gen_kv_int(g, "fds", (long long)n);
	varlink_reply(c, varlink_params_end(g), false);
}

static const struct varlink_method methods[] = {
    {"Echo", method_echo, 0},
    {"TakeFd", method_take_fd, VARLINK_METHOD_TAKES_FDS},
};
static const struct varlink_interface iface = {IFACE, description, methods, ELEMENTSOF(methods)};
static const struct varlink_server_info info = {"banger", "test", "0", "-"};

static bool everyone_admin(const struct varlink_peer *peer, void *ud)
{
	(void)peer;
	(void)ud;
	return true;
}

struct fixture {
	struct event_base *base;
	struct varlink_server *server;
	int client;
};

static void fixture_start(struct fixture *f)
{
	int sv[2];
	struct varlink_limits limits;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
	      "socketpair");
	f->base = event_base_new();
	CHECK(f->base, "event_base_new");
	CHECK(event_base_priority_init(f->base, VARLINK_PRIORITIES) == 0, "priorities");
	f->server = varlink_server_new(f->base, &info, NULL);
	CHECK(f->server, "varlink_server_new");
	varlink_limits_default(&limits);
	varlink_server_set_limits(f->server, &limits, everyone_admin, NULL);
	CHECK(varlink_server_add_interface(f->server, &iface) == 0, "add interface");
	CHECK(varlink_server_add_connection(f->server, sv[1]) == 0, "add connection");
	f->client = sv[0];
}

static void fixture_stop(struct fixture *f)
{
	close(f->client);
	varlink_server_free(f->server);
	event_base_free(f->base);
}

/* Turn the loop until n replies have come (each NUL-terminated), or fail after 5 s. */
static size_t read_replies(struct fixture *f, char *buf, size_t size, size_t n)
{
	size_t len = 0, got = 0;
	struct timeval tick = {0, 10000};
	for (int turns = 0; got < n; turns++) {
		CHECK(turns < 500, "%zu of %zu replies after 5 s", got, n);
		event_base_loopexit(f->base, &tick);
		event_base_dispatch(f->base);
		ssize_t r;
		while ((r = recv(f->client, buf + len, size - 1 - len, MSG_DONTWAIT)) > 0) {
			for (ssize_t i = 0; i < r; i++)
				got += buf[len + (size_t)i] == '\0';
			len += (size_t)r;
		}
	}
	return len;
}

/* The i-th reply (0-based) of a buffer of NUL-terminated replies. */
static const char *reply_at(const char *buf, size_t i)
{
	while (i-- > 0)
		buf += strlen(buf) + 1;
	return buf;
}

static void send_with_fd(int sock, const char *text, int fd)
{
	CHECK(t_send_raw(sock, text, strlen(text) + 1, &fd, fd >= 0 ? 1 : 0) == 0, "send %s", text);
}

/*
 * A call pipelined ahead of one that carries a pidfd (SetHandles after GetStatus, as a
 * manager may send them) is answered normally, and the fd goes to the call it came with:
 * both are written before the server reads anything, so one read takes in both.
 */
static void test_fd_goes_to_its_own_call(void)
{
	struct fixture f;
	char buf[4096];
	fixture_start(&f);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open /dev/null");

	send_with_fd(f.client, "{\"method\":\"" IFACE ".Echo\"}", -1);
	send_with_fd(f.client, "{\"method\":\"" IFACE ".TakeFd\"}", fd);
	send_with_fd(f.client, "{\"method\":\"" IFACE ".TakeFd\"}", -1);
	close(fd);
	read_replies(&f, buf, sizeof(buf), 3);
	CHECK(strcmp(reply_at(buf, 0), "{\"parameters\":{}}") == 0, "Echo: %s", reply_at(buf, 0));
	CHECK(strcmp(reply_at(buf, 1), "{\"parameters\":{\"fds\":1}}") == 0, "TakeFd: %s",
	      reply_at(buf, 1));
	CHECK(strcmp(reply_at(buf, 2), "{\"parameters\":{\"fds\":0}}") == 0, "TakeFd: %s",
	      reply_at(buf, 2));
	fixture_stop(&f);
}

/* An fd sent with a call that takes none is refused, and the next call does not inherit it. */
static void test_fd_with_a_call_that_takes_none(void)
{
	struct fixture f;
	char buf[4096];
	fixture_start(&f);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open /dev/null");

	send_with_fd(f.client, "{\"method\":\"" IFACE ".Echo\"}", fd);
	close(fd);
	read_replies(&f, buf, sizeof(buf), 1);
	CHECK(strstr(buf, "\"error\":\"org.varlink.service.InvalidParameter\"") &&
		  strstr(buf, "file descriptors: this method takes none"),
	      "Echo with an fd: %s", buf);
	fixture_stop(&f);
}

/* InterfaceNotFound names the whole interface, however long and whatever its characters. */
static void test_unknown_interface_named_whole(void)
{
	struct fixture f;
	char buf[16384];
	char iface_name[1200] = "";
	fixture_start(&f);
	/* 400 × "é" (2 bytes each): any cut at 255 bytes would split one. */
	for (int i = 0; i < 400; i++)
		strcat(iface_name, "\xc3\xa9");
	char call[1400];
	snprintf(call, sizeof(call), "{\"method\":\"%s.Nothing\"}", iface_name);
	send_with_fd(f.client, call, -1);
	read_replies(&f, buf, sizeof(buf), 1);

	char why[256];
	yajl_val reply = NULL;
	const char *error, *named;
	CHECK(json_parse(buf, JSON_MAX_DEPTH, &reply, why, sizeof(why)) == 0, "reply %s: %s", buf,
	      why);
	yajl_val params = NULL;
	CHECK(json_get_string(reply, "error", &error) == 0 &&
		  strcmp(error, "org.varlink.service.InterfaceNotFound") == 0,
	      "error: %s", buf);
	CHECK(json_get_object(reply, "parameters", &params) == 0 &&
		  json_get_string(params, "interface", &named) == 0,
	      "parameters.interface: %.200s", buf);
	CHECK(strcmp(named, iface_name) == 0, "named %zu bytes of %zu", strlen(named),
	      strlen(iface_name));
	json_free(reply);
	fixture_stop(&f);
}

int main(void)
{
	test_fd_goes_to_its_own_call();
	test_fd_with_a_call_that_takes_none();
	test_unknown_interface_named_whole();
	return 0;
}
