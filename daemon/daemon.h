/*
 * bangerd's one context struct: the only mutable state the daemon has
 * beyond what each module's own objects hold. Only the struct lives here;
 * each module's functions are in its own header (service.h, api.h, ...).
 */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include "cache.h"
#include "config.h"
#include "helper_client.h"
#include "store.h"
#include "reconcile.h"
#include "service.h"
#include "varlink.h"

/* What GetStatus says of the helper. */
enum helper_state {
	HELPER_STATE_OK,    /* answering within its deadlines */
	HELPER_STATE_STUCK, /* a request passed its deadline; replaced (split) or exiting (spawn) */
	HELPER_STATE_GONE,  /* died or broke the protocol; bangerd is exiting */
};

/* Totals since bangerd started, for GetStatus and `bangerctl metrics`: they only grow. */
struct daemon_counters {
	uint64_t exits;					   /* firecracker exits seen on a pidfd */
	uint64_t teardown_results[PS_TEARDOWN_FAILED + 1]; /* per resource, by its status */
	uint64_t teardowns_unanswered; /* the helper never answered: what it did is unknown */
	uint64_t persist_retries;      /* a write that had failed, tried again */
	uint64_t reconciles;
	uint64_t reconciles_failed; /* the helper failed under it */
	uint64_t reconcile_usec_total;
	uint64_t reconcile_usec_last;
	uint64_t reconcile_vms[RECONCILE_ACTIONS]; /* per VM of each report, by its action */
};

struct watcher {
	struct varlink_call *call;
	TAILQ_ENTRY(watcher) link;
};

struct daemon {
	struct banger_config cfg;
	struct event_base *base;
	service_answer_fn answer;    /* api.c's: how a call's result becomes its reply */
	service_event_fn event_sink; /* api.c's: where events go (Watch), or NULL */
	void *event_sink_userdata;
	struct helper_client *helper;
	pid_t helper_pid;      /* our child in spawn mode (to reap), 0 in split mode */
	pid_t helper_said_pid; /* what the helper reported in HELLO: the process doing the work */
	bool helper_privileged;
	enum helper_state helper_state;
	char helper_problem[384]; /* why it is not ok */
	bool helper_replacing; /* split mode: a new helper is on trial until its reconcile ends */
	uint64_t helper_replacements;
	uid_t uid;
	gid_t gid;
	bool has_admin_group;
	gid_t admin_gid;
	char boot_id[VM_BOOT_ID_SIZE];
	struct store store;
	struct vm_cache cache;
	struct varlink_server *server;
	TAILQ_HEAD(, watcher) watchers;
	struct event *ev_persist_retry;
	unsigned persist_retry_ms;
	uint64_t persist_failures;
	uint64_t events;
	struct daemon_counters counters;
	int exit_status;
	int drain_status; /* what to exit with once the drain ends */
	bool ready;
	bool stopping;
	bool stop_requested; /* daemon_stop was called: the loop is leaving */
	struct timespec started;
	struct timespec stop_deadline;
	struct event *ev_sigterm, *ev_sigint, *ev_sigchld, *ev_drain;
	unsigned teardowns_in_flight;
	struct reconcile *reconcile; /* the one under way, or NULL */
	struct service_lane *lanes;  /* a VM's mutations, one at a time (service.c) */
	unsigned registers_in_flight;
};
