/*
 * The VM record and its live handles (DESIGN §2), as bangerd holds them in
 * memory and as store.c writes them to vm.json and handles.json. Plain data:
 * no I/O, no event-loop state (the cache adds that around it).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "privsep.h"

#define VM_ID_MAX	64 /* [A-Za-z0-9][A-Za-z0-9_.-]{0,63} */
#define VM_MAX_LOOPS	PS_TEARDOWN_MAX_LOOPS
#define VM_MAX_DM	PS_TEARDOWN_MAX_DM
#define VM_BOOT_ID_SIZE 37 /* a UUID as /proc/sys/kernel/random/boot_id spells it, and NUL */

enum vm_state {
	VM_STARTING, /* registered: resources planned, maybe being created */
	VM_RUNNING,  /* handles set and verified */
	VM_STOPPED,
};

enum vm_on_exit {
	VM_ON_EXIT_TEARDOWN,
	VM_ON_EXIT_KEEP,
};

/* What a manager said it is about to create (Register), before it exists. */
struct vm_planned {
	char tap[PS_IFNAME_MAX];
	uint32_t n_loop_files;
	char loop_files[VM_MAX_LOOPS][PS_PATH_MAX];
	uint32_t n_dm;
	char dm[VM_MAX_DM][PS_DM_NAME_MAX];
};

/* The live handles of a running VM: what handles.json holds. */
struct vm_handles {
	int32_t pid;
	uint64_t start_time;
	char boot_id[VM_BOOT_ID_SIZE];
	char tap[PS_IFNAME_MAX];
	/*
	 * The tap's ifindex when SetHandles named it: the kernel's number for that
	 * one link, so that a teardown cannot take a later link of the same name
	 * for ours. 0: not recorded (no tap, or handles of a bangerd from before).
	 */
	uint32_t tap_ifindex;
	uint32_t n_loops;
	char loops[VM_MAX_LOOPS][PS_PATH_MAX]; /* /dev/loopN */
	/*
	 * Each loop's disk sequence number when SetHandles named it: the kernel's
	 * name for that one attach, never reused, so that a teardown cannot take
	 * a later attach of the same number for ours. 0: not recorded (handles
	 * of a bangerd from before it was).
	 */
	uint64_t loop_diskseq[VM_MAX_LOOPS];
	uint32_t n_dm;
	char dm[VM_MAX_DM][PS_DM_NAME_MAX];
};

/*
 * The record: what vm.json holds. The teardown mirror repeats the
 * teardown-critical fields of the handles, so that teardown works even when
 * handles.json is lost (the Go original's persistRuntimeTeardownState).
 */
struct vm_record {
	char id[VM_ID_MAX + 1];
	enum vm_state state;
	enum vm_on_exit on_exit;
	char api_sock[PS_SOCK_PATH_MAX];
	bool has_planned;
	struct vm_planned planned;
	struct {
		char tap[PS_IFNAME_MAX];
		uint32_t tap_ifindex;
		uint32_t n_loops;
		char loops[VM_MAX_LOOPS][PS_PATH_MAX];
		uint64_t loop_diskseq[VM_MAX_LOOPS];
		uint32_t n_dm;
		char dm[VM_MAX_DM][PS_DM_NAME_MAX];
	} mirror;
};

const char *vm_state_name(enum vm_state s);
int vm_state_from_name(const char *name); /* -EINVAL if unknown */
const char *vm_on_exit_name(enum vm_on_exit e);
int vm_on_exit_from_name(const char *name);

/* [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, never "." or "..": safe as a directory name. */
bool vm_id_is_valid(const char *id, const char **why);

/* Whether any of n loops has its diskseq recorded (none has, in an older bangerd's files). */
bool vm_loops_have_diskseq(const uint64_t *loop_diskseq, uint32_t n_loops);

/* Copy the teardown-critical fields of h onto the record's mirror. */
void vm_record_mirror_handles(struct vm_record *r, const struct vm_handles *h);

/*
 * The compact form the cache keeps (DESIGN §2's in-memory cache at 10,000
 * VMs): the used bytes of every string, length-prefixed, and the scalars.
 * A record with its handles packs to a few hundred bytes instead of the
 * ~10 KiB of the fixed-size structs. h may be NULL (no handles).
 */
int vm_pack(const struct vm_record *r, const struct vm_handles *h, uint8_t **out, size_t *len);
/* Unpack into r and h (either may be NULL). -EBADMSG if buf is not what vm_pack wrote. */
int vm_unpack(const uint8_t *buf, size_t len, struct vm_record *r, struct vm_handles *h,
	      bool *has_handles);
