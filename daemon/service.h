/*
 * service.c: the rules of DESIGN §2 — what is written, in which order, and
 * what the cache says — and the teardown of what a VM holds. Everything
 * that changes a VM goes through here, one mutation at a time per VM;
 * events leave only through the sink api.c registers.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <yajl/yajl_gen.h>

#include "cache.h"
#include "privsep.h"
#include "vm.h"

struct daemon;

/*
 * What a call to the service came to, for api.c to say. Each error is one
 * of io.banger.Handles' errors; the comment names the fields it carries.
 */
enum service_error {
	SERVICE_OK,
	SERVICE_NO_SUCH_VM,	    /* id */
	SERVICE_VM_EXISTS,	    /* id, state; reason: what to call first */
	SERVICE_TOO_MANY_VMS,	    /* limit */
	SERVICE_STORAGE_FAILED,	    /* id, file, reason: the errno */
	SERVICE_POLICY_REFUSED,	    /* reason */
	SERVICE_NOT_FIRECRACKER,    /* id, pid, reason */
	SERVICE_STILL_RUNNING,	    /* id, pid */
	SERVICE_NO_HANDLES,	    /* id */
	SERVICE_CORRUPT_STATE,	    /* id, file, kept_as */
	SERVICE_HELPER_UNAVAILABLE, /* reason: stuck or gone, and why */
	SERVICE_OUT_OF_MEMORY,	    /* reason: bangerd's own, never blamed on the helper */
	SERVICE_INVALID_PARAMETER,  /* parameter, reason: what the host says of it */
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
	const char *parameter;
	const struct vm_handles *handles; /* OK of GetHandles */
	bool teardown;			  /* OK of Teardown: its results */
	const struct ps_teardown_reply *results;
	const struct reconcile_report *report; /* OK of Reconcile: what it found */
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
/* "No space left on device (ENOSPC)": err (negative) for a reply or a log line, into buf. */
const char *service_errno_text(int err, char *buf, size_t size);
/* Why a request could not be sent, into buf: the helper is stuck or gone (and why), or err. */
const char *service_helper_failure(const struct daemon *d, int err, char *buf, size_t size);
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
 * -EDQUOT: max_vms records already (not -ENOSPC: that is a full disk's); -ENOMEM; else
 * vm.json could not be written (its errno).
 */
void service_register(struct daemon *d, const struct vm_record *rec, service_done_fn done,
		      void *userdata);
/*
 * Takes pidfd. 0: cached and persisted; -ENOENT: unregistered meanwhile;
 * -ENOMEM: out of memory (a retry sets them); another -errno: cached, not
 * persisted, the write's errno (retried; the reply says persisted false).
 */
void service_set_handles(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			 int pidfd, service_done_fn done, void *userdata);
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
	struct held_name **names; /* sorted by key */
	size_t n;
};
/*
 * 0, or -ENOMEM with held empty: the set is whole or there is none, never a
 * part of it (a teardown that trusted a part could take a live VM's device).
 */
int held_names_collect(struct daemon *d, struct held_names *held);
void held_names_free(struct held_names *held);
/* held: what live VMs hold (NULL: collected for this one call; -ENOMEM if it cannot be). */
int service_teardown(struct daemon *d, struct vm_entry *e, const struct ps_caller *caller,
		     const struct held_names *held, teardown_done_fn done, void *userdata);
/* Watch the verified firecracker of e (adopting a new pid if it moved). */
void service_adopt_process(struct daemon *d, struct vm_entry *e, int32_t pid, uint64_t start_time,
			   int pidfd);
/* Does the process e watches still live? (false when e watches none) */
bool service_pidfd_alive(const struct vm_entry *e);
/* Try every pending write once more now (shutdown). */
void service_flush_pending(struct daemon *d);
