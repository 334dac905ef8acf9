/*
 * A Varlink server on libevent (https://varlink.org): NUL-terminated JSON
 * calls over a Unix stream socket, org.varlink.service built in, file
 * descriptors accepted alongside a call (SCM_RIGHTS, as sd-varlink sends
 * them: with the call's own bytes; an fd belongs to the message that holds
 * the last byte it was read with, so a call pipelined ahead of it never gets
 * it). Generic: bangerd's io.banger.Handles and the test server for
 * org.varlink.certification both sit on it.
 *
 * Calls on one connection are answered in order, one at a time: a method
 * may answer later (after an asynchronous helper round trip), and the next
 * call on that connection waits for it, while other connections go on.
 * Every limit is enforced before a byte is trusted: message size, fds per
 * message, connections, time a partial message may sit, unread output.
 */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define VARLINK_MAX_MESSAGE_BYTES (1024 * 1024)
/* Values and keys in one call: a call is a handful of strings, a tree of 1 MiB would be ~45 MB. */
#define VARLINK_MAX_MESSAGE_NODES  16384
#define VARLINK_MAX_FDS_PER_MSG	   4
#define VARLINK_PARTIAL_TIMEOUT_MS 5000
#define VARLINK_MAX_GROUPS	   64

/*
 * The event base should have this many priorities (event_base_priority_init):
 * readers' connections then run at the lowest, behind everything else, and
 * admins' at the highest. With fewer, all run at the default.
 */
#define VARLINK_PRIORITIES 3
/* Calls one connection may start in one turn of the loop before others get theirs. */
#define VARLINK_CALLS_PER_TURN 8

/* Defaults of struct varlink_limits (bangerd.conf(5) names each). */
#define VARLINK_DEFAULT_MAX_CONNECTIONS	    4096
#define VARLINK_DEFAULT_RESERVED_ADMIN	    64
#define VARLINK_DEFAULT_MAX_PER_UID	    64
#define VARLINK_DEFAULT_IDLE_TIMEOUT_MS	    60000
#define VARLINK_DEFAULT_MAX_OUTPUT_PER_CONN (256 * 1024)
#define VARLINK_DEFAULT_MAX_OUTPUT_TOTAL    (16 * 1024 * 1024)
#define VARLINK_DEFAULT_MAX_INPUT_TOTAL	    (16 * 1024 * 1024)
#define VARLINK_DEFAULT_STALL_TIMEOUT_MS    5000

/*
 * What one client may make the server hold. Admins (the is_admin callback)
 * are exempt from the per-uid limit and alone may use the last
 * reserved_admin connection slots, so readers can never lock them out.
 */
struct varlink_limits {
	size_t max_connections;	    /* all clients together */
	size_t reserved_admin;	    /* of those, kept for admins */
	size_t max_per_uid;	    /* each non-admin uid */
	unsigned idle_timeout_ms;   /* no call in flight, nothing sent: closed (0: never) */
	size_t max_output_per_conn; /* unread replies past this: stop reading the client */
	size_t max_output_total;   /* all clients' unread replies: past this, drop the one adding */
	size_t max_input_total;	   /* readers' received, unparsed input: past this, drop the reader
				      adding */
	unsigned stall_timeout_ms; /* a stopped client that still does not read: dropped */
};

void varlink_limits_default(struct varlink_limits *l);

struct varlink_server;
struct varlink_call;

/* Who is calling, from SO_PEERCRED and SO_PEERGROUPS at accept time. */
struct varlink_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	size_t ngroups;
	gid_t *groups; /* all of them (SO_PEERGROUPS), owned by the connection; NULL when none */
};

/*
 * A method handler. parameters is the call's "parameters" object (an empty
 * object for absent or null), valid only until the handler returns: an
 * asynchronous handler copies what it needs. It must end the call with exactly one
 * varlink_reply(..., false) or varlink_error(), now or later; a "more" call
 * may first send any number of varlink_reply(..., true).
 */
typedef void (*varlink_method_fn)(struct varlink_call *call, yajl_val parameters, void *userdata);

/* A method that takes fds with its call (SCM_RIGHTS); fds with any other call are refused. */
#define VARLINK_METHOD_TAKES_FDS 0x1u

struct varlink_method {
	const char *name; /* without the interface: "Register" */
	varlink_method_fn fn;
	unsigned flags;
};

struct varlink_interface {
	const char *name;	 /* "io.banger.Handles" */
	const char *description; /* the interface definition text */
	const struct varlink_method *methods;
	size_t n_methods;
};

struct varlink_server_info {
	const char *vendor;
	const char *product;
	const char *version;
	const char *url;
};

struct varlink_stats {
	uint64_t calls;
	uint64_t errors;
	uint64_t connections_total;
	uint64_t connections_refused; /* over a connection limit */
	uint64_t connections_dropped; /* idle, stalled, over the output limit, or sent fds */
	size_t connections;
	size_t calls_in_flight;
	size_t output_bytes; /* replies not yet taken by their clients */
	size_t input_bytes;  /* received and not yet parsed */
};

/* Methods an interface may have: each gets its own counters, a bounded set. */
#define VARLINK_MAX_METHODS 32

/* One method of an added interface: calls dispatched to it, and how many ended in an error. */
struct varlink_method_stats {
	uint64_t calls;
	uint64_t errors;
};

struct varlink_server *varlink_server_new(struct event_base *base,
					  const struct varlink_server_info *info, void *userdata);
void varlink_server_free(struct varlink_server *s);
/*
 * Limits, and who counts as an admin (exempt from the per-uid limit, owner
 * of the reserved slots, and the only one allowed to send fds: from anyone
 * else a call with fds is refused and the connection closed). NULL
 * is_admin: nobody is. Set before serving.
 */
void varlink_server_set_limits(struct varlink_server *s, const struct varlink_limits *limits,
			       bool (*is_admin)(const struct varlink_peer *peer, void *ud),
			       void *ud);
/* Close an fd a client sent, off the event loop (its close may block): closer.h. */
void varlink_server_close_fd(struct varlink_server *s, int fd);
/* fds handed to the closer and not closed yet. */
unsigned long varlink_server_fds_closing(struct varlink_server *s);
/*
 * The interface (and its methods and description) must outlive the server.
 * -E2BIG past VARLINK_MAX_INTERFACES, or for more than VARLINK_MAX_METHODS methods.
 */
int varlink_server_add_interface(struct varlink_server *s, const struct varlink_interface *iface);
/* Serve a listening socket (bound and listening already; the server owns it now). */
int varlink_server_listen_fd(struct varlink_server *s, int fd);
/*
 * Serve one connected stream socket (non-blocking, CLOEXEC; the server owns
 * it now, and closes it on failure): what accepting does for each client.
 * Fuzzers and tests feed the server through it.
 */
int varlink_server_add_connection(struct varlink_server *s, int fd);
/* Close the listening socket: no new connections, existing ones go on. */
void varlink_server_stop_accepting(struct varlink_server *s);
/* End every "more" call (its cancel callback runs) and close idle connections. */
void varlink_server_close_idle(struct varlink_server *s);
void varlink_server_stats(const struct varlink_server *s, struct varlink_stats *out);
/*
 * Per method of iface (an added interface), in the order of iface->methods; NULL if it was
 * not added. Calls to org.varlink.service and to names that resolve to no method count only
 * in varlink_stats.
 */
const struct varlink_method_stats *
varlink_server_method_stats(const struct varlink_server *s, const struct varlink_interface *iface);
/* Bytes of replies not yet taken by their clients (a clean shutdown waits for 0). */
size_t varlink_server_pending_output(const struct varlink_server *s);

const struct varlink_peer *varlink_call_peer(const struct varlink_call *c);
const char *varlink_call_method(const struct varlink_call *c); /* "io.banger.Handles.Register" */
uint64_t varlink_call_id(const struct varlink_call *c); /* unique in this process, for logs */
bool varlink_call_more(const struct varlink_call *c);
bool varlink_call_oneway(const struct varlink_call *c);
/* Take an fd that arrived with the call; -1 if there is none at index. Caller owns it. */
int varlink_call_take_fd(struct varlink_call *c, size_t index);
size_t varlink_call_nfds(const struct varlink_call *c);
/* False once the client is gone; replies are then dropped. */
bool varlink_call_connected(const struct varlink_call *c);
/*
 * Called once if the connection closes while the call is still open (a
 * Watch ends); the callback must still end the call (its reply is dropped).
 */
void varlink_call_on_cancel(struct varlink_call *c, void (*fn)(struct varlink_call *c, void *ud),
			    void *ud);

/*
 * Answer a call. params is a generator holding one complete JSON object (or
 * NULL for {}); it is consumed (freed) either way. continues=true keeps a
 * "more" call open. After a final reply or an error the call is gone.
 */
void varlink_reply(struct varlink_call *c, yajl_gen params, bool continues);
void varlink_error(struct varlink_call *c, const char *error, yajl_gen params);
/* Shorthand errors of org.varlink.service. */
void varlink_error_invalid_parameter(struct varlink_call *c, const char *parameter);

/* A fresh generator with its top-level map open; close it with varlink_params_end(). */
yajl_gen varlink_params_begin(void);
yajl_gen varlink_params_end(yajl_gen g);
