/*
 * Reconcile (DESIGN §3): after every start, and on demand, decide for every
 * record whether its VM lives, and tear down what dead ones left behind.
 *
 * One SCAN of /proc answers for all records at once (the Go daemon ran one
 * pgrep per VM). Liveness has three answers and only "dead" tears down:
 * when the helper is gone, or could not inspect every process, a VM it did
 * not find is "unknown" and nothing of it is touched. A VM found under its
 * api socket is alive whatever pid it has now (it is adopted); one not found
 * is dead only once a probe of its saved pid says that process is gone. One VM's
 * failure never stops the others'. Orphans (firecrackers under the roots
 * that no record owns) are reported, never killed.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cache.h"
#include "daemon.h"
#include "helper_client.h"
#include "json.h"
#include "log.h"
#include "message_id.h"
#include "reconcile.h"
#include "service.h"

static const char *const rc_action_names[] = {
    [RC_KEPT] = "kept",
    [RC_TORN_DOWN] = "torn_down",
    [RC_FAILED] = "failed",
    [RC_UNKNOWN] = "unknown",
    [RC_CLEAN] = "clean",
    [RC_RETAINED] = "retained",
    [RC_TEAR_DOWN] = "tearing_down",
};
static_assert(RC_TEAR_DOWN == RECONCILE_ACTIONS, "the report's actions come first");

const char *reconcile_action_name(size_t action)
{
	return action < RECONCILE_ACTIONS ? rc_action_names[action] : "?";
}

struct rc_waiter {
	reconcile_done_fn done;
	void *userdata;
};

struct reconcile {
	struct daemon *d;
	struct ps_caller caller;
	struct rc_vm *vms;
	size_t n;
	size_t *scan_vm; /* the SCAN's socket i is vms[scan_vm[i]]'s */
	size_t n_scan;
	struct ps_scan_entry *orphans;
	size_t n_orphans;
	size_t pending; /* what the report waits for: probes, adoptions' writes, teardowns */
	size_t probes;	/* saved pids still being probed: the teardowns wait for them */
	int err;
	char why[640]; /* err < 0 because of the helper: its failure, for the report and callers */
	struct rc_waiter *waiters;
	size_t n_waiters;
	uint64_t started_usec; /* CLOCK_MONOTONIC */
};

static int compare_ids(const void *a, const void *b)
{
	return strcmp(((const struct rc_vm *)a)->id, ((const struct rc_vm *)b)->id);
}

static struct reconcile_report reconcile_report(const struct reconcile *rc)
{
	return (struct reconcile_report){
	    .vms = rc->vms, .n_vms = rc->n, .orphans = rc->orphans, .n_orphans = rc->n_orphans};
}

static void reconcile_log(const struct reconcile *rc)
{
	size_t counts[ELEMENTSOF(rc_action_names)] = {0};
	for (size_t i = 0; i < rc->n; i++) {
		const struct rc_vm *v = &rc->vms[i];
		counts[v->action]++;
		if (v->action != RC_KEPT && v->action != RC_CLEAN)
			log_struct(LOG_LEVEL_INFO, 0, BANGER_MID_RECONCILE_VM,
				   LOG_FIELDS({"BANGER_VM_ID", v->id},
					      {"BANGER_CALL", rc->caller.call},
					      {"BANGER_RESULT", rc_action_names[v->action]},
					      {"BANGER_REASON", v->reason}),
				   "reconcile: vm %s %s%s%s", v->id, rc_action_names[v->action],
				   v->reason ? ": " : "", v->reason ? v->reason : "");
	}
	for (size_t i = 0; i < rc->n_orphans; i++)
		log_warnx(
		    "reconcile: orphan firecracker pid %d on %s (no record owns it; not killed)",
		    rc->orphans[i].pid, rc->orphans[i].api_sock);
	log_struct(
	    LOG_LEVEL_INFO, 0, BANGER_MID_RECONCILE_SUMMARY,
	    LOG_FIELDS({"BANGER_CALL", rc->caller.call}),
	    "reconcile: %zu VMs: %zu kept, %zu torn down, %zu failed, %zu unknown, %zu clean, "
	    "%zu retained; %zu orphans",
	    rc->n, counts[RC_KEPT], counts[RC_TORN_DOWN], counts[RC_FAILED], counts[RC_UNKNOWN],
	    counts[RC_CLEAN], counts[RC_RETAINED], rc->n_orphans);
}

/* What GetStatus counts of every reconcile. */
static void reconcile_count(const struct reconcile *rc)
{
	struct daemon_counters *n = &rc->d->counters;
	uint64_t usec = monotonic_us() - rc->started_usec;
	n->reconciles++;
	n->reconciles_failed += rc->err < 0;
	n->reconcile_usec_total += usec;
	n->reconcile_usec_last = usec;
	for (size_t i = 0; i < rc->n; i++)
		if (rc->vms[i].action < RECONCILE_ACTIONS)
			n->reconcile_vms[rc->vms[i].action]++;
}

static void reconcile_finish(struct reconcile *rc)
{
	struct daemon *d = rc->d;
	reconcile_log(rc);
	reconcile_count(rc);
	d->reconcile = NULL;
	struct reconcile_report report = reconcile_report(rc);
	for (size_t i = 0; i < rc->n_waiters; i++)
		rc->waiters[i].done(d, rc->err, rc->why[0] ? rc->why : NULL,
				    rc->err < 0 ? NULL : &report, rc->waiters[i].userdata);
	for (size_t i = 0; i < rc->n; i++)
		free(rc->vms[i].results);
	free(rc->vms);
	free(rc->scan_vm);
	free(rc->orphans);
	free(rc->waiters);
	free(rc);
}

/* The helper failed under a reconcile: the report says so, and so does every caller. */
static void reconcile_helper_failed(struct reconcile *rc, int err, const char *why)
{
	if (rc->err < 0)
		return;
	rc->err = err;
	snprintf(rc->why, sizeof(rc->why), "%s", why ? why : strerror(-err));
}

static void on_vm_teardown(struct daemon *d, const char *id, const struct teardown_outcome *out,
			   void *userdata)
{
	struct reconcile *rc = userdata;
	struct rc_vm key, *v;
	(void)d;
	memcpy(key.id, id, sizeof(key.id));
	v = bsearch(&key, rc->vms, rc->n, sizeof(*rc->vms), compare_ids);
	if (out->err < 0)
		reconcile_helper_failed(rc, out->err, out->why);
	if (v) {
		if (out->err < 0) {
			/* Not torn down as far as we know: it may hold part of what it held. */
			v->action = RC_UNKNOWN;
			v->reason = rc->why;
		} else {
			v->action = out->complete ? RC_TORN_DOWN : RC_FAILED;
			v->results = malloc(sizeof(*v->results));
			if (v->results)
				*v->results = *out->reply;
		}
	}
	if (--rc->pending == 0)
		reconcile_finish(rc);
}

/* Our pidfd says it lives: a scan that missed it (or was not asked) cannot overrule that. */
static bool decide_watched(struct rc_vm *v, const struct vm_entry *e)
{
	if (e->liveness != VM_ALIVE || e->pidfd < 0)
		return false;
	v->action = RC_KEPT;
	v->pid = e->pid;
	return true;
}

/* Known dead: tear down what it holds, unless it holds nothing or is kept on exit. */
static void decide_dead(struct rc_vm *v, struct vm_entry *e)
{
	struct vm_record rec;
	e->liveness = VM_DEAD;
	if (!service_holds_resources(e)) {
		v->action = RC_CLEAN;
		return;
	}
	cache_entry_get(e, &rec, NULL);
	if (rec.on_exit == VM_ON_EXIT_KEEP) {
		v->action = RC_RETAINED;
		v->reason = "dead, but on_exit is keep";
		return;
	}
	v->action = RC_TEAR_DOWN; /* sent once every VM's liveness is decided */
}

static void probe_saved_pid(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e);

/* Why a scan's "not found" proves nothing, or NULL when it saw every process. */
static const char *scan_incomplete(const struct helper_scan_result *res)
{
	if (res->cut_short)
		return "the helper's scan ran out of its time budget before it had inspected "
		       "every process";
	return res->uninspected ? "the helper could not inspect every process" : NULL;
}

/* One VM the scan did not find: dead once its saved pid, if any, is gone too. */
static void decide_unfound(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e,
			   const struct helper_scan_result *res)
{
	struct vm_handles h;
	if (decide_watched(v, e))
		return;
	if (scan_incomplete(res)) {
		e->liveness = VM_UNKNOWN;
		v->action = RC_UNKNOWN;
		v->reason = scan_incomplete(res);
		return;
	}
	cache_entry_get(e, NULL, &h);
	if (e->has_handles && h.pid > 0 && strcmp(h.boot_id, rc->d->boot_id) == 0)
		probe_saved_pid(rc, v, e);
	else
		decide_dead(v, e);
}

/* Liveness could not be established: say why, touch nothing. */
static void decide_unknown(struct rc_vm *v, struct vm_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void decide_unknown(struct rc_vm *v, struct vm_entry *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
	v->action = RC_UNKNOWN;
	v->reason = v->why;
	e->liveness = VM_UNKNOWN;
}

/* Its handles name a pid of another boot (DESIGN §3): dead without a probe or a scan. */
static void decide_other_boot(const struct daemon *d, struct rc_vm *v, struct vm_entry *e)
{
	struct vm_handles h;
	if (decide_watched(v, e)) /* set again meanwhile, in this boot */
		return;
	cache_entry_get(e, NULL, &h);
	if (!e->has_handles || strcmp(h.boot_id, d->boot_id) == 0) {
		decide_unknown(v, e, "its handles changed while the reconcile ran");
		return;
	}
	snprintf(v->why, sizeof(v->why), "its pid %d is of another boot (%s): dead without a probe",
		 (int)h.pid, h.boot_id);
	v->reason = v->why;
	decide_dead(v, e);
}

/*
 * Tear down the dead, sparing whatever the live hold: the set is built once for all of them.
 * Fail closed: without the whole set no teardown is sent, and every dead VM waits (failed,
 * with the reason) for the next reconcile or Teardown.
 */
static void send_teardowns(struct reconcile *rc)
{
	struct held_names held;
	bool whole = held_names_collect(rc->d, &held) == 0;
	for (size_t i = 0; !whole && i < rc->n; i++) {
		if (rc->vms[i].action != RC_TEAR_DOWN)
			continue;
		rc->vms[i].action = RC_FAILED;
		rc->vms[i].reason = "not torn down: out of memory listing what live VMs hold, "
				    "which a teardown must spare; the next reconcile retries";
	}
	for (size_t i = 0; whole && i < rc->n; i++) {
		struct rc_vm *v = &rc->vms[i];
		struct vm_entry *e =
		    v->action == RC_TEAR_DOWN ? cache_find(&rc->d->cache, v->id) : NULL;
		if (!e)
			continue;
		int r = service_teardown(rc->d, e, &rc->caller, &held, on_vm_teardown, rc);
		char why[512];
		if (r < 0) {
			reconcile_helper_failed(rc, r,
						service_helper_failure(rc->d, r, why, sizeof(why)));
			v->action = RC_UNKNOWN;
			v->reason = rc->why;
			continue;
		}
		rc->pending++;
	}
	held_names_free(&held);
}

/*
 * Never switch identity silently: several processes holding the VM's
 * listener, or one that is not the live process we watch, leave the VM
 * unknown and say so, naming every pid. A watched process is replaced
 * only once it has exited.
 */
static void decide_conflict(struct daemon *d, struct rc_vm *v, struct vm_entry *e,
			    const struct ps_scan_entry *claims, size_t n)
{
	char pids[96] = "";
	size_t off = 0;
	for (size_t i = 0; i < n && off < sizeof(pids); i++)
		off += (size_t)snprintf(pids + off, sizeof(pids) - off, "%s%d",
					i == 0	     ? ""
					: i + 1 == n ? " and "
						     : ", ",
					claims[i].pid);
	if (n > 1)
		decide_unknown(v, e, "pids %s all hold its api socket", pids);
	else
		decide_unknown(v, e, "watched pid %d lives, but pid %s holds its api socket",
			       (int)e->pid, pids);
	v->pid = e->pidfd >= 0 ? e->pid : 0;
	log_warnx("vm %s: identity conflict: %s; liveness unknown, nothing torn down", v->id,
		  v->why);
	service_emit(d, "identity_conflict", v->id, v->pid, v->why);
}

/* An adopted VM's scratch, rewritten if it moved, is durable: one wait fewer. */
static void on_adopt_written(struct daemon *d, const char *id, struct vm_entry *e, int err,
			     void *userdata)
{
	struct reconcile *rc = userdata;
	(void)d;
	(void)id;
	(void)e;
	(void)err;
	if (--rc->pending == 0)
		reconcile_finish(rc);
}

/* The scan found the one process holding the VM's listener. */
static void decide_found(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e,
			 const struct ps_scan_entry *m, int *pidfd)
{
	struct daemon *d = rc->d;
	if (e->pidfd >= 0 && e->pid != m->pid && service_pidfd_alive(e)) {
		decide_conflict(d, v, e, m, 1);
		return;
	}
	v->action = RC_KEPT;
	v->pid = m->pid;
	service_adopt_process(d, e, m->pid, m->start_time, *pidfd);
	*pidfd = -1;
	/* The report (and READY) waits for the scratch it may have rewritten. */
	rc->pending++;
	service_after_writes(d, v->id, on_adopt_written, rc);
}

/* Which VM of which reconcile a probe of a saved pid is for, and the pid it probes. */
struct rc_probe {
	struct reconcile *rc;
	char id[VM_ID_MAX + 1];
	pid_t pid;
};

/* What the probe of the saved pid says of a VM the scan did not find. */
static void decide_probed(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e,
			  const struct helper_reply *reply, pid_t pid)
{
	const struct ps_probe_reply *r = &reply->msg->payload.probe_reply;
	if (r->status == PS_PROBE_RUNNING) {
		/* Its listener after all (the scan missed it): adopted like a found VM. */
		int pidfd = ps_message_take_fd((struct ps_message *)reply->msg, 0);
		struct ps_scan_entry m = {
		    .kind = PS_SCAN_MATCH, .pid = r->pid, .start_time = r->start_time};
		decide_found(rc, v, e, &m, &pidfd);
		safe_close(pidfd);
	} else if (r->status == PS_PROBE_NOT_RUNNING && r->reason != PS_REASON_NO_LISTENER) {
		snprintf(v->why, sizeof(v->why),
			 "not found by the scan, and its pid %d is gone (%s)", (int)pid,
			 ps_reason_name(r->reason));
		v->reason = v->why;
		decide_dead(v, e);
	} else if (r->status == PS_PROBE_NOT_RUNNING) {
		decide_unknown(v, e,
			       "its firecracker pid %d still runs, but its api socket shows no "
			       "listener it holds",
			       (int)pid);
	} else {
		decide_unknown(v, e, "its pid %d could not be probed: %s", (int)pid,
			       r->reason ? ps_reason_name(r->reason) : strerror(-r->err));
	}
}

static void on_saved_pid_probe(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct rc_probe *p = userdata;
	struct reconcile *rc = p->rc;
	pid_t pid = p->pid;
	struct rc_vm key, *v;
	(void)hc;
	memcpy(key.id, p->id, sizeof(key.id));
	free(p);
	v = bsearch(&key, rc->vms, rc->n, sizeof(*rc->vms), compare_ids);
	struct vm_entry *e = v ? cache_find(&rc->d->cache, v->id) : NULL;
	if (v && !e) {
		v->action = RC_CLEAN;
		v->reason = "unregistered meanwhile";
	} else if (e && reply->err < 0) {
		reconcile_helper_failed(rc, reply->err, reply->why);
		decide_unknown(v, e, "%s", rc->why);
	} else if (e) {
		decide_probed(rc, v, e, reply, pid);
	}
	if (--rc->probes == 0)
		send_teardowns(rc);
	if (--rc->pending == 0)
		reconcile_finish(rc);
}

/*
 * DESIGN §3: a VM the scan did not find is dead only if its saved pid does not verify
 * either. Only a pid that is gone, or now another process, makes it dead: a firecracker
 * that still runs under the saved pid and start time keeps it (adopted if its listener
 * shows, unknown if not). A scan can miss a live VM's listener: its socket file unlinked
 * or renamed, or a sock_diag dump that skipped it while other sockets closed.
 */
static void probe_saved_pid(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e)
{
	struct vm_record rec;
	struct vm_handles h;
	char why[512];
	cache_entry_get(e, &rec, &h);
	struct rc_probe *p = malloc(sizeof(*p));
	int r = !p ? -ENOMEM : !rc->d->helper ? -EPIPE : 0;
	if (r == 0) {
		p->rc = rc;
		memcpy(p->id, v->id, sizeof(p->id));
		p->pid = h.pid;
		r = helper_probe(rc->d->helper, &rc->caller, h.pid, -1, h.start_time, rec.api_sock,
				 on_saved_pid_probe, p);
	}
	if (r < 0) {
		free(p);
		decide_unknown(v, e, "its pid %d could not be probed: %s", (int)h.pid,
			       service_helper_failure(rc->d, r, why, sizeof(why)));
		return;
	}
	v->action = RC_UNKNOWN; /* until the probe answers */
	v->reason = "its saved pid is being probed";
	rc->probes++;
	rc->pending++;
}

/* Apply every entry of the scan; *decided[i] says VM i got an answer from it. */
static void apply_scan(struct reconcile *rc, struct helper_scan_result *res, bool *decided)
{
	struct daemon *d = rc->d;
	for (size_t i = 0, j; i < res->count; i = j) {
		const struct ps_scan_entry *m = &res->entries[i];
		/* The helper sends an index's ambiguous claimants one after another. */
		for (j = i + 1;
		     j < res->count && m->kind == PS_SCAN_AMBIGUOUS &&
		     res->entries[j].kind == PS_SCAN_AMBIGUOUS && res->entries[j].index == m->index;
		     j++)
			;
		if (m->kind == PS_SCAN_ORPHAN) {
			rc->orphans[rc->n_orphans++] = *m;
			continue;
		}
		size_t k = m->index < rc->n_scan ? rc->scan_vm[m->index] : rc->n;
		struct vm_entry *e = k < rc->n ? cache_find(&d->cache, rc->vms[k].id) : NULL;
		if (!e || decided[k])
			continue;
		struct rc_vm *v = &rc->vms[k];
		decided[k] = true;
		if (m->kind == PS_SCAN_UNKNOWN)
			decide_unknown(v, e, "its api socket could not be looked at: %s",
				       strerror(-m->err));
		else if (m->kind == PS_SCAN_AMBIGUOUS)
			decide_conflict(d, v, e, m, j - i);
		else
			decide_found(rc, v, e, m, &res->pidfds[i]);
	}
}

/*
 * Its vm.json cannot be read, so there is no api socket to look for: its handles.json (if
 * any) decides. A pid of another boot is dead; a firecracker the scan found under the roots
 * with its saved pid and start time (an orphan, to the scan) may be it: unknown; else, once
 * the scan saw every process, dead like any VM the scan did not find.
 */
static void decide_unreadable(struct reconcile *rc, struct rc_vm *v, struct vm_entry *e,
			      const struct helper_scan_result *res)
{
	struct vm_handles h;
	if (decide_watched(v, e))
		return;
	if (!e->has_handles) {
		decide_unknown(v, e,
			       "its vm.json cannot be read and no handles.json says what it "
			       "holds: nothing torn down");
		return;
	}
	cache_entry_get(e, NULL, &h);
	if (strcmp(h.boot_id, rc->d->boot_id) != 0) {
		decide_other_boot(rc->d, v, e);
		return;
	}
	for (size_t i = 0; i < rc->n_orphans; i++)
		if (rc->orphans[i].pid == h.pid && rc->orphans[i].start_time == h.start_time) {
			decide_unknown(v, e,
				       "its vm.json cannot be read, and firecracker pid %d of "
				       "its handles.json lives",
				       (int)h.pid);
			return;
		}
	if (scan_incomplete(res)) {
		decide_unknown(v, e, "%s", scan_incomplete(res));
		return;
	}
	snprintf(v->why, sizeof(v->why),
		 "its vm.json cannot be read: torn down from its handles.json");
	v->reason = v->why;
	decide_dead(v, e);
}

static void on_scan(struct helper_client *hc, struct helper_scan_result *res, void *userdata)
{
	struct reconcile *rc = userdata;
	struct daemon *d = rc->d;
	(void)hc;

	rc->pending = 1; /* held until every VM is decided */
	bool *decided = res->err < 0 ? NULL : calloc(rc->n ? rc->n : 1, sizeof(bool));
	rc->orphans = decided ? calloc(res->count ? res->count : 1, sizeof(*rc->orphans)) : NULL;
	if (res->err < 0 || !decided || !rc->orphans) {
		if (res->why)
			reconcile_helper_failed(rc, res->err, res->why);
		else
			rc->err = res->err < 0 ? res->err : -ENOMEM;
		for (size_t i = 0; i < rc->n; i++) {
			rc->vms[i].action = RC_UNKNOWN;
			rc->vms[i].reason = res->why	   ? rc->why
					    : res->err < 0 ? "the helper could not scan"
							   : "out of memory";
		}
	} else {
		apply_scan(rc, res, decided);
		for (size_t i = 0; i < rc->n; i++) {
			struct vm_entry *e = cache_find(&d->cache, rc->vms[i].id);
			if (!e) {
				rc->vms[i].action = RC_CLEAN;
				rc->vms[i].reason = "unregistered meanwhile";
			} else if (!rc->vms[i].scanned && e->record_unreadable) {
				decide_unreadable(rc, &rc->vms[i], e, res);
			} else if (!rc->vms[i].scanned) {
				decide_other_boot(d, &rc->vms[i], e);
			} else if (!decided[i]) {
				decide_unfound(rc, &rc->vms[i], e, res);
			}
		}
		if (rc->probes == 0)
			send_teardowns(rc); /* else once the last probe answers */
	}
	free(decided);
	if (--rc->pending == 0)
		reconcile_finish(rc);
}

static int reconcile_add_waiter(struct reconcile *rc, reconcile_done_fn done, void *userdata)
{
	struct rc_waiter *w = realloc(rc->waiters, (rc->n_waiters + 1) * sizeof(*w));
	if (!w)
		return -ENOMEM;
	rc->waiters = w;
	rc->waiters[rc->n_waiters++] = (struct rc_waiter){done, userdata};
	return 0;
}

int reconcile_start(struct daemon *d, const struct ps_caller *caller, reconcile_done_fn done,
		    void *userdata)
{
	/* One at a time: a second caller gets the report of the one under way. */
	if (d->reconcile)
		return reconcile_add_waiter(d->reconcile, done, userdata);

	struct reconcile *rc = calloc(1, sizeof(*rc));
	size_t cap = cache_count(&d->cache);
	if (!rc)
		return -ENOMEM;
	rc->d = d;
	rc->caller = *caller;
	rc->started_usec = monotonic_us();
	rc->vms = calloc(cap ? cap : 1, sizeof(*rc->vms));
	rc->scan_vm = calloc(cap ? cap : 1, sizeof(*rc->scan_vm));
	char(*socks)[PS_SOCK_PATH_MAX] = calloc(cap ? cap : 1, PS_SOCK_PATH_MAX);
	const char **sock_ptrs = calloc(cap ? cap : 1, sizeof(char *));
	int r = rc->vms && rc->scan_vm && socks && sock_ptrs
		    ? reconcile_add_waiter(rc, done, userdata)
		    : -ENOMEM;
	if (r == 0) {
		struct vm_entry *e, *tmp;
		CACHE_FOREACH(&d->cache, e, tmp)
		memcpy(rc->vms[rc->n++].id, e->id, sizeof(e->id));
		qsort(rc->vms, rc->n, sizeof(*rc->vms), compare_ids);
		for (size_t i = 0; i < rc->n; i++) {
			struct vm_record rec;
			struct vm_handles h;
			e = cache_find(&d->cache, rc->vms[i].id);
			cache_entry_get(e, &rec, &h);
			/* A pid of another boot is dead whoever holds its socket now: never looked
			 * for. Nor is a socket that an unreadable vm.json cannot name. */
			if ((e->has_handles && strcmp(h.boot_id, d->boot_id) != 0) ||
			    e->record_unreadable)
				continue;
			rc->vms[i].scanned = true;
			memcpy(socks[rc->n_scan], rec.api_sock, PS_SOCK_PATH_MAX);
			sock_ptrs[rc->n_scan] = socks[rc->n_scan];
			rc->scan_vm[rc->n_scan++] = i;
		}
		r = helper_scan(d->helper, caller, sock_ptrs, rc->n_scan, on_scan, rc);
	}
	free(socks);
	free(sock_ptrs);
	if (r < 0) {
		free(rc->vms);
		free(rc->scan_vm);
		free(rc->waiters);
		free(rc);
		return r;
	}
	d->reconcile = rc;
	return 0;
}
