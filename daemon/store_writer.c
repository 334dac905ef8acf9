/*
 * See store_writer.h. One thread, a queue under a mutex (as common/closer.c),
 * and an eventfd that wakes the loop when transactions are done. A batch is
 * a prefix of the queue (FIFO), cut before a second transaction of a VM
 * already in it, so the order of one VM's changes is the order they came.
 *
 * Why a step's durability comes before the next one's: each step is one of
 * DESIGN §2's ordered writes (a SetHandles makes vm.json's mirror durable
 * before handles.json appears; Unregister removes the record last). Rounds
 * keep that order across a batch at the cost of one sync per round, not
 * per file.
 */
#include "store_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomicfile.h"
#include "closer.h"
#include "event_util.h"
#include "crashpoint.h"
#include "log.h"
#include "macro.h"

#define STATE_FILE_MODE 0600

struct store_writer {
	struct event_base *base;
	struct event *ev_done;
	int efd;
	int vms_fd;
	enum store_sync_mode mode;
	size_t pending; /* the loop's own: submitted, done not run yet */

	pthread_mutex_t lock;
	pthread_cond_t wake; /* the thread: work, or stop */
	pthread_cond_t idle; /* flush: a batch was done */
	struct store_txn *queue, **queue_tail;
	struct store_txn *done, **done_tail;
	size_t in_thread; /* queued or being written */
	bool started, stopping;
	pthread_t thread;
	struct fd_closer *reaper; /* last references of replaced and removed files */
	struct store_writer_stats stats;
};

/* --- running a batch (the writer thread, or the caller for run_now) ----------- */

/* What a sync makes durable: a step, or (step NULL) every step of a transaction. */
struct sync_entry {
	int fd;
	struct store_txn *t;
	struct store_step *s;
};

struct sync_list {
	struct sync_entry *e;
	size_t n, cap;
	uint64_t syncs;	  /* calls made */
	uint64_t sync_us; /* time they took */
};

static uint64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sync_add(struct sync_list *l, int fd, struct store_txn *t, struct store_step *s)
{
	/* cap is sized for the whole batch before it runs (run_batch): this never grows. */
	if (l->n < l->cap)
		l->e[l->n++] = (struct sync_entry){fd, t, s};
}

static void sync_failed(const struct sync_entry *e, int r)
{
	if (e->s) {
		if (e->s->err == 0)
			e->s->err = r;
		return;
	}
	for (size_t i = 0; i < e->t->n_steps; i++)
		if (e->t->steps[i].err == 0)
			e->t->steps[i].err = r;
}

/*
 * Make every entry durable: one syncfs, or one fdatasync/fsync per distinct
 * fd (the list is small: one entry per step of the round). data: the fds
 * are temp files (fdatasync is enough), else directories.
 */
static void sync_run(struct sync_list *l, int vms_fd, enum store_sync_mode mode, bool data)
{
	if (l->n == 0)
		return;
	uint64_t t0 = monotonic_us();
	if (mode == STORE_SYNC_FS) {
		l->syncs++;
		if (syncfs(vms_fd) < 0) {
			int r = negative_errno();
			for (size_t i = 0; i < l->n; i++)
				sync_failed(&l->e[i], r);
		}
		l->n = 0;
		l->sync_us += monotonic_us() - t0;
		return;
	}
	for (size_t i = 0; i < l->n; i++) {
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = l->e[j].fd == l->e[i].fd;
		if (seen)
			continue;
		l->syncs++;
		int r =
		    (data ? fdatasync(l->e[i].fd) : fsync(l->e[i].fd)) < 0 ? negative_errno() : 0;
		for (size_t j = i; r < 0 && j < l->n; j++)
			if (l->e[j].fd == l->e[i].fd)
				sync_failed(&l->e[j], r);
	}
	l->n = 0;
	l->sync_us += monotonic_us() - t0;
}

/* ".vm.json.tmp.*": what an interrupted write leaves behind. */
static bool is_temp_name(const char *entry)
{
	static const char *const files[] = {"vm.json", "handles.json"};
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		size_t n = strlen(files[i]);
		if (entry[0] == '.' && strncmp(entry + 1, files[i], n) == 0 &&
		    strncmp(entry + 1 + n, ".tmp.", 5) == 0)
			return true;
	}
	return false;
}

int store_opendir_at(int dir_fd, DIR **dir)
{
	/* A fresh fd: a DIR stream shares its offset with the fd it reads. */
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	*dir = fdopendir(fd);
	if (!*dir) {
		int r = negative_errno();
		safe_close(fd);
		return r;
	}
	return 0;
}

int store_remove_temps_at(int dir_fd)
{
	_cleanup_closedir_ DIR *dir = NULL;
	int r = store_opendir_at(dir_fd, &dir);
	if (r < 0)
		return r;
	struct dirent *de;
	while ((de = readdir(dir)))
		if (is_temp_name(de->d_name) && unlinkat(dir_fd, de->d_name, 0) < 0 &&
		    errno != ENOENT)
			return negative_errno();
	return 0;
}

static bool txn_writes(const struct store_txn *t)
{
	for (size_t i = 0; i < t->n_steps; i++)
		if (t->steps[i].kind == STORE_STEP_WRITE)
			return true;
	return false;
}

/* Open vms/<id>/, made when the transaction writes (its entry in vms/ then wants a sync). */
static int open_dir(int vms_fd, struct store_txn *t)
{
	if (txn_writes(t)) {
		if (mkdirat(vms_fd, t->id, 0700) == 0)
			t->made_dir = true;
		else if (errno != EEXIST)
			return negative_errno();
	}
	int fd = openat(vms_fd, t->id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? negative_errno() : fd;
}

/* Round 0 of one transaction: its dir opened (or made), its temps written. */
static void prepare_one(int vms_fd, struct store_txn *t)
{
	t->cursor = 0;
	t->made_dir = false;
	t->sync_fd = -1;
	t->dir_fd = open_dir(vms_fd, t);
	for (size_t k = 0; k < t->n_steps; k++) {
		struct store_step *s = &t->steps[k];
		s->temp_fd = -1;
		s->temp[0] = '\0';
		s->err = 0;
		if (t->dir_fd < 0) {
			/* Nothing to remove where there is no dir; nothing can be written. */
			s->err =
			    t->dir_fd == -ENOENT && s->kind != STORE_STEP_WRITE ? 0 : t->dir_fd;
			continue;
		}
		if (s->kind != STORE_STEP_WRITE)
			continue;
		int fd = atomic_temp_write(t->dir_fd, s->name, s->text, s->len, STATE_FILE_MODE,
					   s->temp, sizeof(s->temp));
		if (fd < 0) {
			s->err = fd;
			s->temp[0] = '\0'; /* nothing was left behind */
			continue;
		}
		s->temp_fd = fd;
	}
}

/* Round 0 for all, then one sync makes every temp (and every new dir) durable. */
static void prepare(int vms_fd, struct store_txn *batch, enum store_sync_mode mode,
		    struct sync_list *l, struct sync_list *made)
{
	for (struct store_txn *t = batch; t; t = t->next) {
		prepare_one(vms_fd, t);
		for (size_t k = 0; k < t->n_steps; k++)
			if (t->steps[k].temp_fd >= 0)
				sync_add(l, t->steps[k].temp_fd, t, &t->steps[k]);
		/* One syncfs covers the temps and the new dirs alike. */
		if (t->made_dir)
			sync_add(mode == STORE_SYNC_FS ? l : made, vms_fd, t, NULL);
	}
	sync_run(l, vms_fd, mode, true);
	sync_run(made, vms_fd, mode, false);
}

/*
 * The last link of a state file goes (a rename over it, an unlink): hold it
 * open first, so that freeing its blocks waits for the last close, not the
 * rename. On a filesystem mounted with discard that free waits for the disk
 * (about 3 ms a file on the machine that measured it, README "The write
 * path"); the reaper's thread pays it, off the batch's path. -1 when there is
 * nothing to hold (no such file) or no reaper.
 */
static int hold_last_link(struct fd_closer *reaper, int dir_fd, const char *name)
{
	if (!reaper || fd_closer_backlog(reaper) >= STORE_REAP_MAX)
		return -1;
	return openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
}

static void reap(struct fd_closer *reaper, int fd)
{
	if (fd < 0)
		return;
	if (reaper)
		fd_closer_close(reaper, fd);
	else
		close(fd);
}

/*
 * One step of t, up to the sync that makes it durable (t->sync_fd). Returns
 * false when it needs none.
 */
static bool step_run(int vms_fd, struct store_txn *t, struct store_step *s,
		     struct fd_closer *reaper)
{
	if (s->needs_previous && t->cursor > 0 && t->steps[t->cursor - 1].err != 0) {
		s->err = -ECANCELED;
		return false;
	}
	if (s->err != 0 || t->dir_fd < 0)
		return false;
	switch (s->kind) {
	case STORE_STEP_WRITE: {
		int old = hold_last_link(reaper, t->dir_fd, s->name);
		s->err = atomic_temp_commit(t->dir_fd, s->temp, s->name);
		reap(reaper, old);
		s->temp[0] = '\0'; /* renamed, or unlinked by the failed commit */
		if (s->err < 0)
			return false;
		t->sync_fd = t->dir_fd;
		return true;
	}
	case STORE_STEP_UNLINK: {
		int old = hold_last_link(reaper, t->dir_fd, s->name);
		bool changed = unlinkat(t->dir_fd, s->name, 0) == 0;
		reap(reaper, old);
		if (!changed && errno != ENOENT) {
			s->err = negative_errno();
			return false;
		}
		if (s->remove_temps && (s->err = store_remove_temps_at(t->dir_fd)) < 0)
			return false;
		if (changed)
			t->sync_fd = t->dir_fd;
		return changed;
	}
	case STORE_STEP_RMDIR:
		if (unlinkat(vms_fd, t->id, AT_REMOVEDIR) < 0) {
			/* Kept-aside corrupt copies hold the dir: evidence, not ours to delete. */
			if (errno != ENOENT && errno != ENOTEMPTY)
				s->err = negative_errno();
			return false;
		}
		t->sync_fd = vms_fd;
		return true;
	}
	return false;
}

/* t's current step is as durable as it will get: its crash point, then the next step. */
static void step_durable(struct store_txn *t)
{
	const struct store_step *s = &t->steps[t->cursor];
	if (s->err == 0 && s->crash_after)
		CRASH_POINT(s->crash_after);
	t->cursor++;
}

static void finish_txn(int vms_fd, struct store_txn *t, struct fd_closer *reaper)
{
	bool committed = false;
	for (size_t i = 0; i < t->n_steps; i++) {
		struct store_step *s = &t->steps[i];
		if (s->temp[0] && t->dir_fd >= 0)
			unlinkat(t->dir_fd, s->temp, 0); /* written, never committed */
		s->temp[0] = '\0';
		s->temp_fd = safe_close(s->temp_fd);
		committed = committed || s->err == 0;
	}
	/* A dir made for writes that all failed (a full disk) would read as a record without
	 * its vm.json at the next start: it goes, if still empty. */
	if (t->made_dir && !committed)
		unlinkat(vms_fd, t->id, AT_REMOVEDIR);
	/* A dir removed by the transaction frees its block at this close: the reaper's. */
	reap(reaper, t->dir_fd);
	t->dir_fd = -1;
}

/* One round of one transaction: its steps up to the first that wants a sync. */
static void round_one(int vms_fd, struct store_txn *t, struct fd_closer *reaper)
{
	t->sync_fd = -1;
	/* A step that changed nothing (a file already gone) needs no sync of its own: the
	 * next one runs in this round. */
	while (t->cursor < t->n_steps && !step_run(vms_fd, t, &t->steps[t->cursor], reaper))
		step_durable(t);
}

static void run_batch(int vms_fd, enum store_sync_mode mode, struct store_txn *batch, size_t n_txns,
		      struct store_writer_stats *st, struct fd_closer *reaper)
{
	uint64_t t0 = monotonic_us();
	if (mode == STORE_SYNC_AUTO)
		mode = n_txns > 1 ? STORE_SYNC_FS : STORE_SYNC_EACH;
	struct sync_list l = {.cap = n_txns * (STORE_TXN_MAX_STEPS + 1)};
	struct sync_list made = {.cap = n_txns};
	l.e = calloc(l.cap, sizeof(*l.e));
	made.e = calloc(made.cap, sizeof(*made.e));
	if (!l.e || !made.e) {
		for (struct store_txn *t = batch; t; t = t->next)
			for (size_t i = 0; i < t->n_steps; i++)
				t->steps[i].err = -ENOMEM;
		goto out;
	}
	prepare(vms_fd, batch, mode, &l, &made);
	for (bool more = true; more;) {
		more = false;
		for (struct store_txn *t = batch; t; t = t->next) {
			round_one(vms_fd, t, reaper);
			if (t->sync_fd >= 0)
				sync_add(&l, t->sync_fd, t, &t->steps[t->cursor]);
		}
		sync_run(&l, vms_fd, mode, false);
		for (struct store_txn *t = batch; t; t = t->next) {
			if (t->cursor >= t->n_steps)
				continue;
			step_durable(t);
			more = more || t->cursor < t->n_steps;
		}
	}
	for (struct store_txn *t = batch; t; t = t->next)
		finish_txn(vms_fd, t, reaper);
	st->syncs += l.syncs + made.syncs;
	st->sync_us += l.sync_us + made.sync_us;
	st->batches++;
	st->txns += n_txns;
	if (n_txns > st->max_batch)
		st->max_batch = n_txns;
	st->busy_us += monotonic_us() - t0;
out:
	free(l.e);
	free(made.e);
}

void store_txn_run_now(int vms_fd, enum store_sync_mode mode, struct store_txn *t)
{
	struct store_writer_stats st = {0};
	t->next = NULL;
	run_batch(vms_fd, mode, t, 1, &st, NULL);
}

void store_batch_run_now(int vms_fd, enum store_sync_mode mode, struct store_txn *batch,
			 struct store_writer_stats *st)
{
	size_t n = 0;
	for (struct store_txn *t = batch; t; t = t->next)
		n++;
	run_batch(vms_fd, mode, batch, n, st, NULL);
}

void store_txn_free(struct store_txn *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_steps; i++)
		free(t->steps[i].text);
	free(t);
}

/* --- the thread ------------------------------------------------------------------ */

/* Cut a batch off the queue's head (lock held). */
static struct store_txn *take_batch(struct store_writer *w, size_t *count)
{
	struct store_txn *batch = w->queue, *last = NULL;
	size_t n = 0;
	for (struct store_txn *t = w->queue; t && n < STORE_BATCH_MAX; t = t->next) {
		bool same_vm = false;
		for (struct store_txn *b = batch; b != t && !same_vm; b = b->next)
			same_vm = strcmp(b->id, t->id) == 0;
		if (same_vm)
			break;
		last = t;
		n++;
	}
	w->queue = last->next;
	if (!w->queue)
		w->queue_tail = &w->queue;
	last->next = NULL;
	*count = n;
	return batch;
}

static void batch_done(struct store_writer *w, struct store_txn *batch, size_t n,
		       const struct store_writer_stats *st)
{
	pthread_mutex_lock(&w->lock);
	*w->done_tail = batch;
	struct store_txn *t = batch;
	while (t->next)
		t = t->next;
	w->done_tail = &t->next;
	w->in_thread -= n;
	w->stats.batches += st->batches;
	w->stats.txns += st->txns;
	w->stats.syncs += st->syncs;
	w->stats.busy_us += st->busy_us;
	w->stats.sync_us += st->sync_us;
	if (st->max_batch > w->stats.max_batch)
		w->stats.max_batch = st->max_batch;
	pthread_cond_broadcast(&w->idle);
	pthread_mutex_unlock(&w->lock);
	uint64_t one = 1;
	/* Only EAGAIN can fail this (the counter is full): the loop is woken already. */
	(void)!write(w->efd, &one, sizeof(one));
}

/* Cut a batch off the queue, write it, hand it to the loop (called without the lock). */
static void write_next_batch(struct store_writer *w)
{
	size_t n;
	pthread_mutex_lock(&w->lock);
	struct store_txn *batch = take_batch(w, &n);
	pthread_mutex_unlock(&w->lock);
	struct store_writer_stats st = {0};
	run_batch(w->vms_fd, w->mode, batch, n, &st, w->reaper);
	batch_done(w, batch, n, &st);
}

static void *writer_main(void *arg)
{
	struct store_writer *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->queue && !w->stopping)
			pthread_cond_wait(&w->wake, &w->lock);
		if (!w->queue)
			break;
		pthread_mutex_unlock(&w->lock);
		write_next_batch(w);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* --- the loop's side ----------------------------------------------------------------- */

static void run_callbacks(struct store_writer *w)
{
	pthread_mutex_lock(&w->lock);
	struct store_txn *list = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	pthread_mutex_unlock(&w->lock);
	while (list) {
		struct store_txn *t = list;
		list = t->next;
		w->pending--;
		t->done(t, t->userdata);
		store_txn_free(t);
	}
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct store_writer *w = arg;
	uint64_t n;
	(void)what;
	(void)!read(fd, &n, sizeof(n));
	run_callbacks(w);
}

struct store_writer *store_writer_new(struct event_base *base, int vms_fd,
				      enum store_sync_mode mode)
{
	struct store_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->base = base;
	w->vms_fd = vms_fd;
	w->mode = mode;
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->ev_done = w->efd >= 0 ? event_new(base, w->efd, EV_READ | EV_PERSIST, on_done, w) : NULL;
	if (!w->ev_done || event_add(w->ev_done, NULL) < 0) {
		event_freep(&w->ev_done);
		safe_close(w->efd);
		free(w);
		return NULL;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	pthread_cond_init(&w->idle, NULL);
	w->reaper = fd_closer_new(); /* without one, files are freed on the writer's thread */
	return w;
}

void store_writer_submit(struct store_writer *w, struct store_txn *t)
{
	t->next = NULL;
	w->pending++;
	pthread_mutex_lock(&w->lock);
	if (!w->started && pthread_create(&w->thread, NULL, writer_main, w) == 0)
		w->started = true;
	*w->queue_tail = t;
	w->queue_tail = &t->next;
	w->in_thread++;
	pthread_cond_signal(&w->wake);
	bool started = w->started;
	pthread_mutex_unlock(&w->lock);
	if (!started) {
		/* No thread to be had: write here, answer from the loop as ever. */
		log_warnx("store writer thread unavailable: writing on the event loop");
		write_next_batch(w);
	}
}

size_t store_writer_pending(const struct store_writer *w)
{
	return w ? w->pending : 0;
}

void store_writer_flush(struct store_writer *w)
{
	while (w && w->pending > 0) {
		pthread_mutex_lock(&w->lock);
		while (w->in_thread > 0)
			pthread_cond_wait(&w->idle, &w->lock);
		pthread_mutex_unlock(&w->lock);
		run_callbacks(w); /* which may submit more */
	}
}

void store_writer_stats(struct store_writer *w, struct store_writer_stats *st)
{
	pthread_mutex_lock(&w->lock);
	*st = w->stats;
	pthread_mutex_unlock(&w->lock);
}

void store_writer_free(struct store_writer *w)
{
	if (!w)
		return;
	store_writer_flush(w);
	pthread_mutex_lock(&w->lock);
	log_info("store writer: %llu transactions in %llu batches (largest %zu), %llu syncs; "
		 "busy %llu ms, of which %llu ms in syncs",
		 (unsigned long long)w->stats.txns, (unsigned long long)w->stats.batches,
		 w->stats.max_batch, (unsigned long long)w->stats.syncs,
		 (unsigned long long)w->stats.busy_us / 1000,
		 (unsigned long long)w->stats.sync_us / 1000);
	w->stopping = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	if (w->started)
		pthread_join(w->thread, NULL);
	fd_closer_free(w->reaper);
	event_free(w->ev_done);
	safe_close(w->efd);
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->idle);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
