/*
 * bangerd's one context struct: the only mutable state the daemon has
 * beyond what each module's own objects hold.
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
#include "varlink.h"

/* Every record's socket must fit one reconcile SCAN: more records could never be reconciled. */
#define PERSIST_RETRY_FIRST_MS	  250
#define PERSIST_RETRY_MAX_MS	  5000
#define SHUTDOWN_DRAIN_TIMEOUT_MS 10000
#define SHUTDOWN_DRAIN_POLL_MS	  20

/* What GetStatus says of the helper. */
enum helper_state {
	HELPER_STATE_OK,    /* answering within its deadlines */
	HELPER_STATE_STUCK, /* a request passed its deadline; replaced (split) or exiting (spawn) */
	HELPER_STATE_GONE,  /* died or broke the protocol; bangerd is exiting */
};

/* Report actions of a reconcile, per VM: kept, torn_down, failed, unknown, clean, retained. */
#define RECONCILE_ACTIONS 6

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

/*
 * What a call to the service came to, for api.c to say. Each error is one
 * of io.banger.Handles' errors; the comment names the fields it carries.
 */
enum service_error {
	SERVICE_OK,
	SERVICE_NO_SUCH_VM,	    /* id */
	SERVICE_VM_EXISTS,	    /* id, state; reason: what to call first */
	SERVICE_TOO_MANY_VMS,	    /* limit */
	SERVICE_STORAGE_FAILED,	    /* id, file */
	SERVICE_POLICY_REFUSED,	    /* reason */
	SERVICE_NOT_FIRECRACKER,    /* id, pid, reason */
	SERVICE_STILL_RUNNING,	    /* id, pid */
	SERVICE_NO_HANDLES,	    /* id */
	SERVICE_CORRUPT_STATE,	    /* id, file, kept_as */
	SERVICE_HELPER_UNAVAILABLE, /* reason (none: no parameters) */
};

struct vm_entry;

struct service_result {
	enum service_error error;
	const char *id;
	const struct vm_entry *vm; /* OK: the VM the reply shows (NULL: an empty reply) */
	int persisted;		   /* OK of SetHandles: 0 or 1; else -1, not said */
	int32_t pid;
	unsigned limit;
	const char *state;
	const char *reason;
	const char *kept_as;
	const char *file;
	const struct vm_handles *handles; /* OK of GetHandles */
	bool teardown;			  /* OK of Teardown: its results */
	const struct ps_teardown_reply *results;
	yajl_gen report; /* OK of Reconcile: the reply's parameters, for the answer to take */
};
#define SERVICE_RESULT(err) ((struct service_result){.error = (err), .persisted = -1})

/* What happened, as Watch streams it: events leave the service only through its sink. */
struct service_event {
	const char *kind; /* "registered", "exited", "helper_stuck", ... */
	const char *id;	  /* the VM's, or NULL: bangerd's own */
	uint64_t time_usec;
	int pid; /* > 0 when there is one */
	const char *detail;
};
typedef void (*service_event_fn)(const struct service_event *ev, void *userdata);

/* How the service answers a call api.c started (call is api.c's, opaque here). */
typedef void (*service_answer_fn)(void *call, const struct service_result *res);

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
	struct timespec started;
	struct timespec stop_deadline;
	struct event *ev_sigterm, *ev_sigint, *ev_sigchld, *ev_drain;
	unsigned teardowns_in_flight;
	struct reconcile *reconcile; /* the one under way, or NULL */
	struct service_lane *lanes;  /* a VM's mutations, one at a time (service.c) */
	unsigned registers_in_flight;
};

/* service.c: the rules of DESIGN §2 */
int service_load(struct daemon *d);
uint64_t service_realtime_usec(void);
/* id NULL: an event of bangerd itself (helper_stuck, ...), not of a VM. */
void service_emit(struct daemon *d, const char *kind, const char *id, int pid, const char *detail);
/* The same, done for call (bangerd's call or task id, "Teardown#9", "exit"): journal entries say
 * so. */
void service_emit_for(struct daemon *d, const char *call, const char *kind, const char *id, int pid,
		      const char *detail);
/* Every event from now on goes to sink (NULL: nowhere but the log). */
void service_set_event_sink(struct daemon *d, service_event_fn sink, void *userdata);
/* Why a request could not be sent: the helper's failure when it has failed, else strerror. */
const char *service_helper_failure(const struct daemon *d, int err);
/*
 * Mutations are answered once what they changed is durable: done runs on
 * the loop's thread with the VM's id, its entry (NULL when there is none,
 * or no longer one) and 0 or -errno. A VM's mutations run one at a time, in
 * the order they were asked for; each decides on the cache as the one
 * before it left it. The writes themselves are the store writer's
 * (store_writer.h): reads never wait behind them.
 */
typedef void (*service_done_fn)(struct daemon *d, const char *id, struct vm_entry *e, int err,
				void *userdata);
/*
 * Register a VM, or re-arm a stopped record that holds nothing for its next
 * run. -EEXIST otherwise (e is the entry: service_rearm_refusal() says why);
 * -ENOSPC: max_vms records already; else vm.json could not be written.
 */
void service_register(struct daemon *d, const struct vm_record *rec, service_done_fn done,
		      void *userdata);
/*
 * Takes pidfd. 0: cached and persisted; -EIO: cached, not persisted (retried,
 * the reply says persisted false); -ENOENT: unregistered meanwhile.
 */
void service_set_handles(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			 int pidfd, service_done_fn done, void *userdata);
/*
 * SetHandles: probe the client's process (by pid, or by pidfd, which it
 * takes), again while it is a firecracker not yet listening on the VM's
 * api socket (up to api_sock_wait_ms), then set. Answered exactly once,
 * through d->answer.
 */
void service_set_handles_call(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			      int pidfd, const struct ps_caller *caller, void *call);
void service_clear_handles(struct daemon *d, struct vm_entry *e, service_done_fn done,
			   void *userdata);
/* -EBUSY: not known to be dead (e is the entry); -ENOENT; else the files could not go. */
void service_unregister(struct daemon *d, struct vm_entry *e, service_done_fn done, void *userdata);
/* done runs once every mutation of id asked for so far has finished. */
void service_after_writes(struct daemon *d, const char *id, service_done_fn done, void *userdata);
/* Every write queued so far made (or failed) and answered, here (shutdown). */
void service_flush_writes(struct daemon *d);
/* Why Register may not re-arm e (what to call first), or NULL when it may. */
const char *service_rearm_refusal(const struct vm_entry *e);
/* Does a dead VM hold (or may it hold) anything: handles, a mirror, a kept file, a start? */
bool service_holds_resources(const struct vm_entry *e);
enum vm_liveness service_liveness(const struct vm_entry *e);

/* What a teardown came to: err < 0 when the helper could not answer at all (why says so). */
struct teardown_outcome {
	int err;
	const char *why;
	bool complete; /* every resource removed or absent */
	const struct ps_teardown_reply *reply;
};
typedef void (*teardown_done_fn)(struct daemon *d, const char *id,
				 const struct teardown_outcome *outcome, void *userdata);
/*
 * Tear down what the VM holds or held (handles, the record's mirror, its
 * plan), DM -> loops -> tap, through the helper. Once every resource is
 * removed or absent the handles are cleared and the record marked stopped.
 * done may be NULL.
 */
/* The loops, taps and DM names live VMs hold now; a teardown never names them. */
struct held_names {
	struct held_name *set;
};
void held_names_collect(struct daemon *d, struct held_names *held);
void held_names_free(struct held_names *held);
/* held: what live VMs hold (NULL: collected for this one call). */
int service_teardown(struct daemon *d, struct vm_entry *e, const struct ps_caller *caller,
		     const struct held_names *held, teardown_done_fn done, void *userdata);
void gen_teardown_results(yajl_gen g, const struct ps_teardown_reply *reply);

/*
 * reconcile.c: DESIGN §3. done runs once every VM is decided; report is its
 * JSON. err < 0 when the helper failed it (why names the operation and wait).
 */
typedef void (*reconcile_done_fn)(struct daemon *d, int err, const char *why, yajl_gen report,
				  void *userdata);
int reconcile_start(struct daemon *d, const struct ps_caller *caller, reconcile_done_fn done,
		    void *userdata);
/* The name of a report action (0 to RECONCILE_ACTIONS - 1): "kept", "torn_down", ... */
const char *reconcile_action_name(size_t action);
/* Watch the verified firecracker of e (adopting a new pid if it moved). */
void service_adopt_process(struct daemon *d, struct vm_entry *e, int32_t pid, uint64_t start_time,
			   int pidfd);
/* Does the process e watches still live? (false when e watches none) */
bool service_pidfd_alive(const struct vm_entry *e);
/* Try every pending write once more now (shutdown). */
void service_flush_pending(struct daemon *d);

/*
 * io.banger.Handles' calls: api.c decodes, finds the VM (service_find),
 * admits the caller, then calls one of these; each answers exactly once
 * through d->answer, possibly before it returns.
 */
struct vm_entry *service_find(struct daemon *d, const char *id);
/* Who may call the mutating methods and pass fds: uid 0, the daemon's uid, the admin group. */
bool service_may_mutate(const struct daemon *d, uid_t uid, gid_t gid, const gid_t *groups,
			size_t ngroups);
/* Why Register must refuse rec's names under the policy (checked before admission), or NULL. */
const char *service_register_refusal(const struct daemon *d, const struct vm_record *rec);
void service_register_call(struct daemon *d, const struct vm_record *rec, void *call);
void service_get_handles_call(struct daemon *d, const struct vm_entry *e, void *call);
void service_clear_handles_call(struct daemon *d, struct vm_entry *e, void *call);
void service_unregister_call(struct daemon *d, struct vm_entry *e, void *call);
void service_teardown_call(struct daemon *d, struct vm_entry *e, const struct ps_caller *caller,
			   void *call);
void service_reconcile_call(struct daemon *d, const struct ps_caller *caller, void *call);

/* What a reply shows of a VM: a copy, taken on the loop's thread. */
struct service_vm {
	struct vm_record rec;
	struct vm_handles h;
	bool has_handles;
	bool persisted;	     /* vm.json and handles.json say what the cache says */
	const char *problem; /* a file that could not be read, or NULL */
};
void service_vm_get(const struct vm_entry *e, struct service_vm *v);
/* Every VM, sorted by id (the caller frees the array), or NULL when out of memory. */
struct vm_entry **service_list(struct daemon *d, size_t *n);

/* What GetStatus says of bangerd (the Varlink server's own counters are api.c's). */
struct service_status {
	size_t vms;
	int64_t by_state[VM_STOPPED + 1];
	int64_t liveness_unknown;
	int64_t uptime_usec;
	pid_t helper_pid;
	bool helper_privileged;
	const char *helper_state;   /* "ok", "stuck", "gone" */
	const char *helper_problem; /* NULL while ok */
	uint64_t persist_failures, events, helper_replacements;
	const struct daemon_counters *counters;
};
void service_status(const struct daemon *d, struct service_status *st);

/* api.c: io.banger.Handles over Varlink */
/* uid 0, the daemon's uid, or the admin group: may mutate, may pass fds (varlink is_admin). */
bool api_may_mutate(const struct varlink_peer *p, void *userdata);
extern const struct varlink_interface banger_handles_interface;
void api_end_watchers(struct daemon *d);
/* Make api.c the one that answers the service's results (before serving). */
void api_attach(struct daemon *d);
