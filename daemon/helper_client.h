/*
 * bangerd's side of the privsep protocol: it spawns banger-privhelper and
 * sends it requests without ever blocking the event loop. Requests are
 * queued, sent when the socket takes them, and matched to their replies by
 * request id; a slow teardown in the helper delays only its own callback.
 * helper_probe() here is answered by asroot_probe() in privhelper/.
 */
#pragma once

#include <event2/event.h>
#include <stdint.h>
#include <sys/types.h>

#include "privsep.h"

struct helper_client;

/* The reply to one request, or err < 0 when the helper died before answering. */
struct helper_reply {
	int err;
	const struct ps_message *msg; /* NULL when err < 0 */
};

typedef void (*helper_reply_cb)(struct helper_client *hc, struct helper_reply *reply,
				void *userdata);

/* A whole scan: every reply part merged. The callback may take pidfds (set them to -1). */
struct helper_scan_result {
	int err;
	uint32_t uninspected;
	size_t count;
	struct ps_scan_entry *entries;
	int *pidfds; /* per entry: its pidfd or -1 */
};

typedef void (*helper_scan_cb)(struct helper_client *hc, struct helper_scan_result *result,
			       void *userdata);

/* Called once when the helper is gone (EOF, protocol violation, exit). */
typedef void (*helper_dead_cb)(struct helper_client *hc, const char *why, void *userdata);

/*
 * Fork and exec the helper with the policy as flags, its end of a fresh
 * SOCK_SEQPACKET pair on fd 3 and every other fd closed. Must run before
 * the privilege drop. Returns the daemon's end of the socket or -errno.
 */
int helper_spawn(const char *helper_path, const struct ps_policy *policy, const char *audit_log,
		 int log_level, pid_t *pid_out);

/* Split mode: connect to the helper's socket (systemd starts a helper per connection). */
int helper_connect(const char *path);

struct helper_client *helper_client_new(struct event_base *base, int sock, pid_t pid,
					helper_dead_cb on_dead, void *userdata);
/* Closes the socket (the helper exits on EOF) and fails pending requests with -ECANCELED. */
void helper_client_free(struct helper_client *hc);
pid_t helper_client_pid(const struct helper_client *hc);
size_t helper_client_pending(const struct helper_client *hc);

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
