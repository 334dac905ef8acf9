/*
 * bangerd's state directory (DESIGN §2). This file owns every path below
 * the state dir; nothing else in the daemon builds one.
 */
#pragma once

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "vm.h"

#define STORE_MAX_FILE_BYTES (64 * 1024)
#define STORE_FORMAT_VERSION 1

struct store {
	char dir[PATH_MAX]; /* the state dir */
	int vms_fd;	    /* open O_DIRECTORY fd of <state dir>/vms, created 0700 if missing */
};

/*
 * Create the state dir if needed and make it owned by uid:gid, mode 0700.
 * Refuses a symlink, a non-directory, or (when not root) a dir owned by
 * someone else. Returns 0 or -errno with why set.
 */
int store_prepare_dir(const char *dir, uid_t uid, gid_t gid, char *why, size_t why_size);

/* Open <state dir>/vms (created 0700 if missing). s->vms_fd is -1 on failure. */
int store_open(struct store *s, const char *state_dir, char *why, size_t why_size);
void store_close(struct store *s);

/*
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
