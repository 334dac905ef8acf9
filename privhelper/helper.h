/*
 * banger-privhelper's one context struct, its dispatcher and the handlers
 * the dispatcher calls. The helper holds no state about VMs: everything a handler needs arrives
 * in the request, and everything it may touch is bounded by the policy
 * fixed on its command line.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "policy.h"
#include "privsep.h"
#include "strbuf.h"
#include "unixsock.h"

#define HELPER_SOCKET_FD 3

/* One socket a scan asks about, by its node. */
struct wanted_socket {
	struct unix_node node;
	uint32_t index; /* its place in the whole request */
	bool twice;	/* another entry of the request names the same node */
};

/* Most wanted listeners (and other listeners) one process may hold that a scan keeps track of. */
#define PS_SCAN_PROCESS_MAX_MATCHES 64

/* An entry of a scan's answer, and its pidfd (or -1). */
struct scan_hit {
	struct ps_scan_entry entry;
	int pidfd;
};

/* A scan whose request arrives in several parts (proto/privsep.h), then its answer. */
struct scan_request {
	uint64_t request_id;
	uint32_t nparts;
	uint32_t next_part; /* 0: no scan under way */
	struct ps_caller caller;
	size_t sockets;		      /* named in the request */
	struct wanted_socket *wanted; /* room for every socket nparts parts may name */
	size_t count;
	int err; /* the first failure while collecting: answered after the last part */
	/* Unknown sockets while collecting, then what the walk found; pidfds owned here. */
	struct scan_hit *hits;
	size_t n_hits, hits_capacity;
	uint32_t uninspected;
	uint32_t budget_ms;   /* the walk's, as every part gave it */
	uint64_t deadline_ns; /* CLOCK_MONOTONIC: the walk stops here */
	bool cut_short;	      /* it did: what it left is counted uninspected */
};

struct asroot_entry;

struct helper {
	int sock;
	struct ps_policy policy;
	bool privileged; /* started as root and holding exactly its four capabilities */
	int audit_fd;	 /* -1, or the audit log file */
	struct netns_home netns;
	/* What may come next (bit per type), recomputed by the dispatcher after each request. */
	uint32_t permitted;
	uint32_t answered_once;		 /* types permitted once that have been answered */
	const struct asroot_entry *open; /* a multi-part request under way, or NULL */
	struct scan_request scan;
};

/* A reply; SCAN's is a stream of parts built from h->scan, each in turn here. */
union asroot_reply {
	struct ps_hello_reply hello;
	struct ps_probe_reply probe;
	struct ps_scan_reply scan;
	struct ps_teardown_reply teardown;
};

/*
 * One request on its way through the dispatcher. The handler reads the
 * request and fills in the reply, its fds and the audit line's arguments
 * and outcome; the dispatcher has zeroed the reply and does the rest.
 */
struct asroot_call {
	struct ps_message *m; /* the request; a handler may take its fds */
	union asroot_reply reply;
	int fds[1]; /* sent with the reply; the dispatcher closes them after */
	size_t nfds;
	struct strbuf args;
	/* The names the request acts on (BANGER_DM=...), for the journal entry; into m or reply. */
	struct log_field fields[PS_TEARDOWN_MAX_RESULTS + 1];
	size_t n_fields;
	const char *result; /* "ok" unless the handler says otherwise */
	const char *reason; /* or NULL */
	int err;	    /* 0 or a negative errno, for the audit line */
	bool more;	    /* a part of a multi-part request: the answer follows the last */
	bool fatal;	    /* answer, then exit as for a violation (why says why) */
	char *why;
	size_t why_size;
	uint64_t started_us;
};

/* CLOCK_MONOTONIC in microseconds: when a request started, for its audit line's duration. */
uint64_t audit_clock_us(void);
void audit_request(struct helper *h, const char *op, const char *message_id,
		   const struct asroot_call *c);
/* Name what the request acts on in its journal entry; value must outlive the call. */
void audit_field(struct asroot_call *c, const char *name, const char *value);
void audit_violation(struct helper *h, const char *why);

/*
 * Request handlers: the request is decoded and permitted; a handler checks
 * policy, acts and fills in c. They return 0, or -EBADMSG for a violation
 * the codec could not see (c->why says what); the helper then exits.
 */
typedef int (*asroot_handler)(struct helper *h, struct asroot_call *c);

int asroot_hello(struct helper *h, struct asroot_call *c);
int asroot_probe(struct helper *h, struct asroot_call *c);
int asroot_scan(struct helper *h, struct asroot_call *c);
int asroot_teardown(struct helper *h, struct asroot_call *c);
/* SCAN's answer, in as many parts as its hits need; then the scan is reset. */
int asroot_scan_send(struct helper *h, struct asroot_call *c);

void helper_init(struct helper *h);

/*
 * Decode one request against the helper's table. Pure, like
 * ps_decode_header(): 0, or -EBADMSG with why filled in.
 */
int asroot_decode(const void *buf, size_t len, size_t nfds, struct ps_message *msg, char *why,
		  size_t why_size);
/*
 * Read and decode one request: 1 with msg filled (owning its fds), 0 on
 * EOF, -EBADMSG on a violation (every fd received already closed), -errno.
 */
int asroot_recv(int sock, struct ps_message *msg, char *why, size_t why_size);
/* The name of a request type, for messages. */
const char *asroot_op_name(uint16_t type);

/*
 * Check that the request is permitted now, run its handler, write its
 * audit line and send its one reply. Returns 0, -EBADMSG for a protocol
 * violation (why says what), or -errno when the reply could not be sent.
 */
int helper_dispatch(struct helper *h, struct ps_message *m, char *why, size_t why_size);

void scan_request_reset(struct scan_request *s);
