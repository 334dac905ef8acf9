/*
 * service_calls.c: io.banger.Handles' methods as the service runs them.
 * api.c decodes, finds the VM (service_find), admits the caller, then calls
 * one of these; each answers exactly once through d->answer, possibly
 * before it returns.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "privsep.h"
#include "service.h"
#include "vm.h"

struct daemon;
struct daemon_counters;

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

/*
 * SetHandles: read the tap's ifindex and the loops' diskseqs
 * (InvalidParameter when the tap does not exist or a loop is not attached),
 * probe the client's process (by pid, or by pidfd, which it takes), again
 * while it is a firecracker not yet listening on the VM's api socket (up to
 * api_sock_wait_ms), then set. Answered exactly once, through d->answer.
 */
void service_set_handles_call(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			      int pidfd, const struct ps_caller *caller, void *call);
