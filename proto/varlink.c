/*
 * See varlink.h. Byte handling: input is read with recvmsg (so fds can come
 * along) into an evbuffer and cut at NUL; output goes through an evbuffer
 * written when the socket takes it. A connection is freed only from the
 * event loop (never under a handler's feet): closing marks it and defers.
 */
#include "varlink.h"

#include <errno.h>
#include <event2/buffer.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "closer.h"
#include "event_util.h"
#include "fdpass.h"
#include "json.h"
#include "log.h"
#include "macro.h"

#define VARLINK_READ_CHUNK	65536
#define VARLINK_READS_PER_EVENT 16
#define VARLINK_MAX_QUEUED_FDS	16
#define VARLINK_MAX_INTERFACES	8
/*
 * Freed buffers worth this much are handed back to the system (malloc_trim),
 * at most once per VARLINK_TRIM_INTERVAL_MS: a trim walks the whole heap, and
 * under a storm of dropped clients it must not run at every reap.
 */
#define VARLINK_TRIM_INTERVAL_MS	1000
#define VARLINK_TRIM_BYTES		(1024 * 1024)
#define VARLINK_REFUSAL_LOG_INTERVAL_MS 10000
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83 /* Linux 6.16: refuse SCM_RIGHTS at the socket */
#endif

static const char varlink_service_description[] =
    "# The Varlink Service Interface is provided by every varlink service. It\n"
    "# describes the service and the interfaces it implements.\n"
    "interface org.varlink.service\n"
    "\n"
    "# Get a list of all the interfaces a service provides and information\n"
    "# about the implementation.\n"
    "method GetInfo() -> (\n"
    "  vendor: string,\n"
    "  product: string,\n"
    "  version: string,\n"
    "  url: string,\n"
    "  interfaces: []string\n"
    ")\n"
    "\n"
    "# Get the description of an interface that is implemented by this service.\n"
    "method GetInterfaceDescription(interface: string) -> (description: string)\n"
    "\n"
    "# The requested interface was not found.\n"
    "error InterfaceNotFound (interface: string)\n"
    "\n"
    "# The requested method was not found\n"
    "error MethodNotFound (method: string)\n"
    "\n"
    "# The interface defines the requested method, but the service does not\n"
    "# implement it.\n"
    "error MethodNotImplemented (method: string)\n"
    "\n"
    "# One of the passed parameters is invalid.\n"
    "error InvalidParameter (parameter: string)\n"
    "\n"
    "# Client is denied access\n"
    "error PermissionDenied ()\n"
    "\n"
    "# Method is expected to be called with 'more' set to true, but wasn't\n"
    "error ExpectedMore ()\n";

struct varlink_conn;

struct varlink_call {
	struct varlink_conn *conn; /* NULL once the client is gone */
	struct varlink_server *server;
	uint64_t id;
	char *method;
	bool more;
	bool oneway;
	int fds[VARLINK_MAX_FDS_PER_MSG];
	size_t nfds;
	void (*cancel)(struct varlink_call *c, void *ud);
	void *cancel_ud;
	struct varlink_method_stats *counted; /* its method's counters, or NULL */
};

struct varlink_conn {
	struct varlink_server *server;
	int fd;
	struct varlink_peer peer;
	struct evbuffer *in;
	struct evbuffer *out;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_partial;
	struct event *ev_idle;
	struct event *ev_stall;
	struct event *ev_resume; /* the next turn of a connection that used up its call budget */
	struct evbuffer_cb_entry *out_cb;
	struct evbuffer_cb_entry *in_cb;
	/* fds received and not yet given to a call, each with the stream offset of the last
	 * byte that came with it: they belong to the message holding that byte. */
	struct queued_fd {
		int fd;
		uint64_t at;
	} fdq[VARLINK_MAX_QUEUED_FDS];
	size_t nfdq;
	uint64_t received; /* bytes read from the client so far */
	uint64_t msg_end;  /* stream offset just past the NUL of the message being dispatched */
	struct varlink_call *current;
	bool admin;	  /* may send fds; exempt from the per-uid limit */
	bool dispatching; /* inside process_input: replies must not recurse into it */
	bool read_eof;
	bool throttled;		/* too much unread output: no reading, no new calls */
	bool close_after_flush; /* a refused call's error goes out, then the connection closes */
	bool dead;
	TAILQ_ENTRY(varlink_conn) link;
};

/* Connections of one uid, for the per-uid limit. */
struct uid_count {
	uid_t uid;
	size_t n;
	UT_hash_handle hh;
};

struct varlink_server {
	struct event_base *base;
	struct varlink_server_info info;
	void *userdata;
	int listen_fd;
	struct event *ev_accept;
	struct event *ev_reap; /* frees dead connections from the loop */
	const struct varlink_interface *ifaces[VARLINK_MAX_INTERFACES];
	struct varlink_method_stats method_stats[VARLINK_MAX_INTERFACES][VARLINK_MAX_METHODS];
	size_t n_ifaces;
	TAILQ_HEAD(, varlink_conn) conns;
	TAILQ_HEAD(, varlink_conn) dead;
	struct varlink_stats stats;
	uint64_t next_call_id;
	struct varlink_limits limits;
	bool (*is_admin)(const struct varlink_peer *peer, void *ud);
	void *admin_ud;
	struct uid_count *uids;
	struct fd_closer *closer;
	uint64_t last_refusal_log_ms;
	size_t freed_bytes; /* since the last malloc_trim */
	struct event *ev_trim;
};

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval ms_timeval(unsigned ms)
{
	return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
}

/* delta +1 or -1; 0, or -ENOMEM when a new uid cannot be counted. */
static int uid_count_add(struct varlink_server *s, uid_t uid, int delta)
{
	struct uid_count *u = NULL;
	HASH_FIND(hh, s->uids, &uid, sizeof(uid), u);
	if (!u && delta > 0) {
		if (!(u = calloc(1, sizeof(*u))))
			return -ENOMEM;
		u->uid = uid;
		HASH_ADD(hh, s->uids, uid, sizeof(u->uid), u);
	}
	if (!u)
		return 0;
	u->n += (size_t)delta;
	if (u->n == 0) {
		HASH_DEL(s->uids, u);
		free(u);
	}
	return 0;
}

void varlink_limits_default(struct varlink_limits *l)
{
	*l = (struct varlink_limits){
	    .max_connections = VARLINK_DEFAULT_MAX_CONNECTIONS,
	    .reserved_admin = VARLINK_DEFAULT_RESERVED_ADMIN,
	    .max_per_uid = VARLINK_DEFAULT_MAX_PER_UID,
	    .idle_timeout_ms = VARLINK_DEFAULT_IDLE_TIMEOUT_MS,
	    .max_output_per_conn = VARLINK_DEFAULT_MAX_OUTPUT_PER_CONN,
	    .max_output_total = VARLINK_DEFAULT_MAX_OUTPUT_TOTAL,
	    .max_input_total = VARLINK_DEFAULT_MAX_INPUT_TOTAL,
	    .stall_timeout_ms = VARLINK_DEFAULT_STALL_TIMEOUT_MS,
	};
}

void varlink_server_close_fd(struct varlink_server *s, int fd)
{
	fd_closer_close(s->closer, fd);
}

unsigned long varlink_server_fds_closing(struct varlink_server *s)
{
	return fd_closer_backlog(s->closer);
}

static void conn_process_input(struct varlink_conn *conn);
static void conn_kill(struct varlink_conn *conn, const char *why);

/* --- generators --------------------------------------------------------- */

yajl_gen varlink_params_begin(void)
{
	yajl_gen g = json_gen_new();
	if (g)
		yajl_gen_map_open(g);
	return g;
}

yajl_gen varlink_params_end(yajl_gen g)
{
	if (g)
		yajl_gen_map_close(g);
	return g;
}

/* --- output ------------------------------------------------------------- */

/* Read from the client only while we may: not at EOF, not throttled, not a message behind. */
static bool conn_has_message(struct varlink_conn *conn)
{
	return evbuffer_search(conn->in, "", 1, NULL).pos >= 0;
}

/*
 * Read from the client only while we may: not at EOF, not throttled, and
 * not while a whole message already waits (the rest stays in the kernel's
 * socket buffer, not in our memory): what we hold of a client's input is
 * at most one message and one read.
 */
static void conn_update_read(struct varlink_conn *conn)
{
	/*
	 * Behind a call in flight (a Watch never ends) the next message can only wait:
	 * what may wait in our memory is then one read, not one whole message, so that
	 * connections parked behind calls cannot fill max_input_total between them.
	 */
	size_t room = conn->current ? VARLINK_READ_CHUNK : VARLINK_MAX_MESSAGE_BYTES;
	if (!conn->dead && !conn->read_eof && !conn->throttled &&
	    evbuffer_get_length(conn->in) < room && !conn_has_message(conn))
		event_add(conn->ev_read, NULL);
	else
		event_del(conn->ev_read);
}

/*
 * A client that does not read its replies is slowed first: past
 * max_output_per_conn no more of its input is read and no new call of its
 * runs; once it has taken half of it, it goes on. If it still has not,
 * stall_timeout_ms later, it is dropped.
 */
static void conn_update_throttle(struct varlink_conn *conn)
{
	const struct varlink_limits *l = &conn->server->limits;
	size_t pending = evbuffer_get_length(conn->out);
	bool was = conn->throttled;
	if (!was && pending > l->max_output_per_conn) {
		conn->throttled = true;
		struct timeval tv = ms_timeval(l->stall_timeout_ms);
		evtimer_add(conn->ev_stall, &tv);
	} else if (was && pending <= l->max_output_per_conn / 2) {
		conn->throttled = false;
		event_del(conn->ev_stall);
	}
	if (was != conn->throttled) {
		conn_update_read(conn);
		if (!conn->throttled && !conn->current && !conn->dispatching)
			conn_process_input(conn);
	}
}

static void conn_flush(struct varlink_conn *conn)
{
	while (!conn->dead && evbuffer_get_length(conn->out) > 0) {
		int n = evbuffer_write(conn->out, conn->fd);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				event_add(conn->ev_write, NULL);
				break;
			}
			conn_kill(conn, "write failed");
			return;
		}
	}
	if (conn->dead)
		return;
	bool drained = evbuffer_get_length(conn->out) == 0;
	if (drained && conn->close_after_flush)
		conn_kill(conn, NULL); /* the error that said why went out */
	else if (drained && conn->read_eof && !conn->current && evbuffer_get_length(conn->in) == 0)
		conn_kill(conn, NULL); /* the client said all it had to say, and got its answers */
	else
		conn_update_throttle(conn);
}

static void conn_send(struct varlink_conn *conn, const char *prefix, yajl_gen params,
		      const char *suffix)
{
	const struct varlink_limits *l = &conn->server->limits;
	const unsigned char *buf = (const unsigned char *)"{}";
	size_t len = 2;
	if (params && yajl_gen_get_buf(params, &buf, &len) != yajl_gen_status_ok) {
		buf = (const unsigned char *)"{}";
		len = 2;
	}
	size_t unread_before = evbuffer_get_length(conn->out);
	evbuffer_add(conn->out, prefix, strlen(prefix));
	evbuffer_add(conn->out, buf, len);
	evbuffer_add(conn->out, suffix, strlen(suffix) + 1); /* with the terminating NUL */
	/*
	 * A stream keeps producing while its client is throttled (and pipelined calls answered
	 * in one turn add up): past twice the limit, a client already behind goes. One reply
	 * to a client that has read the rest (a List of thousands of VMs) may be larger.
	 */
	size_t unread = evbuffer_get_length(conn->out);
	if (unread_before > l->max_output_per_conn && unread > 2 * l->max_output_per_conn) {
		conn->server->stats.connections_dropped++;
		conn_kill(conn, "client does not read its replies");
		return;
	}
	/*
	 * Everyone's unread replies are at the limit: a reader adding to it, unread (or with one
	 * reply that large), goes. An admin's reply may go past it: admins always get answers.
	 */
	if (!conn->admin && conn->server->stats.output_bytes > l->max_output_total &&
	    (unread_before > 0 || unread > 2 * l->max_output_per_conn)) {
		conn->server->stats.connections_dropped++;
		conn_kill(conn, "unread replies of all clients over the limit");
		return;
	}
	conn_flush(conn);
}

static void call_free(struct varlink_call *c)
{
	for (size_t i = 0; i < c->nfds; i++)
		fd_closer_close(c->server->closer, c->fds[i]);
	free(c->method);
	free(c);
}

/* The call ends: free it and let the connection go on with its next message. */
static void call_finish(struct varlink_call *c)
{
	struct varlink_conn *conn = c->conn;
	c->server->stats.calls_in_flight--;
	call_free(c);
	if (!conn)
		return;
	conn->current = NULL;
	if (conn->dead)
		return; /* the reaper frees it; nothing more to read or write */
	if (!conn->dispatching)
		conn_process_input(conn);
	if (!conn->dead)
		conn_flush(conn);
}

void varlink_reply(struct varlink_call *c, yajl_gen params, bool continues)
{
	if (c->conn && !c->conn->dead && !c->oneway)
		conn_send(c->conn, "{\"parameters\":", params,
			  continues && c->more ? ",\"continues\":true}" : "}");
	if (params)
		yajl_gen_free(params);
	if (!continues || !c->more)
		call_finish(c);
}

void varlink_error(struct varlink_call *c, const char *error, yajl_gen params)
{
	c->server->stats.errors++;
	if (c->counted)
		c->counted->errors++;
	if (c->conn && !c->conn->dead && !c->oneway) {
		char prefix[256];
		snprintf(prefix, sizeof(prefix), "{\"error\":\"%s\",\"parameters\":", error);
		conn_send(c->conn, prefix, params, "}");
	}
	if (params)
		yajl_gen_free(params);
	call_finish(c);
}

static yajl_gen params_one_string(const char *key, const char *value)
{
	yajl_gen g = varlink_params_begin();
	if (g)
		json_gen_kv_string(g, key, value);
	return varlink_params_end(g);
}

void varlink_error_invalid_parameter(struct varlink_call *c, const char *parameter)
{
	varlink_error(c, "org.varlink.service.InvalidParameter",
		      params_one_string("parameter", parameter));
}

/* --- call accessors ----------------------------------------------------- */

const struct varlink_peer *varlink_call_peer(const struct varlink_call *c)
{
	static const struct varlink_peer nobody = {.uid = (uid_t)-1, .gid = (gid_t)-1};
	return c->conn ? &c->conn->peer : &nobody;
}

const char *varlink_call_method(const struct varlink_call *c)
{
	return c->method;
}

uint64_t varlink_call_id(const struct varlink_call *c)
{
	return c->id;
}

bool varlink_call_more(const struct varlink_call *c)
{
	return c->more;
}

bool varlink_call_oneway(const struct varlink_call *c)
{
	return c->oneway;
}

bool varlink_call_connected(const struct varlink_call *c)
{
	return c->conn && !c->conn->dead;
}

int varlink_call_take_fd(struct varlink_call *c, size_t index)
{
	if (index >= c->nfds)
		return -1;
	return TAKE_FD(c->fds[index]);
}

size_t varlink_call_nfds(const struct varlink_call *c)
{
	return c->nfds;
}

void varlink_call_on_cancel(struct varlink_call *c, void (*fn)(struct varlink_call *c, void *ud),
			    void *ud)
{
	c->cancel = fn;
	c->cancel_ud = ud;
}

/* --- org.varlink.service ------------------------------------------------ */

static void service_get_info(struct varlink_call *c, yajl_val params)
{
	struct varlink_server *s = c->server;
	if (json_unknown_key(params, (const char *const[]){NULL})) {
		varlink_error_invalid_parameter(
		    c, json_unknown_key(params, (const char *const[]){NULL}));
		return;
	}
	yajl_gen g = varlink_params_begin();
	if (!g) {
		varlink_error(c, "org.varlink.service.MethodNotImplemented", NULL);
		return;
	}
	json_gen_kv_string(g, "vendor", s->info.vendor);
	json_gen_kv_string(g, "product", s->info.product);
	json_gen_kv_string(g, "version", s->info.version);
	json_gen_kv_string(g, "url", s->info.url);
	json_gen_string(g, "interfaces");
	yajl_gen_array_open(g);
	json_gen_string(g, "org.varlink.service");
	for (size_t i = 0; i < s->n_ifaces; i++)
		json_gen_string(g, s->ifaces[i]->name);
	yajl_gen_array_close(g);
	varlink_reply(c, varlink_params_end(g), false);
}

/* Where iface sits among the added interfaces, or -1. */
static int server_iface_index(const struct varlink_server *s, const struct varlink_interface *iface)
{
	for (size_t i = 0; i < s->n_ifaces; i++)
		if (s->ifaces[i] == iface)
			return (int)i;
	return -1;
}

const struct varlink_method_stats *
varlink_server_method_stats(const struct varlink_server *s, const struct varlink_interface *iface)
{
	int i = server_iface_index(s, iface);
	return i < 0 ? NULL : s->method_stats[i];
}

static const struct varlink_interface *server_find_interface(struct varlink_server *s,
							     const char *name, size_t len)
{
	for (size_t i = 0; i < s->n_ifaces; i++)
		if (strlen(s->ifaces[i]->name) == len &&
		    strncmp(s->ifaces[i]->name, name, len) == 0)
			return s->ifaces[i];
	return NULL;
}

static void service_get_interface_description(struct varlink_call *c, yajl_val params)
{
	const char *name;
	const char *unknown = json_unknown_key(params, (const char *const[]){"interface", NULL});
	if (unknown) {
		varlink_error_invalid_parameter(c, unknown);
		return;
	}
	if (json_get_string(params, "interface", &name) < 0) {
		varlink_error_invalid_parameter(c, "interface");
		return;
	}
	const char *description = NULL;
	if (strcmp(name, "org.varlink.service") == 0) {
		description = varlink_service_description;
	} else {
		const struct varlink_interface *iface =
		    server_find_interface(c->server, name, strlen(name));
		if (iface)
			description = iface->description;
	}
	if (!description) {
		varlink_error(c, "org.varlink.service.InterfaceNotFound",
			      params_one_string("interface", name));
		return;
	}
	varlink_reply(c, params_one_string("description", description), false);
}

/* --- input -------------------------------------------------------------- */

static void conn_reply_protocol_error(struct varlink_conn *conn, const char *parameter)
{
	/* A call object for the error alone, so the reply takes the normal path. */
	struct varlink_call *c = calloc(1, sizeof(*c));
	if (!c) {
		conn_kill(conn, "out of memory");
		return;
	}
	c->conn = conn;
	c->server = conn->server;
	c->id = ++conn->server->next_call_id;
	conn->current = c;
	conn->server->stats.calls_in_flight++;
	varlink_error_invalid_parameter(c, parameter);
}

static int get_optional_bool(yajl_val obj, const char *key, bool *out)
{
	int r = json_get_bool(obj, key, out);
	if (r == -ENOENT) {
		*out = false;
		return 0;
	}
	return r;
}

/*
 * Move the queued fds that came with the message being dispatched into fds (at most
 * VARLINK_MAX_FDS_PER_MSG; the rest are closed); with fds NULL, close them. The kernel
 * hands over a sendmsg's fds with a read that ends inside (or at the end of) that
 * sendmsg's bytes, so a call pipelined ahead of the one that carries fds never gets them.
 */
static void conn_take_fds(struct varlink_conn *conn, int *fds, size_t *nfds)
{
	size_t kept = 0;
	for (size_t i = 0; i < conn->nfdq; i++) {
		struct queued_fd q = conn->fdq[i];
		if (q.at >= conn->msg_end)
			conn->fdq[kept++] = q;
		else if (fds && *nfds < VARLINK_MAX_FDS_PER_MSG)
			fds[(*nfds)++] = q.fd;
		else
			fd_closer_close(conn->server->closer, q.fd);
	}
	conn->nfdq = kept;
}

/* The envelope of one call, checked before the call exists. */
struct call_envelope {
	const char *method;
	yajl_val params; /* NULL when the call has none */
	bool more, oneway, upgrade;
};

/* Read the envelope of msg; false after replying with a protocol error. */
static bool parse_envelope(struct varlink_conn *conn, yajl_val msg, struct call_envelope *env)
{
	if (!YAJL_IS_OBJECT(msg)) {
		conn_reply_protocol_error(conn, "message: not a JSON object");
		return false;
	}
	if (json_get_string(msg, "method", &env->method) < 0) {
		conn_reply_protocol_error(conn, "method");
		return false;
	}
	if (get_optional_bool(msg, "more", &env->more) < 0 ||
	    get_optional_bool(msg, "oneway", &env->oneway) < 0 ||
	    get_optional_bool(msg, "upgrade", &env->upgrade) < 0) {
		conn_reply_protocol_error(conn, "more/oneway/upgrade must be booleans");
		return false;
	}
	env->params = NULL;
	if (json_get_object(msg, "parameters", &env->params) == -EINVAL) {
		conn_reply_protocol_error(conn, "parameters");
		return false;
	}
	return true;
}

/* The call now in flight on conn, owning every fd that arrived up to its message's end. */
static struct varlink_call *call_start(struct varlink_conn *conn, const struct call_envelope *env)
{
	struct varlink_server *s = conn->server;
	struct varlink_call *c = calloc(1, sizeof(*c));
	if (!c || !(c->method = strdup(env->method))) {
		free(c);
		conn_kill(conn, "out of memory");
		return NULL;
	}
	c->conn = conn;
	c->server = s;
	c->id = ++s->next_call_id;
	c->more = env->more;
	c->oneway = env->oneway;
	conn_take_fds(conn, c->fds, &c->nfds);
	conn->current = c;
	s->stats.calls++;
	s->stats.calls_in_flight++;
	return c;
}

/* fds only where a method declares them: anything else is a protocol error. */
static void refuse_fds(struct varlink_call *c)
{
	c->conn->close_after_flush = true;
	c->server->stats.connections_dropped++;
	varlink_error_invalid_parameter(c, "file descriptors: this method takes none");
}

/* Hand the call to its method, or answer it with the error that says why there is none. */
static void call_route(struct varlink_call *c, const char *method, yajl_val params)
{
	struct varlink_server *s = c->server;
	const char *dot = strrchr(method, '.');
	const struct varlink_interface *iface =
	    dot ? server_find_interface(s, method, (size_t)(dot - method)) : NULL;
	const struct varlink_method *m = NULL;
	for (size_t i = 0; iface && i < iface->n_methods; i++)
		if (strcmp(iface->methods[i].name, dot + 1) == 0)
			m = &iface->methods[i];
	if (m) {
		c->counted = &s->method_stats[server_iface_index(s, iface)][m - iface->methods];
		c->counted->calls++;
	}

	if (c->nfds > 0 && (strncmp(method, "org.varlink.service.", 20) == 0 || !m ||
			    !(m->flags & VARLINK_METHOD_TAKES_FDS))) {
		refuse_fds(c);
	} else if (strcmp(method, "org.varlink.service.GetInfo") == 0) {
		service_get_info(c, params);
	} else if (strcmp(method, "org.varlink.service.GetInterfaceDescription") == 0) {
		service_get_interface_description(c, params);
	} else if (!iface) {
		/* Whole, not cut: a cut can split a UTF-8 character, and yajl refuses that. */
		_cleanup_free_ char *name =
		    strndup(method, dot ? (size_t)(dot - method) : SIZE_MAX);
		varlink_error(c, "org.varlink.service.InterfaceNotFound",
			      name ? params_one_string("interface", name) : NULL);
	} else if (m) {
		m->fn(c, params, s->userdata);
	} else {
		varlink_error(c, "org.varlink.service.MethodNotFound",
			      params_one_string("method", method));
	}
}

static void conn_dispatch(struct varlink_conn *conn, const char *text)
{
	static const char empty_object[] = "{}";
	_cleanup_(yajl_tree_freep) yajl_val msg = NULL;
	_cleanup_(yajl_tree_freep) yajl_val empty = NULL;
	struct call_envelope env;
	char why[256];

	if (json_parse_bounded(text, JSON_MAX_DEPTH, VARLINK_MAX_MESSAGE_NODES, &msg, why,
			       sizeof(why)) < 0) {
		char what[300];
		snprintf(what, sizeof(what), "message: %s", why);
		conn_reply_protocol_error(conn, what);
		return;
	}
	if (!parse_envelope(conn, msg, &env))
		return;
	if (!env.params && json_parse(empty_object, JSON_MAX_DEPTH, &empty, NULL, 0) == 0)
		env.params = empty;
	if (!env.params) {
		conn_kill(conn, "out of memory");
		return;
	}
	struct varlink_call *c = call_start(conn, &env);
	if (!c)
		return;
	if (env.upgrade)
		varlink_error_invalid_parameter(c, "upgrade");
	else
		call_route(c, env.method, env.params);
}

static void conn_arm_timers(struct varlink_conn *conn)
{
	bool waiting = !conn->current;
	/*
	 * A message begun must be whole VARLINK_PARTIAL_TIMEOUT_MS after its first byte came,
	 * call in flight or not: the deadline is set once, and a trickle of bytes does not
	 * move it.
	 */
	if (evbuffer_get_length(conn->in) > 0 && !conn_has_message(conn)) {
		if (!evtimer_pending(conn->ev_partial, NULL)) {
			struct timeval tv = ms_timeval(VARLINK_PARTIAL_TIMEOUT_MS);
			event_add(conn->ev_partial, &tv);
		}
	} else {
		event_del(conn->ev_partial);
	}
	/* No call in flight: a client that says nothing for this long goes (Watch is a call). */
	unsigned idle = conn->server->limits.idle_timeout_ms;
	if (waiting && idle) {
		struct timeval tv = ms_timeval(idle);
		event_add(conn->ev_idle, &tv);
	} else {
		event_del(conn->ev_idle);
	}
}

/* Dispatch complete messages, one call at a time. */
static void conn_process_input(struct varlink_conn *conn)
{
	unsigned started = 0;
	conn->dispatching = true;
	while (!conn->dead && !conn->current && !conn->throttled) {
		if (started++ == VARLINK_CALLS_PER_TURN) {
			/* Others' turn: this client goes on in the next pass of the loop. */
			event_active(conn->ev_resume, EV_TIMEOUT, 0);
			break;
		}
		struct evbuffer_ptr nul = evbuffer_search(conn->in, "", 1, NULL);
		if (nul.pos < 0) {
			if (evbuffer_get_length(conn->in) > VARLINK_MAX_MESSAGE_BYTES)
				conn_kill(conn, "message larger than the limit");
			break;
		}
		size_t len = (size_t)nul.pos;
		if (len > VARLINK_MAX_MESSAGE_BYTES) {
			conn_kill(conn, "message larger than the limit");
			break;
		}
		_cleanup_free_ char *text = malloc(len + 1);
		if (!text) {
			conn_kill(conn, "out of memory");
			break;
		}
		evbuffer_remove(conn->in, text, len + 1);
		/* What follows it is a new message, with a deadline of its own. */
		event_del(conn->ev_partial);
		conn->msg_end += len + 1;
		conn_dispatch(conn, text);
		conn_take_fds(conn, NULL, NULL); /* a message refused before it became a call */
	}
	conn->dispatching = false;
	if (!conn->dead) {
		conn_arm_timers(conn);
		/* Pipelined input waits while a call is open; read again once it is answered. */
		conn_update_read(conn);
		conn_flush(conn);
	}
}

/* Queue the fds that came with a read for the call they belong to; false when conn was killed. */
static bool conn_queue_fds(struct varlink_conn *conn, const struct fdpass_recv *in)
{
	/* Where the kernel cannot refuse a reader's fds (no SO_PASSRIGHTS), we do. */
	bool from_reader = in->nfds > 0 && !conn->admin;
	const char *refused = NULL;
	if (from_reader)
		refused = "file descriptors from a client who may not send any";
	else if (in->nfds > VARLINK_MAX_FDS_PER_MSG || in->ctruncated || in->foreign_cmsg)
		refused = "too many file descriptors with one message";
	if (refused) {
		for (size_t k = 0; k < in->nfds; k++)
			fd_closer_close(conn->server->closer, in->fds[k]);
		conn->server->stats.connections_dropped += from_reader;
		conn_kill(conn, refused);
		return false;
	}
	/* The last byte read with them names their message (conn_take_fds). */
	for (size_t k = 0; k < in->nfds; k++) {
		if (conn->nfdq < VARLINK_MAX_QUEUED_FDS && in->len > 0)
			conn->fdq[conn->nfdq++] = (struct queued_fd){
			    .fd = in->fds[k], .at = conn->received + in->len - 1};
		else
			fd_closer_close(conn->server->closer, in->fds[k]);
	}
	conn->received += in->len;
	return true;
}

static void on_conn_readable(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_conn *conn = arg;
	static unsigned char buf[VARLINK_READ_CHUNK];
	(void)fd;
	(void)what;

	for (int i = 0; i < VARLINK_READS_PER_EVENT && !conn->dead; i++) {
		struct fdpass_recv in;
		/*
		 * Room for every fd one message can carry (SCM_MAX_FD): fds that do not fit are
		 * dropped by the kernel on this thread, and one of them may block in its close.
		 */
		int r = fdpass_recv(conn->fd, buf, sizeof(buf), FDPASS_RECV_MAX_FDS, true, &in);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			conn_kill(conn, "read failed");
			return;
		}
		if (!conn_queue_fds(conn, &in))
			return;
		if (r == 0) {
			conn->read_eof = true;
			event_del(conn->ev_read);
			/* Nobody is left to read a stream: end it now, not at the next event. */
			if (conn->current && conn->current->more) {
				conn_kill(conn, "client closed with a stream open");
				return;
			}
			break;
		}
		evbuffer_add(conn->in, buf, in.len);
		if (!conn->admin &&
		    conn->server->stats.input_bytes > conn->server->limits.max_input_total) {
			conn->server->stats.connections_dropped++;
			conn_kill(conn, "unparsed input of all clients over the limit");
			return;
		}
		/* A whole message to work on, or one behind a call: the rest waits in the kernel.
		 */
		if (memchr(buf, '\0', in.len) || conn->current ||
		    evbuffer_get_length(conn->in) > VARLINK_MAX_MESSAGE_BYTES)
			break;
	}
	if (conn->dead)
		return;
	conn_arm_timers(conn); /* it spoke: not idle */
	/*
	 * Reading stops only while a whole message has to wait (a call is open): a client
	 * that waits for each reply, as most do, costs no epoll_ctl per call.
	 */
	if (!conn->current) {
		conn_process_input(conn);
		return;
	}
	conn_update_read(conn);
	if (conn->read_eof)
		conn_flush(conn);
}

static void on_conn_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_flush(arg);
}

static void on_partial_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_kill(arg, "partial message idle too long");
}

static void on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_conn *conn = arg;
	(void)fd;
	(void)what;
	if (!conn->current) {
		conn->server->stats.connections_dropped++;
		conn_kill(conn, "idle");
	}
}

static void on_stall_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_conn *conn = arg;
	(void)fd;
	(void)what;
	conn->server->stats.connections_dropped++;
	conn_kill(conn, "client does not read its replies");
}

/* Mark dead now, free from the loop later: handlers up the stack may still hold the conn. */
static void conn_kill(struct varlink_conn *conn, const char *why)
{
	struct varlink_server *s = conn->server;
	if (conn->dead)
		return;
	conn->dead = true;
	if (why)
		log_debug("varlink: closing connection of uid %u pid %d: %s",
			  (unsigned)conn->peer.uid, (int)conn->peer.pid, why);
	event_del(conn->ev_read);
	event_del(conn->ev_write);
	event_del(conn->ev_partial);
	event_del(conn->ev_idle);
	event_del(conn->ev_stall);
	event_del(conn->ev_resume);
	TAILQ_REMOVE(&s->conns, conn, link);
	TAILQ_INSERT_TAIL(&s->dead, conn, link);
	s->stats.connections--;
	uid_count_add(s, conn->peer.uid, -1);
	/*
	 * An open call keeps pointing at the dead connection (its replies are
	 * dropped) until the reaper detaches it and runs its cancel callback,
	 * from the event loop: never under the feet of whoever is replying now.
	 */
	event_active(s->ev_reap, EV_TIMEOUT, 0);
}

/*
 * Free one of a connection's buffers (if it was made). What it still holds leaves
 * *counted, the server-wide figure, if its counting callback was installed (and so
 * added it); either way it counts towards the next malloc_trim().
 */
static void conn_buffer_free(struct varlink_server *s, struct evbuffer *buf,
			     struct evbuffer_cb_entry *cb, size_t *counted)
{
	if (!buf)
		return;
	if (cb)
		evbuffer_remove_cb_entry(buf, cb);
	size_t left = evbuffer_get_length(buf);
	*counted -= cb ? left : 0;
	s->freed_bytes += left;
	evbuffer_free(buf);
}

/*
 * Close a client's socket without this thread ever dropping a file the client chose.
 * Messages still queued to the socket may carry fds (sent before accept, where the
 * kernel had not been told to refuse them, or on a kernel without SO_PASSRIGHTS), and
 * closing the socket would release them here: the last reference to a socket lingering
 * on a full send queue, or to a FUSE file, then blocks the event loop. So: shut it
 * (the peer can queue nothing more), take what is queued, hand its fds to the closer,
 * then close a socket that holds no one else's file.
 */
static void client_socket_close(struct varlink_server *s, int fd)
{
	static unsigned char sink[VARLINK_READ_CHUNK];
	shutdown(fd, SHUT_RDWR);
	for (;;) {
		struct fdpass_recv in;
		int r = fdpass_recv(fd, sink, sizeof(sink), FDPASS_RECV_MAX_FDS, true, &in);
		for (size_t i = 0; r >= 0 && i < in.nfds; i++)
			fd_closer_close(s->closer, in.fds[i]);
		if (r <= 0)
			break;
	}
	close(fd);
}

static void conn_free(struct varlink_conn *conn)
{
	struct varlink_server *s = conn->server;
	for (size_t i = 0; i < conn->nfdq; i++)
		fd_closer_close(s->closer, conn->fdq[i].fd);
	struct event **events[] = {&conn->ev_read, &conn->ev_write, &conn->ev_partial,
				   &conn->ev_idle, &conn->ev_stall, &conn->ev_resume};
	for (size_t i = 0; i < ELEMENTSOF(events); i++)
		event_freep(events[i]);
	conn_buffer_free(s, conn->in, conn->in_cb, &s->stats.input_bytes);
	conn_buffer_free(s, conn->out, conn->out_cb, &s->stats.output_bytes);
	if (conn->fd >= 0)
		client_socket_close(s, conn->fd);
	free(conn->peer.groups);
	free(conn);
}

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_server *s = arg;
	(void)fd;
	(void)what;
	s->freed_bytes = 0;
	malloc_trim(0);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_server *s = arg;
	(void)fd;
	(void)what;
	for (struct varlink_conn *conn; (conn = TAILQ_FIRST(&s->dead));) {
		TAILQ_REMOVE(&s->dead, conn, link);
		struct varlink_call *c = conn->current;
		if (c) {
			conn->current = NULL;
			c->conn = NULL;
			if (c->cancel)
				c->cancel(c, c->cancel_ud);
		}
		conn_free(conn);
	}
	/* What departed clients made us buffer goes back to the system, not to malloc's pools. */
	if (s->freed_bytes >= VARLINK_TRIM_BYTES && !evtimer_pending(s->ev_trim, NULL)) {
		struct timeval tv = ms_timeval(VARLINK_TRIM_INTERVAL_MS);
		evtimer_add(s->ev_trim, &tv);
	}
}

static void peer_credentials(int fd, struct varlink_peer *peer)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	memset(peer, 0, sizeof(*peer));
	peer->uid = (uid_t)-1;
	peer->gid = (gid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		peer->uid = cred.uid;
		peer->gid = cred.gid;
		peer->pid = cred.pid;
	}
	/*
	 * Every group, however many (NGROUPS_MAX is 65536): on ERANGE the kernel copies
	 * nothing and says how much room it needs, so a cut list (or a zeroed one, gid 0
	 * and all) is never taken for the peer's. Without it the peer is in no group.
	 */
	gid_t few[VARLINK_MAX_GROUPS];
	len = sizeof(few);
	gid_t *all = few;
	int r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, few, &len);
	if (r < 0 && errno == ERANGE && (all = malloc(len ? len : 1)))
		r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all, &len);
	size_t n = r == 0 ? len / sizeof(gid_t) : 0;
	peer->groups = n ? malloc(n * sizeof(gid_t)) : NULL;
	if (peer->groups) {
		memcpy(peer->groups, all, n * sizeof(gid_t));
		peer->ngroups = n;
	}
	if (all != few)
		free(all);
}

static void conn_free(struct varlink_conn *conn);

/* Count unread output and unparsed input of every client, as their buffers grow and drain. */
static void on_output_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct varlink_server *s = arg;
	(void)buf;
	s->stats.output_bytes += info->n_added;
	s->stats.output_bytes -= info->n_deleted;
}

static void on_input_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct varlink_server *s = arg;
	(void)buf;
	s->stats.input_bytes += info->n_added;
	s->stats.input_bytes -= info->n_deleted;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_conn *conn = arg;
	(void)fd;
	(void)what;
	if (!conn->dead && !conn->current && !conn->dispatching)
		conn_process_input(conn);
}

/* Readers at the lowest priority, admins at the highest (VARLINK_PRIORITIES). */
static void conn_set_priority(struct varlink_conn *conn)
{
	int n = event_base_get_npriorities(conn->server->base);
	if (n < VARLINK_PRIORITIES)
		return;
	int prio = conn->admin ? 0 : n - 1;
	struct event *events[] = {conn->ev_read, conn->ev_write, conn->ev_partial,
				  conn->ev_idle, conn->ev_stall, conn->ev_resume};
	for (size_t i = 0; i < ELEMENTSOF(events); i++)
		event_priority_set(events[i], prio);
}

/* May this client have one more connection? Admins only need a free slot. */
static bool admit(struct varlink_server *s, const struct varlink_peer *peer, bool admin)
{
	const struct varlink_limits *l = &s->limits;
	if (admin)
		return s->stats.connections < l->max_connections;
	struct uid_count *u = NULL;
	HASH_FIND(hh, s->uids, &peer->uid, sizeof(peer->uid), u);
	size_t for_readers =
	    l->max_connections > l->reserved_admin ? l->max_connections - l->reserved_admin : 0;
	return s->stats.connections < for_readers && (!u || u->n < l->max_per_uid);
}

static void refusal_log(struct varlink_server *s, const struct varlink_peer *peer)
{
	uint64_t now = monotonic_ms();
	s->stats.connections_refused++;
	/* A flood of refusals must not become a flood of log lines. */
	if (now - s->last_refusal_log_ms < VARLINK_REFUSAL_LOG_INTERVAL_MS)
		return;
	s->last_refusal_log_ms = now;
	log_warnx("varlink: refused a connection of uid %u pid %d (%zu open, limits %zu in all, "
		  "%zu per uid, %zu kept for admins); %llu refused so far",
		  (unsigned)peer->uid, (int)peer->pid, s->stats.connections,
		  s->limits.max_connections, s->limits.max_per_uid, s->limits.reserved_admin,
		  (unsigned long long)s->stats.connections_refused);
}

int varlink_server_add_connection(struct varlink_server *s, int cfd)
{
	struct varlink_peer peer;
	peer_credentials(cfd, &peer);
	bool admin = s->is_admin && s->is_admin(&peer, s->admin_ud);
	if (!admit(s, &peer, admin)) {
		refusal_log(s, &peer);
		free(peer.groups);
		client_socket_close(s, cfd);
		return -EUSERS;
	}
	if (!admin) {
		/* Where the kernel can (6.16+), it refuses a reader's fds before we ever hold one.
		 */
		int off = 0;
		setsockopt(cfd, SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof(off));
	}
	struct varlink_conn *conn = calloc(1, sizeof(*conn));
	if (!conn) {
		free(peer.groups);
		client_socket_close(s, cfd);
		return -ENOMEM;
	}
	conn->server = s;
	conn->fd = cfd;
	conn->peer = peer;
	conn->admin = admin;
	conn->in = evbuffer_new();
	conn->out = evbuffer_new();
	conn->ev_read = event_new(s->base, cfd, EV_READ | EV_PERSIST, on_conn_readable, conn);
	conn->ev_write = event_new(s->base, cfd, EV_WRITE, on_conn_writable, conn);
	conn->ev_partial = evtimer_new(s->base, on_partial_timeout, conn);
	conn->ev_idle = evtimer_new(s->base, on_idle_timeout, conn);
	conn->ev_stall = evtimer_new(s->base, on_stall_timeout, conn);
	conn->ev_resume = event_new(s->base, -1, 0, on_resume, conn);
	if (conn->out)
		conn->out_cb = evbuffer_add_cb(conn->out, on_output_changed, s);
	if (conn->in)
		conn->in_cb = evbuffer_add_cb(conn->in, on_input_changed, s);
	if (!conn->in || !conn->out || !conn->out_cb || !conn->in_cb || !conn->ev_read ||
	    !conn->ev_write || !conn->ev_partial || !conn->ev_idle || !conn->ev_stall ||
	    !conn->ev_resume || uid_count_add(s, peer.uid, 1) < 0) {
		conn_free(conn);
		return -ENOMEM;
	}
	conn_set_priority(conn);
	TAILQ_INSERT_TAIL(&s->conns, conn, link);
	s->stats.connections++;
	s->stats.connections_total++;
	conn_update_read(conn);
	conn_arm_timers(conn);
	return 0;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct varlink_server *s = arg;
	(void)what;

	for (int i = 0; i < 64; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("varlink: accept");
			return;
		}
		varlink_server_add_connection(s, cfd);
	}
}

/* --- server ------------------------------------------------------------- */

struct varlink_server *varlink_server_new(struct event_base *base,
					  const struct varlink_server_info *info, void *userdata)
{
	struct varlink_server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->info = *info;
	s->userdata = userdata;
	s->listen_fd = -1;
	TAILQ_INIT(&s->conns);
	TAILQ_INIT(&s->dead);
	varlink_limits_default(&s->limits);
	s->ev_reap = event_new(base, -1, 0, on_reap, s);
	s->ev_trim = evtimer_new(base, on_trim, s);
	s->closer = fd_closer_new();
	if (!s->ev_reap || !s->ev_trim || !s->closer) {
		event_freep(&s->ev_reap);
		event_freep(&s->ev_trim);
		fd_closer_free(s->closer);
		free(s);
		return NULL;
	}
	return s;
}

void varlink_server_set_limits(struct varlink_server *s, const struct varlink_limits *limits,
			       bool (*is_admin)(const struct varlink_peer *peer, void *ud),
			       void *ud)
{
	s->limits = *limits;
	s->is_admin = is_admin;
	s->admin_ud = ud;
}

int varlink_server_add_interface(struct varlink_server *s, const struct varlink_interface *iface)
{
	if (s->n_ifaces >= VARLINK_MAX_INTERFACES || iface->n_methods > VARLINK_MAX_METHODS)
		return -E2BIG;
	s->ifaces[s->n_ifaces++] = iface;
	return 0;
}

int varlink_server_listen_fd(struct varlink_server *s, int fd)
{
	s->listen_fd = fd;
	s->ev_accept = event_new(s->base, fd, EV_READ | EV_PERSIST, on_accept, s);
	/* An admin's connection waits in the same listen queue as a flood of readers'. */
	if (s->ev_accept && event_base_get_npriorities(s->base) >= VARLINK_PRIORITIES)
		event_priority_set(s->ev_accept, 0);
	if (!s->ev_accept || event_add(s->ev_accept, NULL) < 0)
		return -ENOMEM;
	return 0;
}

void varlink_server_stop_accepting(struct varlink_server *s)
{
	event_freep(&s->ev_accept);
	s->listen_fd = safe_close(s->listen_fd);
}

void varlink_server_close_idle(struct varlink_server *s)
{
	struct varlink_conn *conn, *next;
	for (conn = TAILQ_FIRST(&s->conns); conn; conn = next) {
		next = TAILQ_NEXT(conn, link);
		bool streaming = conn->current && conn->current->more;
		if ((!conn->current || streaming) && evbuffer_get_length(conn->out) == 0)
			conn_kill(conn, NULL);
	}
}

void varlink_server_stats(const struct varlink_server *s, struct varlink_stats *out)
{
	*out = s->stats;
}

size_t varlink_server_pending_output(const struct varlink_server *s)
{
	size_t n = 0;
	struct varlink_conn *conn;
	TAILQ_FOREACH(conn, &s->conns, link)
	n += evbuffer_get_length(conn->out);
	return n;
}

void varlink_server_free(struct varlink_server *s)
{
	if (!s)
		return;
	varlink_server_stop_accepting(s);
	for (struct varlink_conn *c; (c = TAILQ_FIRST(&s->conns));)
		conn_kill(c, NULL);
	on_reap(-1, 0, s);
	event_free(s->ev_reap);
	event_free(s->ev_trim);
	fd_closer_free(s->closer);
	struct uid_count *u, *tmp;
	HASH_ITER(hh, s->uids, u, tmp)
	{
		HASH_DEL(s->uids, u);
		free(u);
	}
	free(s);
}
