/*
 * The load generator of the api benchmark. bench_api.py sets up bangerd, a
 * VM on a live stub firecracker and the redis baseline, runs this once per
 * (method, concurrency) and prints the comparison; this program only drives
 * bangerd and measures.
 *
 * It drives bangerd the way redis-benchmark drives redis, so that the ratio
 * compares servers and not clients: one thread, one epoll loop, N
 * connections, each a closed loop with exactly one call in flight. Like
 * redis-benchmark's ae loop, which sends a client's next request only on
 * the loop's next turn, it sends the next calls after handling every reply
 * of one epoll_wait, and starts a call's clock when it writes it. Every
 * reply is checked: the first against what the orchestrator knows (the
 * stub's pid for GetHandles, "alive" for IsAlive), every later one byte for
 * byte against the first. That costs a memcmp and means an error or a wrong
 * reply can never count as throughput. Both methods are answered from the
 * cache, so every reply to the same call must be identical.
 *
 * Prints one line of key=value figures on stdout for the orchestrator.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench_stats.h"
#include "bench_varlink.h"
#include "json.h"
#include "testlib.h"

#define IFACE "io.banger.Handles."

#define MAX_CLIENTS	    1000
#define DEFAULT_WARMUP_MS   500
#define DEFAULT_DURATION_MS 3000
/* A closed loop that hears nothing for this long has lost a reply: a bug, not slowness. */
#define REPLY_TIMEOUT_MS 10000
#define EPOLL_BATCH	 64

struct options {
	const char *socket;
	const char *method; /* GetHandles or IsAlive */
	const char *id;
	size_t clients;
	long pid; /* the stub firecracker GetHandles must name */
	uint64_t warmup_ns, duration_ns;
};

/* The run: the call every client repeats, the reply it must get, and what was measured. */
struct load {
	char *request;
	size_t request_len;
	char *reference; /* the first reply, checked; every later one must equal it */
	size_t reference_len;
	uint64_t measure_from, measure_until;
	uint64_t calls; /* completed inside the measuring window */
	struct samples latency;
};

struct client {
	struct bv_conn *conn;
	uint64_t sent_ns;
};

static long parse_number(const char *s, long min, long max, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	CHECK(errno == 0 && end != s && *end == '\0' && v >= min && v <= max,
	      "%s: want %ld..%ld, got \"%s\"", what, min, max, s);
	return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	CHECK(argc == 6 || argc == 8,
	      "usage: bench_api SOCKET GetHandles|IsAlive ID CLIENTS PID [WARMUP_MS DURATION_MS]");
	o->socket = argv[1];
	o->method = argv[2];
	o->id = argv[3];
	CHECK(strcmp(o->method, "GetHandles") == 0 || strcmp(o->method, "IsAlive") == 0,
	      "method %s: only GetHandles and IsAlive have replies that never change", o->method);
	o->clients = (size_t)parse_number(argv[4], 1, MAX_CLIENTS, "CLIENTS");
	o->pid = parse_number(argv[5], 1, INT32_MAX, "PID");
	o->warmup_ns = DEFAULT_WARMUP_MS * NS_PER_MS;
	o->duration_ns = DEFAULT_DURATION_MS * NS_PER_MS;
	if (argc == 8) {
		o->warmup_ns = (uint64_t)parse_number(argv[6], 0, 600000, "WARMUP_MS") * NS_PER_MS;
		o->duration_ns =
		    (uint64_t)parse_number(argv[7], 1, 600000, "DURATION_MS") * NS_PER_MS;
	}
}

static char *build_request(const struct options *o, size_t *len)
{
	char method[128];
	snprintf(method, sizeof(method), IFACE "%s", o->method);
	yajl_gen g = bv_request_begin(method);
	json_gen_kv_string(g, "id", o->id);
	return bv_request_end(g, len);
}

/* The first reply is checked for meaning; it then becomes the reference for all others. */
static void take_reference(const struct options *o, struct load *l, struct bv_conn *c)
{
	char *reply = bv_call(c, l->request, l->request_len);
	yajl_val tree = bv_parse_success(reply, o->method);

	if (strcmp(o->method, "GetHandles") == 0) {
		yajl_val pid = bv_param(tree, (const char *[]){"handles", "pid", NULL});
		CHECK(pid && YAJL_IS_INTEGER(pid) && YAJL_GET_INTEGER(pid) == o->pid,
		      "GetHandles %s does not name pid %ld: %s", o->id, o->pid, reply);
	} else {
		yajl_val alive = bv_param(tree, (const char *[]){"alive", NULL});
		CHECK(bv_is_string(alive, "alive"), "IsAlive %s is not \"alive\": %s", o->id,
		      reply);
	}
	json_free(tree);
	l->reference = reply;
	l->reference_len = strlen(reply);
}

static void send_call(const struct load *l, struct client *cl)
{
	cl->sent_ns = now_ns();
	bv_send(cl->conn, l->request, l->request_len);
}

enum client_state { WAITING, SEND_NEXT, FINISHED };

/*
 * Read what arrived; on a complete reply, check it and count it if it
 * ended inside the window. The next call is the caller's to send.
 */
static enum client_state on_readable(struct load *l, struct client *cl)
{
	struct bv_conn *c = cl->conn;

	bv_fill(c);
	ptrdiff_t len = bv_reply_length(c);
	if (len < 0)
		return WAITING;
	uint64_t done_ns = now_ns();
	CHECK((size_t)len == l->reference_len && memcmp(c->buf, l->reference, (size_t)len) == 0,
	      "reply differs from the first one:\n  first: %s\n  now:   %s", l->reference, c->buf);
	CHECK(c->len == (size_t)len + 1, "%zu bytes after a reply to a closed-loop call",
	      c->len - (size_t)len - 1);
	bv_consume(c, (size_t)len);
	if (done_ns >= l->measure_from && done_ns < l->measure_until) {
		l->calls++;
		samples_add(&l->latency, done_ns - cl->sent_ns);
	}
	return done_ns >= l->measure_until ? FINISHED : SEND_NEXT;
}

static int watch_clients(struct client *clients, size_t n)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0, "epoll_create1: %s", strerror(errno));
	for (size_t i = 0; i < n; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &clients[i]};
		CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, clients[i].conn->fd, &ev) == 0, "epoll_ctl: %s",
		      strerror(errno));
	}
	return ep;
}

static void run_load(struct load *l, struct client *clients, size_t n)
{
	int ep = watch_clients(clients, n);
	size_t active = n;

	for (size_t i = 0; i < n; i++)
		send_call(l, &clients[i]);
	while (active > 0) {
		struct epoll_event ev[EPOLL_BATCH];
		struct client *next[EPOLL_BATCH];
		size_t nnext = 0;
		int k = epoll_wait(ep, ev, EPOLL_BATCH, REPLY_TIMEOUT_MS);
		if (k < 0 && errno == EINTR)
			continue;
		CHECK(k > 0, "%zu calls got no reply within %d ms", active, REPLY_TIMEOUT_MS);
		for (int i = 0; i < k; i++) {
			struct client *cl = ev[i].data.ptr;
			enum client_state st = on_readable(l, cl);
			if (st == SEND_NEXT)
				next[nnext++] = cl;
			if (st != FINISHED)
				continue;
			epoll_ctl(ep, EPOLL_CTL_DEL, cl->conn->fd, NULL);
			active--;
		}
		for (size_t i = 0; i < nnext; i++)
			send_call(l, next[i]);
	}
	close(ep);
}

static void print_figures(const struct load *l)
{
	double seconds = (double)(l->measure_until - l->measure_from) / (double)NS_PER_S;
	printf("calls=%llu seconds=%.3f calls_per_s=%.0f p50_us=%.1f p95_us=%.1f p99_us=%.1f "
	       "reply_bytes=%zu\n",
	       (unsigned long long)l->calls, seconds, (double)l->calls / seconds,
	       (double)samples_percentile(&l->latency, 50) / NS_PER_US,
	       (double)samples_percentile(&l->latency, 95) / NS_PER_US,
	       (double)samples_percentile(&l->latency, 99) / NS_PER_US, l->reference_len);
}

int main(int argc, char **argv)
{
	struct options o;
	struct load l = {0};

	parse_options(argc, argv, &o);
	struct client *clients = calloc(o.clients, sizeof(*clients));
	CHECK(clients, "calloc");
	for (size_t i = 0; i < o.clients; i++)
		clients[i].conn = bv_connect(o.socket);
	l.request = build_request(&o, &l.request_len);
	take_reference(&o, &l, clients[0].conn);

	l.measure_from = now_ns() + o.warmup_ns;
	l.measure_until = l.measure_from + o.duration_ns;
	run_load(&l, clients, o.clients);
	CHECK(l.calls > 0, "no call completed inside the window");
	samples_sort(&l.latency);
	print_figures(&l);

	for (size_t i = 0; i < o.clients; i++)
		bv_close(clients[i].conn);
	free(clients);
	free(l.request);
	free(l.reference);
	samples_free(&l.latency);
	return 0;
}
