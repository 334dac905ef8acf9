/*
 * io.banger.Handles' calls as the service sees them: one entry per method,
 * each orchestrating the cache, the store and the helper and answering
 * exactly once through d->answer with a struct service_result. api.c only
 * decodes before and encodes after; the rules of the writes are service.c's.
 *
 * SetHandles is the one that asks the helper before it may write: the
 * client's process is probed (and probed again while it is a firecracker
 * that does not listen on the VM's api socket yet), then the handles are set
 * through service.c's lane, as a Teardown is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cache.h"
#include "daemon.h"
#include "helper_client.h"
#include "kernel_ids.h"
#include "path.h"
#include "policy.h"
#include "reconcile.h"
#include "service.h"
#include "service_calls.h"
#include "store.h"
#include "vm.h"

/* --- SetHandles: probe the client's process, then set -------------------- */

/*
 * A SetHandles in flight: the probe of the client's process, repeated
 * while that process is a firecracker that does not listen on the VM's
 * api socket yet (it binds just after it starts), until a deadline.
 */
struct set_request {
	struct daemon *d;
	void *call; /* api.c's, for the answer */
	char id[VM_ID_MAX + 1];
	struct vm_handles handles;
	int pidfd; /* the client's pidfd, or -1: probe by pid */
	struct ps_caller caller;
	uint64_t deadline_ms;
	unsigned retry_ms;
	struct event *retry;
};

#define SET_PROBE_RETRY_FIRST_MS 5
#define SET_PROBE_RETRY_MAX_MS	 100

/* Answer the SetHandles and forget it. */
static void set_request_answer(struct set_request *req, const struct service_result *res)
{
	req->d->answer(req->call, res);
	if (req->retry)
		event_free(req->retry);
	safe_close(req->pidfd); /* a pidfd: its close never blocks */
	free(req);
}

static void set_request_fail(struct set_request *req, enum service_error error, const char *reason)
{
	struct service_result res = SERVICE_RESULT(error);
	res.id = req->id;
	res.reason = reason;
	set_request_answer(req, &res);
}

/* A probe the helper never got: out of memory (bangerd's), or the helper stuck or gone. */
static void set_request_helper_failed(struct set_request *req, int err)
{
	char why[512];
	if (err == -ENOMEM)
		set_request_fail(req, SERVICE_OUT_OF_MEMORY,
				 "out of memory sending the request to the helper");
	else
		set_request_fail(req, SERVICE_HELPER_UNAVAILABLE,
				 service_helper_failure(req->d, err, why, sizeof(why)));
}

static void on_set_probe(struct helper_client *hc, struct helper_reply *reply, void *userdata);

static int set_probe_send(struct set_request *req)
{
	struct daemon *d = req->d;
	struct vm_entry *e = cache_find(&d->cache, req->id);
	if (!e)
		return -ENOENT;
	struct vm_record rec;
	cache_entry_get(e, &rec, NULL);
	return helper_probe(d->helper, &req->caller, req->handles.pid, req->pidfd, 0, rec.api_sock,
			    on_set_probe, req);
}

static void on_set_retry(evutil_socket_t fd, short what, void *arg)
{
	struct set_request *req = arg;
	(void)fd;
	(void)what;
	int r = set_probe_send(req);
	if (r == -ENOENT)
		set_request_fail(req, SERVICE_NO_SUCH_VM, NULL); /* unregistered while we waited */
	else if (r < 0)
		set_request_helper_failed(req, r);
}

/* Not listening yet: probe again soon, if the deadline allows. Returns false when it does not. */
static bool set_probe_retry(struct set_request *req)
{
	uint64_t now = monotonic_ms();
	if (now >= req->deadline_ms)
		return false;
	if (!req->retry && !(req->retry = evtimer_new(req->d->base, on_set_retry, req)))
		return false;
	req->retry_ms = req->retry_ms ? req->retry_ms * 2 : SET_PROBE_RETRY_FIRST_MS;
	if (req->retry_ms > SET_PROBE_RETRY_MAX_MS)
		req->retry_ms = SET_PROBE_RETRY_MAX_MS;
	uint64_t wait =
	    req->retry_ms < req->deadline_ms - now ? req->retry_ms : req->deadline_ms - now;
	struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
	return evtimer_add(req->retry, &tv) == 0;
}

static void on_handles_set(struct daemon *d, const char *id, struct vm_entry *e, int err,
			   void *userdata)
{
	struct set_request *req = userdata;
	struct service_result res = SERVICE_RESULT(e ? SERVICE_OK : SERVICE_NO_SUCH_VM);
	(void)d;
	res.id = id;
	res.vm = e; /* NULL: unregistered while it waited */
	res.persisted = err == 0;
	if (e && err == -ENOMEM) {
		res.error = SERVICE_OUT_OF_MEMORY;
		res.reason = "out of memory setting the handles; a retry sets them";
	}
	set_request_answer(req, &res);
}

/* The probe found firecracker: set its handles, unless another one is watched and lives. */
static void set_probe_running(struct set_request *req, struct vm_entry *e,
			      const struct ps_probe_reply *r, int pidfd)
{
	struct daemon *d = req->d;
	/* A watched firecracker is replaced only once it has exited. */
	if (e->pid != r->pid && service_pidfd_alive(e)) {
		safe_close(pidfd);
		struct service_result res = SERVICE_RESULT(SERVICE_STILL_RUNNING);
		res.id = e->id;
		res.pid = e->pid;
		set_request_answer(req, &res);
		return;
	}
	req->handles.pid = r->pid;
	req->handles.start_time = r->start_time;
	memcpy(req->handles.boot_id, d->boot_id, sizeof(req->handles.boot_id));
	/* Answered once handles.json is durable (on_handles_set). */
	service_set_handles(d, e, &req->handles, pidfd, on_handles_set, req);
}

static void on_set_probe(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct set_request *req = userdata;
	(void)hc;

	/* Looked up again: the VM may have been unregistered while the probe ran. */
	struct vm_entry *e = cache_find(&req->d->cache, req->id);
	if (reply->err < 0) {
		set_request_fail(req, SERVICE_HELPER_UNAVAILABLE, reply->why);
		return;
	}
	if (!e) {
		set_request_fail(req, SERVICE_NO_SUCH_VM, NULL); /* unregistered while it ran */
		return;
	}
	const struct ps_probe_reply *r = &reply->msg->payload.probe_reply;
	char reason[128];
	switch (r->status) {
	case PS_PROBE_RUNNING:
		set_probe_running(req, e, r,
				  ps_message_take_fd((struct ps_message *)reply->msg, 0));
		return;
	case PS_PROBE_NOT_RUNNING: {
		if (r->reason == PS_REASON_NO_LISTENER && set_probe_retry(req))
			return; /* answered by a later probe */
		struct service_result res = SERVICE_RESULT(SERVICE_NOT_FIRECRACKER);
		res.id = req->id;
		res.pid = req->handles.pid;
		res.reason = ps_reason_name(r->reason);
		set_request_answer(req, &res);
		return;
	}
	case PS_PROBE_REFUSED:
		set_request_fail(req, SERVICE_POLICY_REFUSED, ps_reason_name(r->reason));
		return;
	default:
		snprintf(reason, sizeof(reason), "the helper could not probe the process: %s",
			 strerror(-r->err));
		set_request_fail(req, SERVICE_HELPER_UNAVAILABLE, reason);
	}
}

/*
 * The kernel's numbers for the VM's tap and loops, read now into h: a
 * reported tap must exist and each loop be an attached /dev/loopN, and the
 * ifindex and diskseqs say which link and which attach the VM uses, so that
 * no later one of the same name is ever torn down for it (kernel_ids.h).
 * NULL, or the parameter at fault with why in reason.
 */
static const char *set_read_kernel_ids(struct vm_handles *h, char *reason, size_t size)
{
	int r = h->tap[0] ? tap_ifindex_read(h->tap, &h->tap_ifindex) : 0;
	if (r == -ENXIO)
		snprintf(reason, size, "no network interface is named %s: no VM can be using it",
			 h->tap);
	else if (r < 0)
		snprintf(reason, size, "the ifindex of %s could not be read: %s", h->tap,
			 strerror(-r));
	if (r < 0)
		return "tap";
	for (uint32_t i = 0; i < h->n_loops; i++) {
		const char *dev = h->loops[i];
		r = loop_diskseq_read(dev, &h->loop_diskseq[i]);
		if (r == 0)
			continue;
		if (r == -EINVAL)
			snprintf(reason, size, "%s is not a loop device, /dev/loopN", dev);
		else if (r == -ENXIO)
			snprintf(reason, size,
				 "%s is not attached to a backing file: no VM can be using it",
				 dev);
		else
			snprintf(reason, size, "the diskseq of %s could not be read: %s", dev,
				 r == -EAGAIN ? "it kept being re-attached" : strerror(-r));
		return "loops";
	}
	return NULL;
}

void service_set_handles_call(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			      int pidfd, const struct ps_caller *caller, void *call)
{
	struct set_request *req = calloc(1, sizeof(*req));
	if (!req) {
		safe_close(pidfd);
		struct service_result res = SERVICE_RESULT(SERVICE_OUT_OF_MEMORY);
		res.reason = "out of memory for the request";
		d->answer(call, &res);
		return;
	}
	req->d = d;
	req->call = call;
	req->pidfd = pidfd;
	req->handles = *h;
	memcpy(req->id, e->id, sizeof(req->id));
	req->caller = *caller;
	field_set(req->caller.vm, sizeof(req->caller.vm), e->id); /* the helper audits it */
	char reason[PS_PATH_MAX + 128];
	const char *bad = set_read_kernel_ids(&req->handles, reason, sizeof(reason));
	if (bad) {
		struct service_result res = SERVICE_RESULT(SERVICE_INVALID_PARAMETER);
		res.parameter = bad;
		res.reason = reason;
		set_request_answer(req, &res);
		return;
	}
	req->deadline_ms = monotonic_ms() + d->cfg.api_sock_wait_ms;
	int r = set_probe_send(req);
	if (r < 0)
		set_request_helper_failed(req, r);
}

/* --- io.banger.Handles' calls: one entry per method, answered through d->answer --- */

static void answer_error(struct daemon *d, void *call, enum service_error error, const char *id,
			 const char *reason)
{
	struct service_result res = SERVICE_RESULT(error);
	res.id = id;
	res.reason = reason;
	d->answer(call, &res);
}

/* A request the helper never got: out of memory (bangerd's), or the helper stuck or gone. */
static void answer_helper_failed(struct daemon *d, void *call, const char *id, int err)
{
	char why[512];
	if (err == -ENOMEM)
		answer_error(d, call, SERVICE_OUT_OF_MEMORY, id,
			     "out of memory sending the request to the helper");
	else
		answer_error(d, call, SERVICE_HELPER_UNAVAILABLE, id,
			     service_helper_failure(d, err, why, sizeof(why)));
}

/* The VM's files, named in a StorageFailed or CorruptState ("" for its directory). */
static const char *vm_file(struct daemon *d, const char *id, const char *name, char *buf,
			   size_t size)
{
	store_path(&d->store, id, name, buf, size);
	return buf;
}

struct vm_entry *service_find(struct daemon *d, const char *id)
{
	return cache_find(&d->cache, id);
}

void service_vm_get(const struct vm_entry *e, struct service_vm *v)
{
	cache_entry_get(e, &v->rec, &v->h);
	v->has_handles = e->has_handles;
	v->persisted = e->handles_persisted && e->record_persisted;
	v->problem = e->problem;
}

bool service_may_mutate(const struct daemon *d, uid_t uid, gid_t gid, const gid_t *groups,
			size_t ngroups)
{
	if (uid == 0 || uid == d->uid)
		return true;
	if (!d->has_admin_group)
		return false;
	if (gid == d->admin_gid)
		return true;
	for (size_t i = 0; i < ngroups; i++)
		if (groups[i] == d->admin_gid)
			return true;
	return false;
}

const char *service_register_refusal(const struct daemon *d, const struct vm_record *rec)
{
	/* Refuse now what the helper would refuse at teardown time. */
	const struct ps_policy *policy = &d->cfg.policy;
	if (!policy_api_sock_allowed(policy, rec->api_sock))
		return "api_sock is outside every api socket root";
	if (rec->planned.tap[0] && !policy_tap_name_allowed(policy, rec->planned.tap))
		return "planned tap lacks the tap prefix";
	for (uint32_t i = 0; i < rec->planned.n_loop_files; i++)
		if (!policy_loop_file_allowed(policy, rec->planned.loop_files[i]))
			return "a planned loop file is outside every loop root";
	for (uint32_t i = 0; i < rec->planned.n_dm; i++)
		if (!policy_dm_name_allowed(policy, rec->planned.dm[i]))
			return "a planned DM name lacks the DM prefix";
	return NULL;
}

static void on_register_call(struct daemon *d, const char *id, struct vm_entry *e, int err,
			     void *call)
{
	char file[PATH_MAX], why[96];
	struct service_result res = SERVICE_RESULT(SERVICE_OK);
	res.id = id;
	res.vm = e;
	if (err == -EEXIST) {
		/* Which state it is in, and what to call before it can take a next run. */
		res.error = SERVICE_VM_EXISTS;
		res.state = e ? vm_state_name(e->state) : NULL;
		res.reason = e ? service_rearm_refusal(e) : NULL;
	} else if (err == -EDQUOT) {
		res.error = SERVICE_TOO_MANY_VMS;
		res.limit = d->cfg.max_vms;
	} else if (err == -ENOMEM) {
		res.error = SERVICE_OUT_OF_MEMORY;
		res.reason = "out of memory registering the VM";
	} else if (err < 0) {
		res.error = SERVICE_STORAGE_FAILED;
		res.file = vm_file(d, id, "vm.json", file, sizeof(file));
		res.reason = service_errno_text(err, why, sizeof(why));
	}
	d->answer(call, &res);
}

void service_register_call(struct daemon *d, const struct vm_record *rec, void *call)
{
	if (!cache_find(&d->cache, rec->id) && cache_count(&d->cache) >= d->cfg.max_vms) {
		on_register_call(d, rec->id, NULL, -EDQUOT, call);
		return;
	}
	service_register(d, rec, on_register_call, call);
}

void service_get_handles_call(struct daemon *d, const struct vm_entry *e, void *call)
{
	char file[PATH_MAX];
	struct vm_handles h;
	struct service_result res = SERVICE_RESULT(SERVICE_OK);
	res.id = e->id;
	if (!e->has_handles && e->kept_as) {
		res.error = SERVICE_CORRUPT_STATE;
		res.file = vm_file(d, e->id, "handles.json", file, sizeof(file));
		res.kept_as = e->kept_as;
	} else if (!e->has_handles) {
		res.error = SERVICE_NO_HANDLES;
	} else {
		cache_entry_get(e, NULL, &h);
		res.handles = &h;
	}
	d->answer(call, &res);
}

static void on_clear_call(struct daemon *d, const char *id, struct vm_entry *e, int err, void *call)
{
	(void)e;
	if (err == -ENOENT)
		answer_error(d, call, SERVICE_NO_SUCH_VM, id, NULL);
	else if (err < 0)
		answer_error(d, call, SERVICE_OUT_OF_MEMORY, id,
			     "out of memory clearing the handles");
	else
		answer_error(d, call, SERVICE_OK, id, NULL); /* a failed write is retried */
}

void service_clear_handles_call(struct daemon *d, struct vm_entry *e, void *call)
{
	service_clear_handles(d, e, on_clear_call, call);
}

static void answer_still_running(struct daemon *d, void *call, const struct vm_entry *e)
{
	struct service_result res = SERVICE_RESULT(SERVICE_STILL_RUNNING);
	res.id = e->id;
	res.pid = e->pid;
	d->answer(call, &res);
}

static void on_unregister_call(struct daemon *d, const char *id, struct vm_entry *e, int err,
			       void *call)
{
	char file[PATH_MAX], why[96];
	if (err == -EBUSY && e) {
		answer_still_running(d, call, e);
	} else if (err == -ENOENT) {
		answer_error(d, call, SERVICE_NO_SUCH_VM, id, NULL);
	} else if (err == -ENOMEM) {
		answer_error(d, call, SERVICE_OUT_OF_MEMORY, id,
			     "out of memory unregistering the VM");
	} else if (err < 0) {
		struct service_result res = SERVICE_RESULT(SERVICE_STORAGE_FAILED);
		res.id = id;
		res.file = vm_file(d, id, "", file, sizeof(file));
		res.reason = service_errno_text(err, why, sizeof(why));
		d->answer(call, &res);
	} else {
		answer_error(d, call, SERVICE_OK, id, NULL);
	}
}

void service_unregister_call(struct daemon *d, struct vm_entry *e, void *call)
{
	/* Decided in turn with the VM's other mutations: a SetHandles before it counts. */
	service_unregister(d, e, on_unregister_call, call);
}

static void on_teardown_call(struct daemon *d, const char *id, const struct teardown_outcome *out,
			     void *call)
{
	if (out->err < 0) {
		answer_error(d, call, SERVICE_HELPER_UNAVAILABLE, id, out->why);
		return;
	}
	struct service_result res = SERVICE_RESULT(SERVICE_OK);
	res.teardown = true;
	res.results = out->reply;
	d->answer(call, &res);
}

void service_teardown_call(struct daemon *d, struct vm_entry *e, const struct ps_caller *caller,
			   void *call)
{
	/* Never on unknown: only a VM known to be dead loses its resources. */
	if (service_liveness(e) != VM_DEAD) {
		answer_still_running(d, call, e);
		return;
	}
	int r = service_teardown(d, e, caller, NULL, on_teardown_call, call);
	if (r < 0)
		answer_helper_failed(d, call, e->id, r);
}

static void on_reconcile_call(struct daemon *d, int err, const char *why,
			      const struct reconcile_report *report, void *call)
{
	if (err == -ENOMEM) {
		answer_error(d, call, SERVICE_OUT_OF_MEMORY, NULL, "out of memory reconciling");
		return;
	}
	if (err < 0 || !report) {
		answer_error(d, call, SERVICE_HELPER_UNAVAILABLE, NULL,
			     why ? why : "reconcile could not finish");
		return;
	}
	struct service_result res = SERVICE_RESULT(SERVICE_OK);
	res.report = report;
	d->answer(call, &res);
}

void service_reconcile_call(struct daemon *d, const struct ps_caller *caller, void *call)
{
	int r = reconcile_start(d, caller, on_reconcile_call, call);
	if (r < 0)
		answer_helper_failed(d, call, NULL, r);
}

static int compare_entries(const void *a, const void *b)
{
	const struct vm_entry *const *x = a, *const *y = b;
	return strcmp((*x)->id, (*y)->id);
}

struct vm_entry **service_list(struct daemon *d, size_t *n)
{
	struct vm_entry *e, *tmp;
	struct vm_entry **all = calloc(cache_count(&d->cache) + 1, sizeof(*all));
	*n = 0;
	if (!all)
		return NULL;
	CACHE_FOREACH(&d->cache, e, tmp)
	all[(*n)++] = e;
	qsort(all, *n, sizeof(*all), compare_entries);
	return all;
}

void service_status(const struct daemon *d, struct service_status *st)
{
	static const char *const helper_state_names[] = {
	    [HELPER_STATE_OK] = "ok", [HELPER_STATE_STUCK] = "stuck", [HELPER_STATE_GONE] = "gone"};
	struct vm_entry *e, *tmp;
	struct timespec now;
	memset(st, 0, sizeof(*st));
	CACHE_FOREACH(&d->cache, e, tmp)
	{
		st->by_state[e->state]++;
		st->liveness_unknown += service_liveness(e) == VM_UNKNOWN;
	}
	st->vms = cache_count(&d->cache);
	clock_gettime(CLOCK_MONOTONIC, &now);
	st->uptime_usec = (int64_t)(now.tv_sec - d->started.tv_sec) * 1000000 +
			  (now.tv_nsec - d->started.tv_nsec) / 1000;
	st->helper_pid = d->helper_said_pid;
	st->helper_privileged = d->helper_privileged;
	st->helper_state = helper_state_names[d->helper_state];
	st->helper_problem = d->helper_state != HELPER_STATE_OK ? d->helper_problem : NULL;
	st->persist_failures = d->persist_failures;
	st->events = d->events;
	st->helper_replacements = d->helper_replacements;
	st->counters = &d->counters;
}
