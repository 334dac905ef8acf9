/*
 * banger-privhelper's one context struct and the handlers it dispatches to.
 * The helper holds no state about VMs: everything a handler needs arrives
 * in the request, and everything it may touch is bounded by the policy
 * fixed on its command line.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "privsep.h"
#include "strbuf.h"
#include "unixsock.h"

#define HELPER_SOCKET_FD 3

/* One socket a scan asks about, by its node; err when it could not be looked at. */
struct wanted_socket {
	struct unix_node node;
	uint32_t index; /* its place in the whole request */
	int32_t err;
};

/* Most wanted listeners (and other listeners) one process may hold that a scan keeps track of. */
#define PS_SCAN_PROCESS_MAX_MATCHES 64

/* A scan whose request arrives in several parts (proto/privsep.h). */
struct scan_request {
	bool active;
	uint64_t request_id;
	uint32_t nparts;
	uint32_t next_part;
	struct ps_caller caller;
	size_t sockets; /* named in the request */
	struct wanted_socket *wanted;
	size_t count, capacity;
	int root_fds[PS_POLICY_MAX_ROOTS]; /* the api socket roots, open while the scan lasts */
	bool root_fds_open;
	int err; /* the first failure while collecting: answered after the last part */
};

struct helper {
	int sock;
	struct ps_policy policy;
	bool privileged; /* started as root and holding exactly its four capabilities */
	bool hello_done;
	int audit_fd; /* -1, or the audit log file */
	struct netns_home netns;
	struct scan_request scan;
};

/* One audit line per request (DESIGN §4). */
struct audit_record {
	uint64_t request_id;
	const struct ps_caller *caller;
	const char *op;
	uint64_t started_us;
	struct strbuf args;
};

void audit_start(struct audit_record *a, uint64_t request_id, const struct ps_caller *caller,
		 const char *op);
void audit_finish(struct helper *h, struct audit_record *a, const char *result, const char *reason,
		  int err);
void audit_violation(struct helper *h, const char *why);

/*
 * Request handlers: decode is done, the payload is validated structurally;
 * each checks policy, acts, and sends exactly one reply (or, for SCAN, one
 * reply stream). They return 0; -EBADMSG for a violation the codec could
 * not see (why says what); or -errno when the reply could not be sent (the
 * daemon is gone). Either way the helper then exits.
 */
typedef int (*asroot_handler)(struct helper *h, struct ps_message *m, char *why, size_t why_size);

int asroot_hello(struct helper *h, struct ps_message *m, char *why, size_t why_size);
int asroot_probe(struct helper *h, struct ps_message *m, char *why, size_t why_size);
int asroot_scan(struct helper *h, struct ps_message *m, char *why, size_t why_size);
int asroot_teardown(struct helper *h, struct ps_message *m, char *why, size_t why_size);

/* Route one decoded request. Returns 0, -EBADMSG for a protocol violation (why says what), or
 * -errno. */
int helper_dispatch(struct helper *h, struct ps_message *m, char *why, size_t why_size);

void scan_request_reset(struct scan_request *s);
