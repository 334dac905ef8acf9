/*
 * The store's writer (DESIGN §2, "The write path"): every durable change
 * below vms/ is made on this thread, never on the event loop, so that a
 * read (IsAlive, GetHandles, a VM's exit) never waits behind an fsync.
 *
 * Group commit: the transactions that are pending together are made
 * durable together. Every temp file of the batch is written, one sync makes
 * them all durable, then each transaction's steps run in rounds (a rename,
 * an unlink, a rmdir), and one sync per round makes that round's directory
 * changes durable. A lone write costs what atomic_write_at costs. Steps of
 * one transaction are durable in their order; transactions of one VM never
 * share a batch, so they are durable in the order they were submitted.
 *
 * Results go back to the event loop through an eventfd: only the loop's
 * thread touches libevent and calls the done callbacks, so libevent needs
 * no thread support (libevent_pthreads is not linked). The thread touches
 * nothing but the transactions it holds and the vms/ fd.
 */
#pragma once

#include <dirent.h>
#include <event2/event.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm.h"

#define STORE_TXN_MAX_STEPS 3
/* Transactions made durable by one batch at most (a few syncs for a thousand teardowns). */
#define STORE_BATCH_MAX 512
/* Replaced or removed files held open for the reaper at most (their fds are ours). */
#define STORE_REAP_MAX 1024

enum store_step_kind {
	STORE_STEP_WRITE,  /* replace name with text: temp, sync, rename, sync the dir */
	STORE_STEP_UNLINK, /* remove name (missing counts as done), sync the dir */
	STORE_STEP_RMDIR,  /* remove the VM's dir if empty, sync vms/ */
};

struct store_step {
	enum store_step_kind kind;
	const char *name; /* a file name of store.c's, static */
	char *text;	  /* WRITE: the bytes, owned by the step */
	size_t len;
	bool remove_temps;	 /* UNLINK: also remove temps an interrupted write left */
	bool needs_previous;	 /* skipped (-ECANCELED) unless the step before succeeded */
	const char *crash_after; /* a crash point reached once this step is durable, or NULL */
	int err;		 /* 0 or -errno, once the transaction is done */
	/* The writer's own while it runs the step. */
	int temp_fd;
	char temp[NAME_MAX + 1];
};

struct store_txn;
typedef void (*store_txn_done_fn)(struct store_txn *t, void *userdata);

/* Changes to one VM's files, made durable in the order of their steps. */
struct store_txn {
	struct store_txn *next;
	char id[VM_ID_MAX + 1];
	struct store_step steps[STORE_TXN_MAX_STEPS];
	size_t n_steps;
	store_txn_done_fn done;
	void *userdata;
	/* The writer's own while it runs the transaction. */
	int dir_fd;
	size_t cursor;
	bool made_dir; /* its dir was made: vms/ wants a sync */
	int sync_fd;   /* what this round's step wants synced, or -1 */
};

enum store_sync_mode {
	/* EACH for a batch of one transaction, FS for more (the default; README, "The write
	 * path", has the figures that chose it). */
	STORE_SYNC_AUTO,
	/* fdatasync every temp, fsync every changed dir: one file costs what atomic_write_at
	 * costs, but every sync flushes the disk's cache again (ext4, write-back cache). */
	STORE_SYNC_EACH,
	/* one syncfs(2) per round: one journal commit and one flush for the whole batch, but
	 * it also writes back whatever else is dirty on the filesystem, ours or not. */
	STORE_SYNC_FS,
};

struct store_writer_stats {
	uint64_t batches;
	uint64_t txns;
	uint64_t syncs;	  /* fdatasync/fsync/syncfs calls */
	uint64_t busy_us; /* time spent writing batches */
	uint64_t sync_us; /* of which waiting for syncs */
	size_t max_batch; /* the most transactions one batch held */
};

struct store_writer;

/*
 * A writer for the VM dirs under vms_fd (not owned), answering on base. NULL
 * when the eventfd cannot be had; the thread starts with the first batch
 * (without one, batches run on the caller's thread, logged).
 */
struct store_writer *store_writer_new(struct event_base *base, int vms_fd,
				      enum store_sync_mode mode);
/* Queue t; t->done runs later on the loop's thread, and t is freed after it returns. */
void store_writer_submit(struct store_writer *w, struct store_txn *t);
/* Transactions submitted whose done has not run yet. */
size_t store_writer_pending(const struct store_writer *w);
/* Wait for every transaction, running their callbacks (and what they submit) here. */
void store_writer_flush(struct store_writer *w);
void store_writer_stats(struct store_writer *w, struct store_writer_stats *st);
/* Flush, then stop the thread. */
void store_writer_free(struct store_writer *w);

/* Run one transaction now, on the caller's thread (a batch of one). */
void store_txn_run_now(int vms_fd, enum store_sync_mode mode, struct store_txn *t);
/* Run a batch (linked by next, one transaction per VM) now, on the caller's thread. */
void store_batch_run_now(int vms_fd, enum store_sync_mode mode, struct store_txn *batch,
			 struct store_writer_stats *st);
void store_txn_free(struct store_txn *t);
/* A DIR stream on a fresh fd of dir_fd (the stream shares its offset with the fd it reads). */
int store_opendir_at(int dir_fd, DIR **dir);
/* Remove the temps an interrupted write left in a VM's dir. 0 or -errno. */
int store_remove_temps_at(int dir_fd);
