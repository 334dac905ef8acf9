/*
 * libFuzzer target for proto/varlink.c, the server that every local client
 * of bangerd talks to and none is trusted by. Each input is a script for a
 * few clients of one real server on a real event_base, each connected by a
 * socketpair through varlink_server_add_connection(): bytes in chunks the
 * input chooses, fds passed along with them (SCM_RIGHTS), turns of the event
 * loop in between, readers and admins, tight limits or bangerd's, clients
 * that stop reading their replies, half-close or vanish. Input layout:
 * fuzz_varlink_input.h.
 *
 * Besides the sanitizers, the server's promises are checked here, so that
 * breaking one is a crash: every reply is one JSON object of the Varlink
 * reply shape; every call ends exactly once, a cancelled one included (the
 * server's count of calls in flight matches the calls this file has open,
 * after every turn of the loop); a connection is admitted exactly when the
 * limits say so; the unread output it counts is the output there is, and
 * with every client gone nothing is counted; an fd that came with a call is
 * owned once and arrives close-on-exec; nothing outlives the input: no
 * memory (LeakSanitizer) and no fd (the set in /proc/self/fd, before and after).
 *
 * io.banger.Fuzz is this file's own interface: a method that answers at
 * once, one that answers from a timer, a streaming one and one that takes an
 * fd. org.varlink.service is the server's. libFuzzer provides main().
 */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "closer.h"
#include "fdpass.h"
#include "fuzz_varlink_input.h"
#include "json.h"
#include "log.h"
#include "fuzz_invariant.h"
#include "macro.h"
#include "varlink.h"

#define FUZZ_IFACE "io.banger.Fuzz"

#define LATER_DEFAULT_TICKS    1
#define LATER_MAX_TICKS	       3
#define STREAM_DEFAULT_REPLIES 2
#define STREAM_MAX_REPLIES     4

/* Bounds that keep one input fast whatever it asks for. */
#define FUZZ_MAX_CONNECTIONS_PER_INPUT 16
#define FUZZ_SEND_RETRY_TURNS	       64
#define FUZZ_FINAL_TURNS	       64
#define FUZZ_IDLE_TURNS		       3
#define FUZZ_SMALL_SNDBUF_BYTES	       4096
#define FUZZ_READ_CHUNK_BYTES	       65536
#define FUZZ_FD_SET_BITS	       4096 /* fds an input may find open (RLIMIT_NOFILE is 1024) */

struct fd_set_bits {
	uint64_t bits[FUZZ_FD_SET_BITS / 64];
};

int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char fuzz_description[] =
    "# The fuzz target's own interface (tests/fuzz/fuzz_varlink_server.c).\n"
    "interface io.banger.Fuzz\n"
    "\n"
    "# Answers at once with the parameters it was given.\n"
    "method Echo(value: ?object) -> (value: ?object)\n"
    "\n"
    "# Answers after `ticks` turns of the event loop (default 1, at most 3).\n"
    "method Later(ticks: ?int) -> (ticks: int)\n"
    "\n"
    "# Needs \"more\": `count` replies that continue (default 2, at most 4), then\n"
    "# a final one; all from the call if `now`, else one per turn of the loop.\n"
    "method Stream(count: ?int, now: ?bool) -> (index: int)\n"
    "\n"
    "# Takes the fd at `index` (default 0) that came with the call, and closes it.\n"
    "method TakeFd(index: ?int) -> (kind: string)\n"
    "\n"
    "error NoFd (index: int)\n"
    "error Cancelled ()\n";

struct fuzz_client {
	int fd;		  /* our end of the socketpair; -1 when not connected */
	struct event *ev; /* readable: its replies are read in the turn they arrive */
	struct fuzz_run *run;
	bool reading;	 /* false: replies stay in the socket, and the server's output backs up */
	bool eof;	 /* the server closed its end and all it wrote is read */
	bool write_shut; /* we said all we had to say */
	bool peer_gone;	 /* the server hung up: nothing more to send */
	char *partial;	 /* the start of a reply whose NUL has not arrived yet */
	size_t partial_len;
	size_t partial_cap;
};

enum pending_kind {
	PENDING_LATER,
	PENDING_STREAM,
};

/* A call of ours that answers from a timer. */
struct pending_call {
	struct fuzz_run *run;
	struct varlink_call *call;
	struct event *timer;
	enum pending_kind kind;
	int64_t left; /* Later: turns still to wait; Stream: continued replies still to send */
	int64_t sent; /* Later: the turns it was asked to wait; Stream: replies sent so far */
	LIST_ENTRY(pending_call) link;
};

/* Everything one input owns; the server's userdata. */
struct fuzz_run {
	struct event_base *base;
	struct varlink_server *server;
	struct fuzz_client clients[FUZZ_VARLINK_MAX_CLIENTS];
	size_t current;
	unsigned connections;
	size_t sent_bytes;
	size_t sent_messages; /* NULs sent */
	size_t reply_bytes;   /* read from the server, all clients */
	uint8_t setup;	      /* byte 0 of the input */
	struct varlink_limits limits;
	bool connecting_admin; /* what is_admin says of the connection being added */
	uint64_t last_call_id;
	size_t n_pending;
	LIST_HEAD(, pending_call) pending;
	unsigned long fds_closing_at_free; /* for the fd invariant's failure message */
	size_t connections_at_free;
	size_t fds_before_free;
};

static const struct timeval next_turn = {0, 0};

/* Set once, before the first input. */
static struct {
	int proc_fd;  /* /proc/self/fd */
	bool verbose; /* FUZZ_VARLINK_VERBOSE=1: print every reply and the server's debug log */
	uint8_t *repeat_buffer; /* the largest REPEAT, allocated once (fresh pages cost) */
} fuzz_process;

/* --- replies the server writes ---------------------------------------- */

/* One reply as a client reads it: a JSON object with Varlink's reply members. */
static void check_reply(const char *text, size_t len)
{
	char why[256];
	_cleanup_(yajl_tree_freep) yajl_val reply = NULL;
	yajl_val params;
	const char *error = NULL;
	bool continues = false;

	if (fuzz_process.verbose)
		fprintf(stderr, "reply: %.*s\n", len > 400 ? 400 : (int)len, text);
	if (json_parse(text, JSON_MAX_DEPTH, &reply, why, sizeof(why)) < 0) {
		fprintf(stderr,
			"the server sent a reply that is not JSON (%s), %zu bytes: %.256s\n", why,
			len, text);
		abort();
	}
	INVARIANT(YAJL_IS_OBJECT(reply));
	INVARIANT(json_unknown_key(reply, (const char *const[]){"parameters", "error", "continues",
								NULL}) == NULL);
	INVARIANT(json_get_object(reply, "parameters", &params) == 0);
	int r = json_get_string(reply, "error", &error);
	INVARIANT(r == 0 || r == -ENOENT);
	INVARIANT(r == -ENOENT || strlen(error) > 0);
	r = json_get_bool(reply, "continues", &continues);
	INVARIANT(r == -ENOENT || (r == 0 && continues && !error));
}

static void client_take_replies(struct fuzz_client *cl, const char *buf, size_t len)
{
	while (len > 0) {
		const char *nul = memchr(buf, '\0', len);
		size_t n = nul ? (size_t)(nul - buf) + 1 : len;
		if (cl->partial_len + n > cl->partial_cap) {
			size_t cap = cl->partial_cap ? cl->partial_cap : 4096;
			while (cap < cl->partial_len + n)
				cap *= 2;
			cl->partial = realloc(cl->partial, cap);
			INVARIANT(cl->partial != NULL);
			cl->partial_cap = cap;
		}
		memcpy(cl->partial + cl->partial_len, buf, n);
		cl->partial_len += n;
		if (nul) {
			check_reply(cl->partial, cl->partial_len - 1);
			cl->partial_len = 0;
		}
		buf += n;
		len -= n;
	}
}

/* Read whatever the server wrote, so that it never blocks on us unless we choose; bytes read. */
static size_t client_drain(struct fuzz_client *cl)
{
	static char buf[FUZZ_READ_CHUNK_BYTES];
	size_t total = 0;

	while (cl->fd >= 0 && cl->reading && !cl->eof) {
		ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			client_take_replies(cl, buf, (size_t)n);
			total += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* EOF, EAGAIN, or ECONNRESET after the server dropped unread input. */
		INVARIANT(n == 0 || errno == EAGAIN || errno == ECONNRESET);
		if (n != 0 && errno == EAGAIN)
			break;
		cl->eof = true; /* nothing more will come: stop asking */
		if (cl->ev)
			event_del(cl->ev);
	}
	return total;
}

/*
 * A client reads from the event loop, as a real one would: in the turn its replies arrive,
 * and only when there are some (a recv per client per turn was a third of the run's
 * system calls).
 */
static void client_readable(evutil_socket_t fd, short what, void *arg)
{
	struct fuzz_client *cl = arg;
	(void)fd;
	(void)what;
	cl->run->reply_bytes += client_drain(cl);
}

static void client_set_reading(struct fuzz_client *cl, bool reading)
{
	cl->reading = reading;
	if (!cl->ev || cl->eof)
		return;
	INVARIANT((reading ? event_add(cl->ev, NULL) : event_del(cl->ev)) == 0);
}

/* --- the event loop ---------------------------------------------------- */

/*
 * One pass of the loop: what is ready runs, and a timer armed meanwhile waits
 * for the next turn. (EVLOOP_NONBLOCK alone would go on while anything is
 * active, and a call answering from a timer would always be done in one turn.)
 */
static void run_turn(struct fuzz_run *run)
{
	struct varlink_stats stats;

	INVARIANT(event_base_loop(run->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) >= 0);
	/* Between turns no handler runs: every call in flight is one of ours waiting. */
	varlink_server_stats(run->server, &stats);
	INVARIANT(stats.calls_in_flight == run->n_pending);
	INVARIANT(stats.connections <= run->connections);
	/* The count the output limits go by is the bytes really waiting. */
	INVARIANT(stats.output_bytes == varlink_server_pending_output(run->server));
}

static void run_turns(struct fuzz_run *run, unsigned turns)
{
	for (unsigned i = 0; i < turns; i++)
		run_turn(run);
}

/* --- io.banger.Fuzz ----------------------------------------------------- */

static yajl_gen params_int(const char *key, int64_t value)
{
	yajl_gen g = varlink_params_begin();
	INVARIANT(g != NULL);
	json_gen_kv_int(g, key, value);
	return varlink_params_end(g);
}

static yajl_gen params_string(const char *key, const char *value)
{
	yajl_gen g = varlink_params_begin();
	INVARIANT(g != NULL);
	json_gen_kv_string(g, key, value);
	return varlink_params_end(g);
}

/* What the server promises about a call it hands to a method. */
static void check_new_call(struct fuzz_run *run, struct varlink_call *c, const char *method)
{
	const struct varlink_peer *peer = varlink_call_peer(c);
	char full[64];

	snprintf(full, sizeof(full), FUZZ_IFACE ".%s", method);
	INVARIANT(strcmp(varlink_call_method(c), full) == 0);
	INVARIANT(varlink_call_connected(c));
	INVARIANT(peer->uid == getuid() && peer->gid == getgid() && peer->pid == getpid());
	INVARIANT(varlink_call_nfds(c) <= VARLINK_MAX_FDS_PER_MSG);
	INVARIANT(varlink_call_id(c) > run->last_call_id);
	run->last_call_id = varlink_call_id(c);
}

/* An optional integer parameter within [min, max]: 0 with *out set, or -EINVAL. */
static int param_int(yajl_val params, const char *key, int64_t min, int64_t max, int64_t absent,
		     int64_t *out)
{
	int r = json_get_int(params, key, out);
	if (r == -ENOENT) {
		*out = absent;
		return 0;
	}
	if (r < 0 || *out < min || *out > max)
		return -EINVAL;
	return 0;
}

static void pending_free(struct pending_call *p)
{
	event_free(p->timer);
	LIST_REMOVE(p, link);
	p->run->n_pending--;
	free(p);
}

static void pending_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pending_call *p = arg;
	(void)fd;
	(void)what;

	if (p->left > 0) {
		p->left--;
		if (p->kind == PENDING_STREAM) {
			/* The client may be gone: the reply is then dropped and the cancel comes.
			 */
			varlink_reply(p->call, params_int("index", p->sent), true);
			p->sent++;
		}
		INVARIANT(evtimer_add(p->timer, &next_turn) == 0);
		return;
	}
	struct varlink_call *c = p->call;
	yajl_gen g =
	    p->kind == PENDING_STREAM ? params_int("index", p->sent) : params_int("ticks", p->sent);
	/* Freed first: the final reply may dispatch the next call, which may be ours again. */
	pending_free(p);
	varlink_reply(c, g, false);
}

/* The client left with the call open: end it anyway, as every method must. */
static void pending_cancel(struct varlink_call *c, void *ud)
{
	struct pending_call *p = ud;

	INVARIANT(p->call == c);
	INVARIANT(!varlink_call_connected(c));
	pending_free(p);
	varlink_error(c, FUZZ_IFACE ".Cancelled", NULL);
}

static void pending_start(struct fuzz_run *run, struct varlink_call *c, enum pending_kind kind,
			  int64_t left)
{
	struct pending_call *p = calloc(1, sizeof(*p));
	INVARIANT(p != NULL);
	p->run = run;
	p->call = c;
	p->kind = kind;
	p->left = left;
	p->sent = kind == PENDING_LATER ? left : 0;
	p->timer = evtimer_new(run->base, pending_tick, p);
	INVARIANT(p->timer != NULL);
	INVARIANT(evtimer_add(p->timer, &next_turn) == 0);
	LIST_INSERT_HEAD(&run->pending, p, link);
	run->n_pending++;
	varlink_call_on_cancel(c, pending_cancel, p);
}

static void method_echo(struct varlink_call *c, yajl_val params, void *userdata)
{
	check_new_call(userdata, c, "Echo");
	yajl_gen g = json_gen_new();
	INVARIANT(g != NULL);
	json_gen_value(g, params);
	varlink_reply(c, g, false);
}

static void method_later(struct varlink_call *c, yajl_val params, void *userdata)
{
	const char *unknown = json_unknown_key(params, (const char *const[]){"ticks", NULL});
	int64_t ticks;

	check_new_call(userdata, c, "Later");
	if (unknown) {
		varlink_error_invalid_parameter(c, unknown);
		return;
	}
	if (param_int(params, "ticks", 0, LATER_MAX_TICKS, LATER_DEFAULT_TICKS, &ticks) < 0) {
		varlink_error_invalid_parameter(c, "ticks");
		return;
	}
	pending_start(userdata, c, PENDING_LATER, ticks);
}

static void method_stream(struct varlink_call *c, yajl_val params, void *userdata)
{
	const char *unknown = json_unknown_key(params, (const char *const[]){"count", "now", NULL});
	int64_t count;
	bool now;

	check_new_call(userdata, c, "Stream");
	if (unknown) {
		varlink_error_invalid_parameter(c, unknown);
		return;
	}
	if (param_int(params, "count", 0, STREAM_MAX_REPLIES, STREAM_DEFAULT_REPLIES, &count) < 0) {
		varlink_error_invalid_parameter(c, "count");
		return;
	}
	int r = json_get_bool(params, "now", &now);
	if (r == -ENOENT)
		now = false;
	else if (r < 0) {
		varlink_error_invalid_parameter(c, "now");
		return;
	}
	if (!varlink_call_more(c)) {
		varlink_error(c, "org.varlink.service.ExpectedMore", NULL);
		return;
	}
	if (!now) {
		pending_start(userdata, c, PENDING_STREAM, count);
		return;
	}
	for (int64_t i = 0; i < count; i++)
		varlink_reply(c, params_int("index", i), true);
	varlink_reply(c, params_int("index", count), false);
}

static void method_take_fd(struct varlink_call *c, yajl_val params, void *userdata)
{
	const char *unknown = json_unknown_key(params, (const char *const[]){"index", NULL});
	struct stat st;
	int64_t index;

	check_new_call(userdata, c, "TakeFd");
	if (unknown) {
		varlink_error_invalid_parameter(c, unknown);
		return;
	}
	/* One past the most a call may carry, on purpose: that index never has an fd. */
	if (param_int(params, "index", 0, VARLINK_MAX_FDS_PER_MSG, 0, &index) < 0) {
		varlink_error_invalid_parameter(c, "index");
		return;
	}
	_cleanup_close_ int fd = varlink_call_take_fd(c, (size_t)index);
	if (fd < 0) {
		varlink_error(c, FUZZ_IFACE ".NoFd", params_int("index", index));
		return;
	}
	INVARIANT((size_t)index < varlink_call_nfds(c));
	INVARIANT(varlink_call_take_fd(c, (size_t)index) == -1); /* owned once */
	int flags = fcntl(fd, F_GETFD);
	INVARIANT(flags >= 0 && (flags & FD_CLOEXEC));
	/* Only /dev/null and pipe ends are ever passed (client_open_fds). */
	INVARIANT(fstat(fd, &st) == 0);
	INVARIANT(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode));
	varlink_reply(c, params_string("kind", S_ISFIFO(st.st_mode) ? "fifo" : "char"), false);
}

static const struct varlink_method fuzz_methods[] = {
    {"Echo", method_echo, 0},
    {"Later", method_later, 0},
    {"Stream", method_stream, 0},
    {"TakeFd", method_take_fd, VARLINK_METHOD_TAKES_FDS},
};

static const struct varlink_interface fuzz_interface = {
    .name = FUZZ_IFACE,
    .description = fuzz_description,
    .methods = fuzz_methods,
    .n_methods = ELEMENTSOF(fuzz_methods),
};

static const struct varlink_server_info fuzz_info = {
    .vendor = "banger",
    .product = "fuzz_varlink_server",
    .version = "0",
    .url = "https://example.invalid/banger",
};

/* --- clients ------------------------------------------------------------ */

/* Whether the server must take one more connection, from what varlink.h promises. */
static bool admission_expected(struct fuzz_run *run, bool admin)
{
	const struct varlink_limits *l = &run->limits;
	struct varlink_stats stats;

	varlink_server_stats(run->server, &stats);
	if (admin)
		return stats.connections < l->max_connections;
	/* Every connection is ours, so all of them count against our uid. */
	size_t for_readers =
	    l->max_connections > l->reserved_admin ? l->max_connections - l->reserved_admin : 0;
	return stats.connections < for_readers && stats.connections < l->max_per_uid;
}

static bool fuzz_is_admin(const struct varlink_peer *peer, void *ud)
{
	struct fuzz_run *run = ud;

	INVARIANT(peer->uid == getuid() && peer->pid == getpid());
	return run->connecting_admin;
}

/* A refused client keeps its end: it finds the server gone, as a real one would. */
static void client_connect(struct fuzz_run *run, size_t slot)
{
	struct fuzz_client *cl = &run->clients[slot];
	int sv[2];

	if (run->connections >= FUZZ_MAX_CONNECTIONS_PER_INPUT)
		return;
	INVARIANT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	if (run->setup & FUZZ_VARLINK_SETUP_SMALL_SNDBUF) {
		int bytes = FUZZ_SMALL_SNDBUF_BYTES;
		INVARIANT(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) == 0);
	}
	*cl = (struct fuzz_client){
	    .fd = sv[0], .run = run, .partial = cl->partial, .partial_cap = cl->partial_cap};
	cl->ev = event_new(run->base, cl->fd, EV_READ | EV_PERSIST, client_readable, cl);
	INVARIANT(cl->ev != NULL);
	client_set_reading(cl, true);
	run->connecting_admin = fuzz_varlink_setup_admin(run->setup, slot);
	bool expected = admission_expected(run, run->connecting_admin);
	int r = varlink_server_add_connection(run->server, sv[1]);
	INVARIANT(r == 0 || r == -EUSERS);
	INVARIANT((r == 0) == expected);
	run->connections++;
}

/* Our end must still be ours: a server that closed it would have closed a stranger's fd. */
static void client_close(struct fuzz_client *cl)
{
	if (cl->fd < 0)
		return;
	INVARIANT(fcntl(cl->fd, F_GETFD) >= 0);
	event_free(cl->ev);
	cl->ev = NULL;
	close(cl->fd);
	cl->fd = -1;
}

static void client_open_fds(int *fds, size_t nfds)
{
	for (size_t i = 0; i < nfds; i += 2) {
		int pipe_fds[2];
		if (i + 1 < nfds) {
			INVARIANT(pipe2(pipe_fds, O_CLOEXEC) == 0);
			fds[i] = pipe_fds[0];
			fds[i + 1] = pipe_fds[1];
		} else {
			fds[i] = open("/dev/null", O_RDWR | O_CLOEXEC);
			INVARIANT(fds[i] >= 0);
		}
	}
}

/* How much of a chunk fits what is left of this input's bytes and messages. */
static size_t send_budget(struct fuzz_run *run, const uint8_t *bytes, size_t len)
{
	if (len > FUZZ_VARLINK_MAX_SENT_BYTES - run->sent_bytes)
		len = FUZZ_VARLINK_MAX_SENT_BYTES - run->sent_bytes;
	for (const uint8_t *p = bytes, *end = bytes + len; (p = memchr(p, '\0', end - p)); p++) {
		if (run->sent_messages == FUZZ_VARLINK_MAX_MESSAGES)
			return (size_t)(p - bytes);
		run->sent_messages++;
	}
	return len;
}

/*
 * Write bytes, with fds on the first of them (a stream socket carries no fds
 * without a byte). A full socket gets turns of the loop, a bounded number:
 * a server that stopped reading for good makes us drop the rest.
 */
static void client_send(struct fuzz_run *run, struct fuzz_client *cl, const uint8_t *bytes,
			size_t len, size_t nfds)
{
	int fds[VARLINK_MAX_FDS_PER_MSG + 1];
	union fdpass_control control;
	size_t done = 0;
	bool attach = nfds > 0;

	if (cl->fd < 0 || cl->write_shut || cl->peer_gone)
		return;
	len = send_budget(run, bytes, len);
	if (len == 0)
		return;
	INVARIANT(nfds <= ELEMENTSOF(fds));
	client_open_fds(fds, nfds);

	for (unsigned retries = 0; done < len && retries < FUZZ_SEND_RETRY_TURNS;) {
		struct iovec iov = {.iov_base = (void *)(bytes + done), .iov_len = len - done};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		fdpass_control_fill(&msg, &control, fds, done == 0 && attach ? nfds : 0);
		ssize_t n = sendmsg(cl->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			done += (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			run_turn(run);
			retries++;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == ETOOMANYREFS || errno == EPERM) && attach) {
			/*
			 * Too many fds in flight for this user, or (Linux 6.16+) the server
			 * set SO_PASSRIGHTS off for a client that is no admin: the bytes alone.
			 */
			attach = false;
		} else {
			INVARIANT(n < 0 && (errno == EPIPE || errno == ECONNRESET));
			cl->peer_gone = true;
			break;
		}
	}
	/* The kernel holds its own references to what it carries. */
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);
	run->sent_bytes += done;
}

/* --- the script --------------------------------------------------------- */

struct input {
	const uint8_t *data;
	size_t size;
	size_t pos;
};

static bool input_u8(struct input *in, uint8_t *out)
{
	if (in->pos >= in->size)
		return false;
	*out = in->data[in->pos++];
	return true;
}

/* Up to want bytes: fewer at the end of the input. */
static size_t input_bytes(struct input *in, size_t want, const uint8_t **out)
{
	size_t n = in->size - in->pos < want ? in->size - in->pos : want;
	*out = in->data + in->pos;
	in->pos += n;
	return n;
}

static void step_repeat(struct fuzz_run *run, struct fuzz_client *cl, struct input *in, size_t nfds)
{
	uint8_t pattern_byte = 0, size_byte = 0;
	const uint8_t *pattern;

	input_u8(in, &pattern_byte);
	input_u8(in, &size_byte);
	size_t pattern_len =
	    input_bytes(in, (pattern_byte & FUZZ_VARLINK_REPEAT_PATTERN_MASK) + 1u, &pattern);
	size_t size = fuzz_varlink_repeat_size(size_byte);
	if (size > FUZZ_VARLINK_MAX_SENT_BYTES - run->sent_bytes)
		size = FUZZ_VARLINK_MAX_SENT_BYTES - run->sent_bytes;
	if (pattern_len == 0 || size == 0)
		return;
	/* The pattern once, then what is filled so far doubled: a few copies, not a million. */
	uint8_t *bytes = fuzz_process.repeat_buffer;
	size_t filled = pattern_len < size ? pattern_len : size;
	memcpy(bytes, pattern, filled);
	while (filled < size) {
		size_t n = filled < size - filled ? filled : size - filled;
		memcpy(bytes + filled, bytes, n);
		filled += n;
	}
	client_send(run, cl, bytes, size, nfds);
}

static void step(struct fuzz_run *run, uint8_t op_byte, struct input *in)
{
	struct fuzz_client *cl = &run->clients[run->current];
	const uint8_t *bytes;
	uint8_t lo = 0, hi = 0;
	size_t len;

	switch (fuzz_varlink_op(op_byte)) {
	case FUZZ_VARLINK_SEND:
		input_u8(in, &lo);
		len = input_bytes(in, lo, &bytes);
		client_send(run, cl, bytes, len, fuzz_varlink_nfds(op_byte));
		break;
	case FUZZ_VARLINK_SEND_LONG:
		input_u8(in, &lo);
		input_u8(in, &hi);
		len = input_bytes(in, (size_t)lo | (size_t)hi << 8, &bytes);
		client_send(run, cl, bytes, len, fuzz_varlink_nfds(op_byte));
		break;
	case FUZZ_VARLINK_REPEAT:
		step_repeat(run, cl, in, fuzz_varlink_nfds(op_byte));
		break;
	case FUZZ_VARLINK_TURN:
		run_turn(run);
		break;
	case FUZZ_VARLINK_READING:
		client_set_reading(cl, !cl->reading);
		break;
	case FUZZ_VARLINK_CLOSE_IDLE:
		varlink_server_close_idle(run->server);
		break;
	case FUZZ_VARLINK_HANGUP:
		input_u8(in, &lo);
		if (lo & FUZZ_VARLINK_HANGUP_CLOSE) {
			client_close(cl);
		} else if (cl->fd >= 0 && !cl->write_shut) {
			INVARIANT(shutdown(cl->fd, SHUT_WR) == 0);
			cl->write_shut = true;
		}
		break;
	case FUZZ_VARLINK_CLIENT:
		run->current = (run->current + 1) % FUZZ_VARLINK_MAX_CLIENTS;
		if (run->clients[run->current].fd < 0)
			client_connect(run, run->current);
		break;
	}
	run_turns(run, fuzz_varlink_turns(op_byte));
}

struct fd_set_bits;
static size_t open_fds(struct fd_set_bits *set);

/*
 * The clients say they are done and read everything; the server gets turns
 * until it has closed every connection and ended every call, or until turns
 * stop moving anything (a partial message keeps its connection open for
 * seconds), or until the bound.
 */
static void run_finish(struct fuzz_run *run)
{
	struct varlink_stats stats;

	for (size_t i = 0; i < FUZZ_VARLINK_MAX_CLIENTS; i++) {
		struct fuzz_client *cl = &run->clients[i];
		client_set_reading(cl, true);
		if (cl->fd >= 0 && !cl->write_shut) {
			INVARIANT(shutdown(cl->fd, SHUT_WR) == 0);
			cl->write_shut = true;
		}
	}
	for (unsigned turn = 0, idle = 0; turn < FUZZ_FINAL_TURNS && idle < FUZZ_IDLE_TURNS;
	     turn++) {
		struct varlink_stats before;
		size_t read_before = run->reply_bytes;
		varlink_server_stats(run->server, &before);
		run_turn(run); /* at least one: it reaps what the last step closed */
		varlink_server_stats(run->server, &stats);
		if (stats.connections == 0 && stats.calls_in_flight == 0)
			break;
		bool moved = run->reply_bytes != read_before ||
			     stats.connections != before.connections || stats.calls != before.calls;
		idle = moved || run->n_pending > 0 ? 0 : idle + 1;
	}

	/* With every client gone, nothing of theirs may still be counted against the limits. */
	varlink_server_stats(run->server, &stats);
	if (stats.connections == 0)
		INVARIANT(stats.output_bytes == 0 && stats.input_bytes == 0 &&
			  stats.calls_in_flight == 0);

	/* What the failure message of the fd invariant reports. */
	run->fds_closing_at_free = varlink_server_fds_closing(run->server);
	run->connections_at_free = stats.connections;
	struct fd_set_bits scratch;
	run->fds_before_free = open_fds(&scratch);
	/* Freeing the server ends what is still open: every cancel callback runs. */
	unsigned long abandoned = fd_closer_abandoned();
	varlink_server_free(run->server);
	run->server = NULL;
	/* Nothing here can make a close hang (pipes, /dev/null): none may be judged stuck. */
	if (fd_closer_abandoned() != abandoned) {
		fprintf(stderr, "the server's closer judged a close stuck and left %lu fds to it\n",
			fd_closer_abandoned() - abandoned);
		abort();
	}
	INVARIANT(run->n_pending == 0);
	INVARIANT(LIST_EMPTY(&run->pending));
	for (size_t i = 0; i < FUZZ_VARLINK_MAX_CLIENTS; i++) {
		client_drain(&run->clients[i]);
		client_close(&run->clients[i]);
		free(run->clients[i].partial);
	}
	event_base_free(run->base);
}

/*
 * The open fds (those under FUZZ_FD_SET_BITS; a higher one fails the input), read from
 * /proc/self/fd through a descriptor kept open: opendir() costs 32 KiB a call. Returns
 * how many there are.
 */
static size_t open_fds(struct fd_set_bits *set)
{
	char buf[4096];
	size_t n = 0;
	long got;

	memset(set, 0, sizeof(*set));
	INVARIANT(lseek(fuzz_process.proc_fd, 0, SEEK_SET) == 0);
	while ((got = syscall(SYS_getdents64, fuzz_process.proc_fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < got;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);
			off += e->d_reclen;
			if (e->d_name[0] == '.')
				continue;
			unsigned long fd = strtoul(e->d_name, NULL, 10);
			INVARIANT(fd < FUZZ_FD_SET_BITS);
			set->bits[fd / 64] |= 1ull << (fd % 64);
			n++;
		}
	}
	INVARIANT(got == 0);
	return n;
}

/* Fail, naming each fd open now that was not before the input (and what it is). */
static void check_no_new_fd(const struct fd_set_bits *before, const struct fuzz_run *run)
{
	struct fd_set_bits now;
	char path[64], target[256];
	bool leaked = false;

	open_fds(&now);
	for (unsigned word = 0; word < ELEMENTSOF(now.bits); word++) {
		for (uint64_t new = now.bits[word] & ~before->bits[word]; new; new &= new - 1) {
			unsigned fd = word * 64 + (unsigned)__builtin_ctzll(new);
			snprintf(path, sizeof(path), "/proc/self/fd/%u", fd);
			ssize_t n = readlink(path, target, sizeof(target) - 1);
			target[n > 0 ? n : 0] = '\0';
			fprintf(stderr, "fd %u left open by the input: %s\n", fd, target);
			leaked = true;
		}
	}
	if (leaked)
		fprintf(stderr,
			"before freeing the server: %zu fds open, %lu of them in its closer, "
			"%zu connections\n",
			run->fds_before_free, run->fds_closing_at_free, run->connections_at_free);
	INVARIANT(!leaked);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* As bangerd's main does: a client that hangs up must not kill the server. */
	signal(SIGPIPE, SIG_IGN);

	fuzz_process.proc_fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	INVARIANT(fuzz_process.proc_fd >= 0);
	fuzz_process.verbose = getenv("FUZZ_VARLINK_VERBOSE") != NULL;
	/* Verbose, the server says why it closes each connection too. */
	log_set_level(fuzz_process.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERR);
	fuzz_process.repeat_buffer = malloc(fuzz_varlink_repeat_size(UINT8_MAX));
	INVARIANT(fuzz_process.repeat_buffer != NULL);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {.data = data, .size = size};
	struct fuzz_run run = {.current = 0};
	uint8_t setup = 0, op_byte;

	struct fd_set_bits fds_before;
	open_fds(&fds_before);
	LIST_INIT(&run.pending);
	for (size_t i = 0; i < FUZZ_VARLINK_MAX_CLIENTS; i++)
		run.clients[i].fd = -1;
	input_u8(&in, &setup);
	run.setup = setup;

	/* As bangerd's main sets them up, unless the input says otherwise. */
	struct event_config *config = event_config_new();
	INVARIANT(config != NULL);
	if (!(setup & FUZZ_VARLINK_SETUP_NO_MAX_DISPATCH))
		INVARIANT(event_config_set_max_dispatch_interval(
			      config, NULL, FUZZ_VARLINK_MAX_DISPATCH_CALLBACKS, 1) == 0);
	run.base = event_base_new_with_config(config);
	event_config_free(config);
	INVARIANT(run.base != NULL);
	if (!(setup & FUZZ_VARLINK_SETUP_NO_PRIORITIES))
		INVARIANT(event_base_priority_init(run.base, VARLINK_PRIORITIES) == 0);
	run.server = varlink_server_new(run.base, &fuzz_info, &run);
	INVARIANT(run.server != NULL);
	if (setup & FUZZ_VARLINK_SETUP_TIGHT_LIMITS)
		fuzz_varlink_tight_limits(&run.limits);
	else
		varlink_limits_default(&run.limits);
	if (setup & FUZZ_VARLINK_SETUP_NO_STALL_WAIT)
		run.limits.stall_timeout_ms = 0;
	varlink_server_set_limits(run.server, &run.limits, fuzz_is_admin, &run);
	INVARIANT(varlink_server_add_interface(run.server, &fuzz_interface) == 0);
	client_connect(&run, 0);

	while (input_u8(&in, &op_byte))
		step(&run, op_byte, &in);
	run_finish(&run);

	/* Nothing outlives the input: no fd it did not find open (ours, libFuzzer's). */
	check_no_new_fd(&fds_before, &run);
	return 0;
}
