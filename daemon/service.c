/*
 * The handle rules of DESIGN §2, carried over from the Go daemon's
 * handles.go and hardened. This file decides what is written, in which
 * order, and what the cache says; api.c only translates calls into these.
 *
 * The order of a set is the point: the record's mirror and handles.json
 * are written FIRST, the cache updated SECOND. A crash between the two
 * leaves the file ahead of the cache, and the next start rebuilds the
 * cache from the file. The other order would let a crash lose handles the
 * daemon had already treated as live, and with them the teardown of the
 * resources they name.
 *
 * Every write is made by the store's writer thread, never here on the
 * event loop (store_writer.h), and what a mutation changes in the cache,
 * replies and emits happens once its write is durable. A VM's mutations
 * run one at a time through its lane, so each decides on the cache its
 * predecessor left, as if the writes were still synchronous.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <uthash.h>

#include "array.h"
#include "cache.h"
#include "crashpoint.h"
#include "daemon.h"
#include "helper_client.h"
#include "json.h"
#include "log.h"
#include "message_id.h"
#include "path.h"
#include "service.h"
#include "store.h"
#include "store_writer.h"
#include "vm.h"

#define PERSIST_RETRY_FIRST_MS 250
#define PERSIST_RETRY_MAX_MS   5000

uint64_t service_realtime_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *event_message_id(const char *kind)
{
#define EVENT_ID(k, mid)                                                                           \
	if (strcmp(kind, k) == 0)                                                                  \
		return mid;
	BANGER_EVENT_MESSAGE_IDS(EVENT_ID)
#undef EVENT_ID
	return BANGER_MID_EVENT_OTHER;
}

void service_emit(struct daemon *d, const char *kind, const char *id, int pid, const char *detail)
{
	service_emit_for(d, NULL, kind, id, pid, detail);
}

void service_emit_for(struct daemon *d, const char *call, const char *kind, const char *id, int pid,
		      const char *detail)
{
	d->events++;
	/* The mutating calls behind registered/handles_set/... are logged already; the rest is
	 * news. */
	bool news = strcmp(kind, "registered") != 0 && strcmp(kind, "handles_set") != 0 &&
		    strcmp(kind, "cleared") != 0 && strcmp(kind, "unregistered") != 0;
	char pid_s[12];
	snprintf(pid_s, sizeof(pid_s), "%d", pid);
	/*
	 * In the journal every event is an entry: `journalctl BANGER_VM_ID=vm7` is read by
	 * field, not as a stream, so the call line before it is no reason to leave it out.
	 */
	log_struct(news || log_journal_active() ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, 0,
		   event_message_id(kind),
		   LOG_FIELDS({"BANGER_EVENT", kind}, {"BANGER_VM_ID", id},
			      {"BANGER_PID", pid > 0 ? pid_s : NULL}, {"BANGER_CALL", call}),
		   "event %s%s%s%s%s", kind, id ? " vm " : "", id ? id : "", detail ? ": " : "",
		   detail ? detail : "");
	if (d->event_sink) {
		struct service_event ev = {.kind = kind,
					   .id = id,
					   .time_usec = service_realtime_usec(),
					   .pid = pid,
					   .detail = detail};
		d->event_sink(&ev, d->event_sink_userdata);
	}
}

void service_set_event_sink(struct daemon *d, service_event_fn sink, void *userdata)
{
	d->event_sink = sink;
	d->event_sink_userdata = userdata;
}

const char *service_errno_text(int err, char *buf, size_t size)
{
	const char *name = strerrorname_np(-err);
	snprintf(buf, size, "%s (%s)", strerror(-err), name ? name : "unknown errno");
	return buf;
}

const char *service_helper_failure(const struct daemon *d, int err, char *buf, size_t size)
{
	const char *failure = d->helper ? helper_client_failure(d->helper) : NULL;
	if (failure)
		snprintf(buf, size, "the helper is %s: %s",
			 d->helper_state == HELPER_STATE_STUCK ? "stuck" : "gone", failure);
	else if (!d->helper)
		snprintf(buf, size, "the helper is not connected");
	else
		snprintf(buf, size, "the request could not be queued for the helper: %s",
			 strerror(-err));
	return buf;
}

/* --- a VM's mutations, one at a time --------------------------------------- */

struct mutation;
typedef void (*mutation_fn)(struct mutation *m);
typedef void (*mutation_written_fn)(struct mutation *m, struct vm_entry *e,
				    const struct store_txn *t);

/* One mutation of one VM: started when its lane is free, ended after its write. */
struct mutation {
	TAILQ_ENTRY(mutation) link;
	struct daemon *d;
	char id[VM_ID_MAX + 1];
	mutation_fn start;
	mutation_written_fn written;
	service_done_fn done;
	void *userdata;
	int step_record, step_handles; /* indices in the transaction, or -1 */
	int record_err, handles_err;   /* a step that could not even be built */
	int pidfd;
	int pid;	  /* for the event */
	uint32_t version; /* the entry's version the write was made from */
	bool announce;	  /* a retry: persist_recovered on success, backoff on failure */
	bool rearm;	  /* Register of a stopped record that holds nothing: its next run */
	struct teardown_request *teardown;
	struct vm_record rec;
	struct vm_handles h;
};

static void teardown_report(struct teardown_request *req);

struct service_lane {
	UT_hash_handle hh;
	char id[VM_ID_MAX + 1];
	TAILQ_HEAD(, mutation) waiting; /* behind the one running */
};

static struct mutation *mutation_new(struct daemon *d, const char *id, mutation_fn start,
				     service_done_fn done, void *userdata)
{
	struct mutation *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->d = d;
	field_set(m->id, sizeof(m->id), id);
	m->start = start;
	m->done = done;
	m->userdata = userdata;
	m->step_record = m->step_handles = -1;
	m->pidfd = -1;
	return m;
}

/* Run m now if its VM has no mutation running, else after the ones before it. */
static void lane_enter(struct mutation *m)
{
	struct daemon *d = m->d;
	struct service_lane *lane = NULL;
	HASH_FIND_STR(d->lanes, m->id, lane);
	if (lane) {
		TAILQ_INSERT_TAIL(&lane->waiting, m, link);
		return;
	}
	lane = calloc(1, sizeof(*lane));
	if (!lane) {
		/* Cannot order it: refuse it rather than race the one running. */
		if (m->teardown)
			teardown_report(TAKE_PTR(m->teardown));
		if (m->done)
			m->done(d, m->id, cache_find(&d->cache, m->id), -ENOMEM, m->userdata);
		safe_close(m->pidfd);
		free(m);
		return;
	}
	memcpy(lane->id, m->id, sizeof(lane->id));
	TAILQ_INIT(&lane->waiting);
	HASH_ADD_STR(d->lanes, id, lane);
	m->start(m);
}

/* m is over: free it and start the next of its VM. */
static void mutation_end(struct mutation *m)
{
	struct daemon *d = m->d;
	struct service_lane *lane = NULL;
	HASH_FIND_STR(d->lanes, m->id, lane);
	safe_close(m->pidfd);
	free(m);
	if (!lane)
		return;
	struct mutation *next = TAILQ_FIRST(&lane->waiting);
	if (!next) {
		HASH_DEL(d->lanes, lane);
		free(lane);
		return;
	}
	TAILQ_REMOVE(&lane->waiting, next, link);
	next->start(next);
}

/* Answer m without writing anything. */
static void mutation_answer(struct mutation *m, int err)
{
	if (m->done)
		m->done(m->d, m->id, cache_find(&m->d->cache, m->id), err, m->userdata);
	mutation_end(m);
}

static void on_mutation_written(struct store_txn *t, void *userdata)
{
	struct mutation *m = userdata;
	m->written(m, cache_find(&m->d->cache, m->id), t);
	mutation_end(m);
}

/* A step's result: a build error, the writer's, or 0 for a step not taken. */
static int step_err(const struct store_txn *t, int step, int build_err)
{
	if (build_err < 0)
		return build_err;
	return step >= 0 ? t->steps[step].err : 0;
}

static void mutation_submit(struct mutation *m, struct store_txn *t)
{
	store_submit(&m->d->store, t, on_mutation_written, m);
}

/* A new transaction for m's VM; NULL (m answered with -ENOMEM) when there is no memory. */
static struct store_txn *mutation_txn(struct mutation *m)
{
	struct store_txn *t = store_txn_new(m->id);
	if (!t)
		mutation_answer(m, -ENOMEM);
	return t;
}

void service_flush_writes(struct daemon *d)
{
	store_writer_flush(d->store.writer);
}

static void after_writes_start(struct mutation *m)
{
	mutation_answer(m, 0);
}

void service_after_writes(struct daemon *d, const char *id, service_done_fn done, void *userdata)
{
	struct mutation *m = mutation_new(d, id, after_writes_start, done, userdata);
	if (!m) {
		done(d, id, cache_find(&d->cache, id), -ENOMEM, userdata);
		return;
	}
	lane_enter(m);
}

/* --- persisting, with retries ------------------------------------------- */

static void on_persist_retry(evutil_socket_t fd, short what, void *arg);

static void persist_retry_arm(struct daemon *d)
{
	if (!d->ev_persist_retry)
		d->ev_persist_retry = evtimer_new(d->base, on_persist_retry, d);
	if (!d->ev_persist_retry || evtimer_pending(d->ev_persist_retry, NULL))
		return;
	if (d->persist_retry_ms == 0)
		d->persist_retry_ms = PERSIST_RETRY_FIRST_MS;
	struct timeval tv = {d->persist_retry_ms / 1000, (d->persist_retry_ms % 1000) * 1000};
	evtimer_add(d->ev_persist_retry, &tv);
}

static void persist_failed(struct daemon *d, struct vm_entry *e, int err, const char *file)
{
	char detail[PATH_MAX + 128], errno_text[96];
	d->persist_failures++;
	snprintf(detail, sizeof(detail), "%s not written: %s; retrying", file,
		 service_errno_text(err, errno_text, sizeof(errno_text)));
	log_warnx("vm %s: %s", e->id, detail);
	service_emit(d, "persist_failed", e->id, e->pid, detail);
	persist_retry_arm(d);
}

static void persist_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	struct daemon *d = m->d;
	int record_err = step_err(t, m->step_record, m->record_err);
	int handles_err = step_err(t, m->step_handles, m->handles_err);
	/* Changed meanwhile: what was written is not what the entry says; its own write follows. */
	if (!e || e->version != m->version)
		return;
	if (m->step_record >= 0 && record_err == 0)
		e->record_persisted = true;
	if (m->step_handles >= 0 && handles_err == 0)
		e->handles_persisted = true;
	if (record_err == 0 && handles_err == 0) {
		if (m->announce)
			service_emit(d, "persist_recovered", e->id, e->pid, NULL);
		d->persist_retry_ms = 0;
		return;
	}
	if (m->announce) {
		/* Still failing: back off, quietly (the failure was reported once). */
		d->persist_retry_ms = d->persist_retry_ms * 2 > PERSIST_RETRY_MAX_MS
					  ? PERSIST_RETRY_MAX_MS
					  : d->persist_retry_ms * 2;
		persist_retry_arm(d);
		return;
	}
	persist_failed(d, e, record_err < 0 ? record_err : handles_err,
		       record_err < 0 ? "vm.json" : "handles.json");
}

/* Write what the entry says but the disk does not yet. */
static void persist_start(struct mutation *m)
{
	struct vm_entry *e = cache_find(&m->d->cache, m->id);
	if (!e || (e->record_persisted && e->handles_persisted)) {
		mutation_answer(m, 0);
		return;
	}
	struct store_txn *t = mutation_txn(m);
	if (!t)
		return;
	cache_entry_get(e, &m->rec, &m->h);
	m->version = e->version;
	if (!e->record_persisted && (m->step_record = store_txn_write_record(t, &m->rec, NULL)) < 0)
		m->record_err = m->step_record;
	if (!e->handles_persisted) {
		m->step_handles = e->has_handles ? store_txn_write_handles(t, &m->h, NULL)
						 : store_txn_remove_handles(t, NULL);
		if (m->step_handles < 0)
			m->handles_err = m->step_handles;
	}
	m->written = persist_written;
	mutation_submit(m, t);
}

/* Make what e says durable, after whatever its VM has queued. */
static void persist_enqueue(struct daemon *d, const char *id, bool announce)
{
	struct mutation *m = mutation_new(d, id, persist_start, NULL, NULL);
	if (!m) {
		persist_retry_arm(d); /* the retry timer finds it again */
		return;
	}
	m->announce = announce;
	lane_enter(m);
}

void service_flush_pending(struct daemon *d)
{
	struct vm_entry *e, *tmp;
	CACHE_FOREACH(&d->cache, e, tmp)
	{
		if (!e->record_persisted || !e->handles_persisted) {
			d->counters.persist_retries++;
			persist_enqueue(d, e->id, true);
		}
	}
}

static void on_persist_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	service_flush_pending(arg);
}

/* --- exit watching ------------------------------------------------------ */

/* The firecracker behind a pidfd exited: known at once, without polling. */
static void on_firecracker_exit(evutil_socket_t fd, short what, void *arg)
{
	struct vm_entry *e = arg;
	struct daemon *d = e->owner;
	(void)fd;
	(void)what;

	cache_entry_unwatch(e);
	e->liveness = VM_DEAD;
	d->counters.exits++;
	service_emit_for(d, "exit", "exited", e->id, e->pid, NULL);
	struct vm_record rec;
	cache_entry_get(e, &rec, NULL);
	if (rec.on_exit == VM_ON_EXIT_KEEP) {
		/* Only mark and report: the manager decides when to tear down (Teardown). */
		struct vm_handles h;
		cache_entry_get(e, NULL, &h);
		rec.state = VM_STOPPED;
		CRASH_POINT("exit-keep-before-mark");
		/* The cache says stopped before the disk does: a crash leaves the record
		 * running, with its handles, which the restart finds dead and retains. */
		if (cache_entry_put(e, &rec, &h) == 0) {
			e->record_persisted = false;
			persist_enqueue(d, e->id, false);
		}
		return;
	}
	struct ps_caller caller = {
	    .uid = (uint32_t)d->uid, .gid = (uint32_t)d->gid, .call = "exit"};
	CRASH_POINT("exit-before-teardown");
	int r = service_teardown(d, e, &caller, NULL, NULL, NULL);
	if (r < 0)
		log_errx("vm %s: teardown after exit not sent: %s", e->id, strerror(-r));
}

static void watch_pidfd(struct daemon *d, struct vm_entry *e, int pidfd)
{
	cache_entry_unwatch(e);
	e->pidfd = pidfd;
	e->owner = d;
	e->liveness = VM_ALIVE;
	e->ev_exit = event_new(d->base, pidfd, EV_READ, on_firecracker_exit, e);
	if (!e->ev_exit || event_add(e->ev_exit, NULL) < 0) {
		/* Without the watch we cannot claim to know: say so rather than guess. */
		log_warnx("vm %s: cannot watch pid %d", e->id, e->pid);
		e->liveness = VM_UNKNOWN;
	}
}

bool service_pidfd_alive(const struct vm_entry *e)
{
	struct pollfd p = {.fd = e->pidfd, .events = POLLIN};
	/* A pidfd polls readable once its process has exited. */
	return e->pidfd >= 0 && poll(&p, 1, 0) == 0;
}

enum vm_liveness service_liveness(const struct vm_entry *e)
{
	if (e->state != VM_RUNNING || !e->has_handles || e->pid <= 0)
		return VM_DEAD;
	return e->liveness;
}

/* --- the rules ---------------------------------------------------------- */

bool service_holds_resources(const struct vm_entry *e)
{
	struct vm_record rec;
	if (e->has_handles || e->state == VM_STARTING || e->kept_as)
		return true;
	cache_entry_get(e, &rec, NULL);
	return rec.mirror.tap[0] || rec.mirror.n_loops || rec.mirror.n_dm;
}

const char *service_rearm_refusal(const struct vm_entry *e)
{
	struct vm_record rec;
	if (e->state == VM_STARTING)
		return "it is starting: SetHandles it, or ClearHandles then Teardown it first";
	if (e->state == VM_RUNNING)
		return "it is running: once its firecracker has exited (or after ClearHandles), "
		       "Teardown it first";
	if (e->record_unreadable)
		return "its vm.json cannot be read (List shows why): repair or remove that file "
		       "first";
	cache_entry_get(e, &rec, NULL);
	/*
	 * A plan outlives a run only when no teardown finished it (teardown_finish drops it):
	 * a start that failed before SetHandles may have made what it names. Re-arming would
	 * replace those names with the next run's, and nothing would ever remove them.
	 */
	if (service_holds_resources(e) || rec.has_planned || e->problem || !e->handles_persisted)
		return "it is stopped but may still hold resources: Teardown it first";
	return NULL;
}

static void register_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	struct daemon *d = m->d;
	int r = step_err(t, m->step_record, m->record_err);
	if (!m->rearm)
		d->registers_in_flight--;
	if (r == 0) {
		CRASH_POINT("register-after-record");
		if (m->rearm && e) {
			/* On failure the cache still says stopped; vm.json is ahead, as after a
			 * crash. */
			r = cache_entry_put(e, &m->rec, NULL);
			if (r == 0)
				e->record_persisted = true;
		} else {
			e = cache_add(&d->cache, &m->rec);
			r = e ? 0 : -ENOMEM;
		}
	}
	if (r < 0) {
		m->done(d, m->id, m->rearm ? e : NULL, r, m->userdata);
		return;
	}
	e->owner = d;
	service_emit(d, "registered", e->id, 0, NULL);
	m->done(d, e->id, e, 0, m->userdata);
}

static void register_start(struct mutation *m)
{
	struct daemon *d = m->d;
	/* A VM has many runs under one id: a stopped record holding nothing takes the next plan. */
	struct vm_entry *e = cache_find(&d->cache, m->id);
	if (e && service_rearm_refusal(e)) {
		mutation_answer(m, -EEXIST);
		return;
	}
	m->rearm = e != NULL;
	/* Registrations in flight count: each may become a VM. */
	if (!m->rearm && cache_count(&d->cache) + d->registers_in_flight >= d->cfg.max_vms) {
		mutation_answer(m, -EDQUOT); /* not -ENOSPC: that is a full disk's */
		return;
	}
	struct store_txn *t = mutation_txn(m);
	if (!t)
		return;
	/* Intent first: the record is durable before the manager creates anything. */
	m->step_record = store_txn_write_record(t, &m->rec, NULL);
	if (m->step_record < 0)
		m->record_err = m->step_record;
	m->written = register_written;
	if (!m->rearm)
		d->registers_in_flight++;
	mutation_submit(m, t);
}

void service_register(struct daemon *d, const struct vm_record *rec, service_done_fn done,
		      void *userdata)
{
	struct mutation *m = mutation_new(d, rec->id, register_start, done, userdata);
	if (!m) {
		done(d, rec->id, NULL, -ENOMEM, userdata);
		return;
	}
	memcpy(&m->rec, rec, sizeof(m->rec));
	lane_enter(m);
}

static void set_handles_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	struct daemon *d = m->d;
	char file[PATH_MAX];
	int record_err = step_err(t, m->step_record, m->record_err);
	int handles_err = step_err(t, m->step_handles, m->handles_err);

	if (record_err < 0) {
		store_path(&d->store, m->id, "vm.json", file, sizeof(file));
		if (e)
			persist_failed(d, e, record_err, file);
	}
	/*
	 * 2. ...the cache second. A failed write does not undo the set: the
	 * kernel resources exist whether or not they are written down.
	 */
	CRASH_POINT("set-after-handles-durable");
	if (!e || cache_entry_put(e, &m->rec, &m->h) < 0) {
		/* Out of memory: the files (if written) still let a restart recover. */
		if (e)
			log_errx("vm %s: out of memory caching handles", e->id);
		m->done(d, m->id, e, e ? -ENOMEM : -ENOENT, m->userdata);
		return;
	}
	e->record_persisted = record_err == 0;
	e->handles_persisted = handles_err == 0;
	watch_pidfd(d, e, TAKE_FD(m->pidfd));
	if (handles_err < 0) {
		store_path(&d->store, e->id, "handles.json", file, sizeof(file));
		persist_failed(d, e, handles_err, file);
	}
	service_emit(d, "handles_set", e->id, m->h.pid, NULL);
	/* Not persisted: the write's own errno (a full disk is ENOSPC, never a vague EIO). */
	m->done(d, e->id, e, record_err < 0 ? record_err : handles_err, m->userdata);
}

static void set_handles_start(struct mutation *m)
{
	struct vm_entry *e = cache_find(&m->d->cache, m->id);
	if (!e) {
		mutation_answer(m, -ENOENT); /* unregistered meanwhile */
		return;
	}
	struct store_txn *t = mutation_txn(m);
	if (!t)
		return;
	struct vm_record *rec = &m->rec;
	cache_entry_get(e, rec, NULL);
	bool record_same = rec->state == VM_RUNNING && e->record_persisted;
	__typeof__(rec->mirror) old_mirror = rec->mirror;
	rec->state = VM_RUNNING;
	vm_record_mirror_handles(rec, &m->h);
	record_same = record_same && memcmp(&old_mirror, &rec->mirror, sizeof(rec->mirror)) == 0;
	/* 1. the record's mirror and handles.json: the disk first (vm.json only if it changed),
	 * the mirror durable before handles.json appears... */
	if (!record_same && !e->record_unreadable &&
	    (m->step_record = store_txn_write_record(t, rec, "set-between-record-and-handles")) < 0)
		m->record_err = m->step_record;
	m->step_handles = store_txn_write_handles(t, &m->h, NULL);
	if (m->step_handles < 0)
		m->handles_err = m->step_handles;
	m->written = set_handles_written;
	mutation_submit(m, t);
}

void service_set_handles(struct daemon *d, struct vm_entry *e, const struct vm_handles *h,
			 int pidfd, service_done_fn done, void *userdata)
{
	struct mutation *m = mutation_new(d, e->id, set_handles_start, done, userdata);
	if (!m) {
		safe_close(pidfd);
		done(d, e->id, e, -ENOMEM, userdata);
		return;
	}
	m->pidfd = pidfd;
	memcpy(&m->h, h, sizeof(m->h));
	lane_enter(m);
}

/* After a clear or a teardown: what the disk now says, or the retry that will say it. */
static void stopped_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	int record_err = step_err(t, m->step_record, m->record_err);
	int handles_err = step_err(t, m->step_handles, m->handles_err);
	if (!e)
		return;
	if (e->version == m->version) {
		e->handles_persisted = handles_err == 0;
		e->record_persisted = record_err == 0;
	}
	if (handles_err < 0)
		persist_failed(m->d, e, handles_err, "handles.json (removal)");
	if (record_err < 0)
		persist_failed(m->d, e, record_err, "vm.json");
}

/*
 * The cache already says stopped, with no handles: remove handles.json, then
 * write the stopped record (crash points name each durable step).
 */
static void stopped_submit(struct mutation *m, struct vm_entry *e, struct store_txn *t,
			   const char *crash_after_handles, mutation_written_fn written)
{
	cache_entry_get(e, &m->rec, NULL);
	e->handles_persisted = false; /* until the writer says so */
	e->record_persisted = e->record_unreadable;
	m->version = e->version;
	if ((m->step_handles = store_txn_remove_handles(t, crash_after_handles)) < 0)
		m->handles_err = m->step_handles;
	/* An unreadable vm.json is the evidence of what went wrong: never written over. */
	if (!e->record_unreadable &&
	    (m->step_record = store_txn_write_record(t, &m->rec, NULL)) < 0)
		m->record_err = m->step_record;
	m->written = written;
	mutation_submit(m, t);
}

static void clear_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	stopped_written(m, e, t);
	service_emit(m->d, "cleared", m->id, m->pid, NULL);
	m->done(m->d, m->id, e, 0, m->userdata);
}

static void clear_start(struct mutation *m)
{
	struct vm_entry *e = cache_find(&m->d->cache, m->id);
	if (!e) {
		mutation_answer(m, -ENOENT);
		return;
	}
	struct store_txn *t = mutation_txn(m);
	if (!t)
		return;
	struct vm_record rec;
	m->pid = e->pid;
	cache_entry_get(e, &rec, NULL);
	rec.state = VM_STOPPED;
	cache_entry_unwatch(e);
	e->liveness = VM_DEAD;
	if (cache_entry_put(e, &rec, NULL) < 0)
		log_errx("vm %s: out of memory clearing handles", e->id);
	CRASH_POINT("clear-after-cache-before-file");
	stopped_submit(m, e, t, "clear-after-file-before-record", clear_written);
}

void service_clear_handles(struct daemon *d, struct vm_entry *e, service_done_fn done,
			   void *userdata)
{
	struct mutation *m = mutation_new(d, e->id, clear_start, done, userdata);
	if (!m) {
		done(d, e->id, e, -ENOMEM, userdata);
		return;
	}
	lane_enter(m);
}

static void unregister_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	struct daemon *d = m->d;
	int r = store_txn_error(t);
	if (r < 0 || !e) {
		m->done(d, m->id, e, r < 0 ? r : -ENOENT, m->userdata);
		return;
	}
	CRASH_POINT("unregister-after-files-before-cache");
	cache_remove(&d->cache, e);
	cache_entry_free(e);
	service_emit(d, "unregistered", m->id, 0, NULL);
	m->done(d, m->id, NULL, 0, m->userdata);
}

static void unregister_start(struct mutation *m)
{
	struct vm_entry *e = cache_find(&m->d->cache, m->id);
	if (!e || service_liveness(e) != VM_DEAD) {
		mutation_answer(m, e ? -EBUSY : -ENOENT);
		return;
	}
	struct store_txn *t = mutation_txn(m);
	if (!t)
		return;
	/* Files go first and the record last of all: a crash in between leaves a record to act
	 * on. */
	int r = store_txn_remove_vm(t);
	if (r < 0) {
		store_txn_free(t);
		mutation_answer(m, r);
		return;
	}
	m->written = unregister_written;
	mutation_submit(m, t);
}

void service_unregister(struct daemon *d, struct vm_entry *e, service_done_fn done, void *userdata)
{
	struct mutation *m = mutation_new(d, e->id, unregister_start, done, userdata);
	if (!m) {
		done(d, e->id, e, -ENOMEM, userdata);
		return;
	}
	lane_enter(m);
}

/* --- rebuilding the cache after a start --------------------------------- */

static void load_one(struct daemon *d, const char *id)
{
	struct vm_record rec;
	struct vm_handles h;
	char why[512], kept[PATH_MAX];
	/* A crash in the middle of a batch leaves temps that no rename will ever take. */
	int r = store_remove_temps(&d->store, id);
	if (r < 0)
		log_warnx("vm %s: cannot remove temp files: %s", id, strerror(-r));
	r = store_read_record(&d->store, id, &rec, why, sizeof(why));
	if (r == -ENOENT) {
		/* A dir without a record: an Unregister cut short after vm.json went. */
		log_errx("vm %s not loaded: %s", id, why);
		return;
	}
	bool unreadable = r < 0;
	if (unreadable) {
		/*
		 * Never guessed, never deleted, never written over: listed with its problem, and
		 * reconciled from its handles.json (DESIGN §2). With no api socket to look for,
		 * reconcile decides its liveness from the pid and boot id that file names.
		 */
		log_errx("vm %s: %s; the file is left as it is", id, why);
		memset(&rec, 0, sizeof(rec));
		field_set(rec.id, sizeof(rec.id), id);
		rec.state = VM_STOPPED;
		rec.on_exit = VM_ON_EXIT_TEARDOWN;
	}
	struct vm_entry *e = cache_add(&d->cache, &rec);
	if (!e) {
		log_errx("vm %s not loaded: out of memory", id);
		return;
	}
	e->owner = d;
	e->record_unreadable = unreadable;
	e->problem = unreadable ? strdup(why) : NULL;
	r = store_read_handles(&d->store, id, &h, why, sizeof(why), kept, sizeof(kept));
	if (r == 0) {
		/* handles.json exists only while the VM runs: so does it, as far as we know. */
		if (unreadable)
			rec.state = VM_RUNNING;
		if (cache_entry_put(e, &rec, &h) < 0)
			log_errx("vm %s: out of memory loading handles", id);
		/* Not verified yet: the adopting SCAN decides. */
		e->liveness = VM_UNKNOWN;
	} else if (r != -ENOENT && !unreadable) {
		/* Corrupt: kept aside by the store; teardown falls back to the record's mirror. */
		e->problem = strdup(why);
		e->kept_as = strdup(kept);
		log_errx("vm %s: %s; the file is kept as %s", id, why, kept);
	} else if (r != -ENOENT) {
		/* Both unreadable: nothing says what it holds; vm.json's problem is the one listed.
		 */
		e->kept_as = strdup(kept);
		log_errx("vm %s: %s; the file is kept as %s", id, why, kept);
	}
}

int service_load(struct daemon *d)
{
	char **ids = NULL;
	size_t n = 0;
	int r = store_list_ids(&d->store, &ids, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		load_one(d, ids[i]);
		free(ids[i]);
	}
	free(ids);
	log_info("loaded %zu VM records", cache_count(&d->cache));
	return 0;
}

/* A VM found alive under its api socket: watch it, and take a new pid if it moved. */
void service_adopt_process(struct daemon *d, struct vm_entry *e, int32_t pid, uint64_t start_time,
			   int pidfd)
{
	struct vm_record rec;
	struct vm_handles h;
	cache_entry_get(e, &rec, &h);
	if (!e->has_handles) {
		/* A starting VM whose manager died before SetHandles: its firecracker lives. */
		safe_close(pidfd);
		e->liveness = VM_ALIVE;
		return;
	}
	bool moved =
	    h.pid != pid || h.start_time != start_time || strcmp(h.boot_id, d->boot_id) != 0;
	if (moved) {
		/* Found under its socket with another pid: adopt it and rewrite the scratch. */
		h.pid = pid;
		h.start_time = start_time;
		memcpy(h.boot_id, d->boot_id, sizeof(h.boot_id));
		if (cache_entry_put(e, &rec, &h) == 0)
			e->handles_persisted = false;
		CRASH_POINT("adopt-after-cache-before-scratch");
	}
	watch_pidfd(d, e, pidfd);
	if (moved)
		persist_enqueue(d, e->id, true);
}

/* --- teardown ------------------------------------------------------------ */

static void add_unique(char *fields, size_t field_size, uint32_t *n, uint32_t max, const char *s)
{
	if (s[0] == '\0')
		return;
	for (uint32_t i = 0; i < *n; i++)
		if (strcmp(fields + (size_t)i * field_size, s) == 0)
			return;
	if (*n < max)
		field_set(fields + (size_t)(*n)++ * field_size, field_size, s);
}

/*
 * A loop to tear down, with the diskseq recorded for it (0: none). One name
 * may come from the handles and the mirror both: recorded once, it is one
 * attach; recorded as two attaches, each is asked about, and the helper
 * finds at most one of them still there.
 */
static void add_loop(struct ps_teardown *q, const char *name, uint64_t diskseq)
{
	if (name[0] == '\0')
		return;
	for (uint32_t i = 0; i < q->n_loops; i++) {
		if (strcmp(q->loops[i], name) != 0)
			continue;
		if (q->loop_diskseq[i] == 0)
			q->loop_diskseq[i] = diskseq;
		if (diskseq == 0 || q->loop_diskseq[i] == diskseq)
			return;
	}
	if (q->n_loops < PS_TEARDOWN_MAX_LOOPS) {
		field_set(q->loops[q->n_loops], PS_PATH_MAX, name);
		q->loop_diskseq[q->n_loops++] = diskseq;
	}
}

/*
 * Everything the VM may hold: its live handles, the record's mirror of them
 * (handles.json may be lost), and its plan (a manager that crashed before
 * SetHandles never reported what it made; loops are then found by file).
 */
static void build_teardown(const struct vm_record *r, const struct vm_handles *h, bool has_h,
			   struct ps_teardown *q)
{
	if (has_h)
		for (uint32_t i = 0; i < h->n_dm; i++)
			add_unique(q->dm[0], PS_DM_NAME_MAX, &q->n_dm, PS_TEARDOWN_MAX_DM,
				   h->dm[i]);
	for (uint32_t i = 0; i < r->mirror.n_dm; i++)
		add_unique(q->dm[0], PS_DM_NAME_MAX, &q->n_dm, PS_TEARDOWN_MAX_DM, r->mirror.dm[i]);
	for (uint32_t i = 0; r->has_planned && i < r->planned.n_dm; i++)
		add_unique(q->dm[0], PS_DM_NAME_MAX, &q->n_dm, PS_TEARDOWN_MAX_DM,
			   r->planned.dm[i]);
	if (has_h)
		for (uint32_t i = 0; i < h->n_loops; i++)
			add_loop(q, h->loops[i], h->loop_diskseq[i]);
	for (uint32_t i = 0; i < r->mirror.n_loops; i++)
		add_loop(q, r->mirror.loops[i], r->mirror.loop_diskseq[i]);
	for (uint32_t i = 0; r->has_planned && i < r->planned.n_loop_files; i++)
		add_loop(q, r->planned.loop_files[i], 0);
	const char *tap = has_h && h->tap[0] ? h->tap
			  : r->mirror.tap[0] ? r->mirror.tap
			  : r->has_planned   ? r->planned.tap
					     : "";
	field_set(q->tap, sizeof(q->tap), tap);
	/* The ifindex recorded for that name (0: none, as for a planned tap). */
	if (has_h && strcmp(h->tap, tap) == 0)
		q->tap_ifindex = h->tap_ifindex;
	if (q->tap_ifindex == 0 && tap[0] && strcmp(r->mirror.tap, tap) == 0)
		q->tap_ifindex = r->mirror.tap_ifindex;
}

/* One name a live VM holds, keyed by kind ("loop:/dev/loop3", "tap:fc0", "dm:banger-1"). */
struct held_name {
	char owner[VM_ID_MAX + 1];
	char key[];
};

#define HELD_KEY_MAX (PS_PATH_MAX + 8)

/* Each allocation of the set is a fault point: its failure must leave the set failed, never
 * short. */
static int held_add(struct held_names *held, size_t *cap, const char *kind, const char *name,
		    const char *owner)
{
	char key[HELD_KEY_MAX];
	if (!name[0])
		return 0;
	if (FAULT_POINT("held-names-alloc") ||
	    grow_array(&held->names, cap, held->n + 1, sizeof(*held->names), 64) < 0)
		return -ENOMEM;
	size_t len = (size_t)snprintf(key, sizeof(key), "%s:%s", kind, name);
	struct held_name *n = FAULT_POINT("held-names-alloc") ? NULL : malloc(sizeof(*n) + len + 1);
	if (!n)
		return -ENOMEM;
	memcpy(n->key, key, len + 1);
	memcpy(n->owner, owner, sizeof(n->owner));
	held->names[held->n++] = n;
	return 0;
}

static int compare_held(const void *a, const void *b)
{
	return strcmp((*(struct held_name *const *)a)->key, (*(struct held_name *const *)b)->key);
}

static int compare_held_key(const void *key, const void *item)
{
	return strcmp(key, (*(struct held_name *const *)item)->key);
}

static const char *held_owner(const struct held_names *held, const char *kind, const char *name)
{
	char key[HELD_KEY_MAX];
	snprintf(key, sizeof(key), "%s:%s", kind, name);
	struct held_name *const *n =
	    held->n ? bsearch(key, held->names, held->n, sizeof(*held->names), compare_held_key)
		    : NULL;
	return n ? (*n)->owner : NULL;
}

int held_names_collect(struct daemon *d, struct held_names *held)
{
	struct vm_entry *e, *tmp;
	size_t cap = 0;
	int r = 0;
	memset(held, 0, sizeof(*held));
	CACHE_FOREACH(&d->cache, e, tmp)
	{
		if (!e->has_handles || e->liveness == VM_DEAD)
			continue;
		struct vm_handles h;
		cache_entry_get(e, NULL, &h);
		for (uint32_t i = 0; r == 0 && i < h.n_loops; i++)
			r = held_add(held, &cap, "loop", h.loops[i], e->id);
		for (uint32_t i = 0; r == 0 && i < h.n_dm; i++)
			r = held_add(held, &cap, "dm", h.dm[i], e->id);
		if (r == 0)
			r = held_add(held, &cap, "tap", h.tap, e->id);
		if (r < 0) {
			/* A set missing one name would let a teardown take a live VM's device. */
			held_names_free(held);
			return r;
		}
	}
	if (held->n > 1)
		qsort(held->names, held->n, sizeof(*held->names), compare_held);
	return 0;
}

void held_names_free(struct held_names *held)
{
	for (size_t i = 0; i < held->n; i++)
		free(held->names[i]);
	free(held->names);
	memset(held, 0, sizeof(*held));
}

/* Remove entry i of n from an array, zeroing the freed last slot. */
static void drop_entry(void *array, size_t entry_size, uint32_t n, uint32_t i)
{
	char *a = array;
	memmove(a + (size_t)i * entry_size, a + (size_t)(i + 1) * entry_size,
		(size_t)(n - i - 1) * entry_size);
	memset(a + (size_t)(n - 1) * entry_size, 0, entry_size);
}

/*
 * A stale record may name a /dev/loopN, tap or DM name that another VM
 * holds now (the kernel reuses loop numbers). The cache knows what every
 * live VM holds: never send those to the helper for this one.
 */
static void spare_live_neighbours(const struct held_names *held, const struct vm_entry *self,
				  struct ps_teardown *q)
{
	const char *owner;
	for (uint32_t i = q->n_loops; i-- > 0;)
		if ((owner = held_owner(held, "loop", q->loops[i])) &&
		    strcmp(owner, self->id) != 0) {
			drop_entry(q->loops, sizeof(q->loops[0]), q->n_loops, i);
			drop_entry(q->loop_diskseq, sizeof(q->loop_diskseq[0]), q->n_loops--, i);
		}
	for (uint32_t i = q->n_dm; i-- > 0;)
		if ((owner = held_owner(held, "dm", q->dm[i])) && strcmp(owner, self->id) != 0)
			drop_entry(q->dm, sizeof(q->dm[0]), q->n_dm--, i);
	if (q->tap[0] && (owner = held_owner(held, "tap", q->tap)) &&
	    strcmp(owner, self->id) != 0) {
		log_warnx("vm %s: tap %s now belongs to vm %s; not torn down", self->id, q->tap,
			  owner);
		memset(q->tap, 0, sizeof(q->tap));
		q->tap_ifindex = 0;
	}
}

struct teardown_request {
	struct daemon *d;
	char id[VM_ID_MAX + 1];
	char call[PS_CALL_MAX]; /* whose teardown: its events name the call */
	teardown_done_fn done;
	void *userdata;
	struct teardown_outcome out;
	struct ps_teardown_reply reply; /* the helper's, copied: it outlives its message */
	char summary[2048];
};

static bool teardown_complete(const struct ps_teardown_reply *r)
{
	if (r->err < 0)
		return false;
	for (uint32_t i = 0; i < r->count; i++)
		if (r->results[i].status != PS_TEARDOWN_REMOVED &&
		    r->results[i].status != PS_TEARDOWN_ABSENT)
			return false;
	return true;
}

static void teardown_summary(const struct ps_teardown_reply *r, char *buf, size_t size)
{
	size_t off = 0;
	buf[0] = '\0';
	for (uint32_t i = 0; i < r->count && off < size; i++) {
		const struct ps_teardown_result *t = &r->results[i];
		int n = snprintf(buf + off, size - off, "%s%s %s: %s", i ? ", " : "",
				 ps_resource_kind_name((int)t->kind), t->name,
				 ps_teardown_status_name((int)t->status));
		if (n > 0)
			off += (size_t)n;
	}
}

/* Report a teardown's outcome (event, caller) and forget the request. */
static void teardown_report(struct teardown_request *req)
{
	struct daemon *d = req->d;
	if (req->out.err == 0)
		service_emit_for(d, req->call, req->out.complete ? "torn_down" : "teardown_failed",
				 req->id, 0, req->summary);
	if (req->done)
		req->done(d, req->id, &req->out, req->userdata);
	free(req);
}

static void teardown_written(struct mutation *m, struct vm_entry *e, const struct store_txn *t)
{
	stopped_written(m, e, t);
	teardown_report(TAKE_PTR(m->teardown));
}

/* Everything is gone: forget the handles, mark the record stopped, then report. */
static void teardown_finish_start(struct mutation *m)
{
	struct vm_entry *e = cache_find(&m->d->cache, m->id);
	struct store_txn *t = e ? store_txn_new(m->id) : NULL;
	if (!t) {
		if (e)
			log_errx("vm %s: out of memory", e->id);
		teardown_report(TAKE_PTR(m->teardown));
		mutation_end(m);
		return;
	}
	struct vm_record rec;
	CRASH_POINT("teardown-after-result-before-record");
	cache_entry_get(e, &rec, NULL);
	rec.state = VM_STOPPED;
	memset(&rec.mirror, 0, sizeof(rec.mirror));
	/* The plan was torn down with the rest: the record holds nothing, ready for a next run. */
	rec.has_planned = false;
	memset(&rec.planned, 0, sizeof(rec.planned));
	cache_entry_unwatch(e);
	e->liveness = VM_DEAD;
	if (cache_entry_put(e, &rec, NULL) < 0)
		log_errx("vm %s: out of memory", e->id);
	stopped_submit(m, e, t, "teardown-after-handles-removed", teardown_written);
}

static void on_teardown_reply(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct teardown_request *req = userdata;
	struct daemon *d = req->d;
	char why[640];
	(void)hc;

	d->teardowns_in_flight--;
	req->out.err = reply->err;
	if (reply->err < 0) {
		/* No reply: the helper may have removed some of it. Claim nothing. */
		snprintf(why, sizeof(why), "%s; what it removed before that is not known",
			 reply->why ? reply->why : strerror(-reply->err));
		req->out.why = why;
		d->counters.teardowns_unanswered++;
		log_warnx("vm %s: teardown not answered: %s", req->id, why);
		service_emit_for(d, req->call, "teardown_failed", req->id, 0, why);
		teardown_report(req);
		return;
	}
	req->reply = reply->msg->payload.teardown_reply;
	req->out.reply = &req->reply;
	req->out.complete = teardown_complete(&req->reply);
	for (uint32_t i = 0; i < req->reply.count; i++)
		if (req->reply.results[i].status <= PS_TEARDOWN_FAILED)
			d->counters.teardown_results[req->reply.results[i].status]++;
	teardown_summary(&req->reply, req->summary, sizeof(req->summary));
	struct mutation *m = req->out.complete && cache_find(&d->cache, req->id)
				 ? mutation_new(d, req->id, teardown_finish_start, NULL, NULL)
				 : NULL;
	if (!m) {
		teardown_report(req);
		return;
	}
	/* Reported once the VM is durably stopped, batched with every other write pending. */
	m->teardown = req;
	lane_enter(m);
}

int service_teardown(struct daemon *d, struct vm_entry *e, const struct ps_caller *caller,
		     const struct held_names *held, teardown_done_fn done, void *userdata)
{
	struct vm_record rec;
	struct vm_handles h;
	struct ps_teardown q;
	cache_entry_get(e, &rec, &h);
	memset(&q, 0, sizeof(q));
	q.caller = *caller;
	field_set(q.caller.vm, sizeof(q.caller.vm), e->id); /* the helper's audit line names it */
	build_teardown(&rec, &h, e->has_handles, &q);
	if (held) {
		spare_live_neighbours(held, e, &q);
	} else {
		struct held_names now;
		int r = held_names_collect(d, &now);
		if (r < 0)
			return r; /* nothing is sent without the whole set */
		spare_live_neighbours(&now, e, &q);
		held_names_free(&now);
	}
	struct teardown_request *req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->d = d;
	memcpy(req->id, e->id, sizeof(req->id));
	memcpy(req->call, caller->call, sizeof(req->call));
	req->done = done;
	req->userdata = userdata;
	int r = helper_teardown(d->helper, &q, on_teardown_reply, req);
	if (r < 0) {
		free(req);
		return r;
	}
	d->teardowns_in_flight++;
	return 0;
}
