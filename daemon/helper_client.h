/*
 * bangerd's side of the privsep protocol: it spawns banger-privhelper and
 * sends it requests without ever blocking the event loop. Requests are
 * queued, sent when the socket takes them, and matched to their replies by
 * request id; a slow teardown in the helper delays only its own callback.
 * Every request has a deadline: a helper that does not answer in time is
 * stuck, and nothing ever waits on it for longer than that.
 * helper_probe() here is answered by asroot_probe() in privhelper/.
 */
#pragma once

#include <event2/event.h>
#include <stdint.h>
#include <sys/types.h>

#include "privsep.h"

struct helper_client;

/* The helper's operations; each has a deadline of its own (bangerd.conf helper_*_timeout_ms). */
enum helper_op {
	HELPER_OP_HELLO,
	HELPER_OP_PROBE,
	HELPER_OP_SCAN,
	HELPER_OP_TEARDOWN,
	HELPER_N_OPS,
};

/* "HELLO", "PROBE", "SCAN", "TEARDOWN": the names the messages use. */
const char *helper_op_name(enum helper_op op);

/* How a helper failed: it went away (EOF, exit, protocol violation), or stopped answering. */
enum helper_failure {
	HELPER_GONE,
	HELPER_STUCK,
};

/*
 * The reply to one request, or err < 0 when none will come: -EPIPE when the
 * helper went away, -ETIMEDOUT when it is stuck. why then names the
 * operation and how long it waited, for the caller's error reply.
 */
struct helper_reply {
	int err;
	const struct ps_message *msg; /* NULL when err < 0 */
	const char *why;	      /* set when err < 0 */
};

typedef void (*helper_reply_cb)(struct helper_client *hc, struct helper_reply *reply,
				void *userdata);

/* A whole scan: every reply part merged. The callback may take pidfds (set them to -1). */
struct helper_scan_result {
	int err;
	uint32_t uninspected;
	uint32_t budget_ms; /* the walk's budget, as the request gave it */
	bool cut_short;	    /* the walk ran out of it: uninspected counts what it left */
	size_t count;
	struct ps_scan_entry *entries;
	int *pidfds;	 /* per entry: its pidfd or -1 */
	const char *why; /* set when no reply came (see struct helper_reply) */
};

typedef void (*helper_scan_cb)(struct helper_client *hc, struct helper_scan_result *result,
			       void *userdata);

/*
 * Called once when the helper can take no more requests: gone (EOF,
 * protocol violation, exit) or stuck (a request passed its deadline; the
 * socket is dropped). It runs before the requests still waiting are failed,
 * so that those callbacks see the daemon already knowing. It must not free
 * hc: that may happen from the event loop afterwards.
 */
typedef void (*helper_dead_cb)(struct helper_client *hc, enum helper_failure how, const char *why,
			       void *userdata);

/*
 * Fork and exec the helper with the policy as flags, its end of a fresh
 * SOCK_SEQPACKET pair on fd 3 and every other fd closed. Must run before
 * the privilege drop. Returns the daemon's end of the socket or -errno.
 */
int helper_spawn(const char *helper_path, const struct ps_policy *policy, const char *audit_log,
		 int log_level, pid_t *pid_out);

/* Split mode: connect to the helper's socket (systemd starts a helper per connection). */
int helper_connect(const char *path);

/* deadline_ms: per operation, counted from when the helper could start on the request. */
struct helper_client *helper_client_new(struct event_base *base, int sock, pid_t pid,
					const unsigned deadline_ms[HELPER_N_OPS],
					helper_dead_cb on_dead, void *userdata);
/* Closes the socket (the helper exits on EOF) and fails pending requests with -ECANCELED. */
void helper_client_free(struct helper_client *hc);
pid_t helper_client_pid(const struct helper_client *hc);
size_t helper_client_pending(const struct helper_client *hc);
/* The helper is known to be gone (its pid was reaped): fail what waits for it. Idempotent. */
void helper_client_declare_dead(struct helper_client *hc, const char *why);
/* Why the helper takes no more requests, or NULL while it does. */
const char *helper_client_failure(const struct helper_client *hc);

int helper_hello(struct helper_client *hc, const struct ps_caller *caller, helper_reply_cb cb,
		 void *userdata);
/* pidfd < 0: probe by pid. Otherwise the pidfd is sent (the caller keeps its own copy). */
int helper_probe(struct helper_client *hc, const struct ps_caller *caller, pid_t pid, int pidfd,
		 uint64_t start_time, const char *api_sock, helper_reply_cb cb, void *userdata);
int helper_scan(struct helper_client *hc, const struct ps_caller *caller,
		const char *const *sockets, size_t count, helper_scan_cb cb, void *userdata);
int helper_teardown(struct helper_client *hc, const struct ps_teardown *request, helper_reply_cb cb,
		    void *userdata);

/* Describe how a child ended ("exited with status 1", "killed by signal 9 (KILL)"). */
void describe_wait_status(int status, char *buf, size_t size);
