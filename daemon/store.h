/*
 * bangerd's state directory (DESIGN §2). This file owns every path below
 * the state dir; nothing else in the daemon builds one.
 */
#pragma once

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "store_writer.h"
#include "vm.h"

#define STORE_MAX_FILE_BYTES (64 * 1024)
#define STORE_FORMAT_VERSION 1

struct store {
	char dir[PATH_MAX]; /* the state dir */
	int vms_fd;	    /* open O_DIRECTORY fd of <state dir>/vms, created 0700 if missing */
	struct store_writer *writer; /* NULL until store_start_writer: writes then run inline */
	enum store_sync_mode sync_mode;
};

/*
 * Create the state dir if needed and make it owned by uid:gid, mode 0700.
 * Refuses a symlink, a non-directory, or (when not root) a dir owned by
 * someone else. Returns 0 or -errno with why set.
 */
int store_prepare_dir(const char *dir, uid_t uid, gid_t gid, char *why, size_t why_size);

/* Open <state dir>/vms (created 0700 if missing). s->vms_fd is -1 on failure. */
int store_open(struct store *s, const char *state_dir, char *why, size_t why_size);
/* From now on transactions are written on the writer thread and answered on base. */
int store_start_writer(struct store *s, struct event_base *base);
/* Flush the writer (running every callback here), stop it, close vms/. */
void store_close(struct store *s);

/*
 * Transactions (store_writer.h): the changes to one VM's files, built here
 * on the loop's thread (encoded and read back, so the writer only moves
 * bytes), made durable by the writer in the order they were added. Each
 * add returns the step's index (its result is t->steps[index].err once
 * done) or -errno (-EINVAL: a record or handles that would not read back;
 * -E2BIG: no room). crash_after names a crash point reached once the step
 * is durable (crashpoint.h), or is NULL. A step after a failed one still
 * runs, except in store_txn_remove_vm.
 */
struct store_txn *store_txn_new(const char *id);
int store_txn_write_record(struct store_txn *t, const struct vm_record *r, const char *crash_after);
int store_txn_write_handles(struct store_txn *t, const struct vm_handles *h,
			    const char *crash_after);
int store_txn_remove_handles(struct store_txn *t, const char *crash_after);
/* store_remove_vm's steps; returns the index of the last (the dir). */
int store_txn_remove_vm(struct store_txn *t);
/* The first failed step's error, or 0. */
int store_txn_error(const struct store_txn *t);
/*
 * Hand t to the writer; done runs on the loop's thread once every step is
 * durable or failed, then t is freed. Without a writer, t runs now and done
 * is called before this returns.
 */
void store_submit(struct store *s, struct store_txn *t, store_txn_done_fn done, void *userdata);
/* Remove temps an interrupted write left in the VM's dir (a start does this). */
int store_remove_temps(struct store *s, const char *id);

/*
 * The same changes, one at a time, on the caller's thread (tests, tools).
 * vms/<id>/ is created 0700 when missing; vm.json written atomically, mode
 * 0600. A record or handles that would not read back (bad id, unterminated
 * field, count over the max, a string that is not UTF-8) is refused with
 * -EINVAL and nothing is written.
 */
int store_write_record(struct store *s, const struct vm_record *r);
int store_write_handles(struct store *s, const char *id, const struct vm_handles *h);
/* Missing file counts as success. */
int store_remove_handles(struct store *s, const char *id);
/*
 * Remove handles.json, then vm.json LAST, then the dir. Missing pieces
 * count as success. Copies of corrupt files kept aside are never deleted:
 * while any exists, the (record-less) dir stays and 0 is still returned.
 */
int store_remove_vm(struct store *s, const char *id);
/*
 * Read vm.json: 0; -ENOENT; -EBADMSG corrupt (why names the file and says
 * what is wrong); -EPROTONOSUPPORT unknown "version" (file left alone, why
 * names it).
 */
int store_read_record(struct store *s, const char *id, struct vm_record *r, char *why,
		      size_t why_size);
/*
 * Read handles.json: 0; -ENOENT (the normal state of a stopped VM, not an
 * error); -EBADMSG when corrupt or of an unknown version: the file is
 * renamed aside to handles.json.corrupt-<unix seconds>[-N] in the same dir
 * (never deleted), kept_as gets that full path, why names the original file
 * and the defect.
 */
int store_read_handles(struct store *s, const char *id, struct vm_handles *h, char *why,
		       size_t why_size, char *kept_as, size_t kept_size);
/*
 * Names of the entries in vms/ that are valid ids (vm_id_is_valid), sorted;
 * caller frees each and the array. Other entries are skipped.
 */
int store_list_ids(struct store *s, char ***ids, size_t *count);
/* Full path of a VM file for messages: <state dir>/vms/<id>/<name>. */
void store_path(const struct store *s, const char *id, const char *name, char *buf, size_t size);
