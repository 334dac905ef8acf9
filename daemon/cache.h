/*
 * The handle cache (DESIGN §2): id -> what bangerd knows about a VM right
 * now, including the pidfd that tells it, with no round trip, whether the
 * firecracker still lives. While bangerd runs this is the authority for
 * live handles; vm.json and handles.json exist so a restart can rebuild it.
 * No I/O here: service.c decides what to write and when.
 *
 * An entry keeps what the hot paths (IsAlive, GetStatus) read as plain
 * fields, and the full record and handles packed (vm_pack): a few hundred
 * bytes per VM, not the ~10 KiB of the fixed-size structs.
 */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <uthash.h>

#include "vm.h"

enum vm_liveness {
	VM_DEAD,
	VM_ALIVE,
	VM_UNKNOWN, /* could not be verified (helper down, process not inspectable) */
};

struct vm_entry {
	char id[VM_ID_MAX + 1];
	enum vm_state state; /* mirrors the packed record's state */
	bool has_handles;
	int32_t pid;		/* mirrors the packed handles' pid, or 0 */
	bool handles_persisted; /* handles.json says what the handles say */
	bool record_persisted;	/* vm.json says what the record says */
	enum vm_liveness liveness;
	int pidfd; /* the verified firecracker, or -1 */
	struct event *ev_exit;
	char *problem;		/* a file on disk that could not be read (for List), or NULL */
	char *kept_as;		/* where a corrupt handles.json was kept, or NULL */
	bool record_unreadable; /* vm.json could not be read: never written over (problem says why)
				 */
	void *owner;		/* the daemon, for event callbacks */
	uint8_t *packed;
	uint32_t packed_len;
	uint32_t
	    version; /* bumped by every cache_entry_put: a write in flight sees if it is stale */
	UT_hash_handle hh;
};

struct vm_cache {
	struct vm_entry *by_id;
};

struct vm_entry *cache_find(struct vm_cache *c, const char *id);
/* A new entry for rec (no handles, pidfd -1), or NULL on allocation failure. */
struct vm_entry *cache_add(struct vm_cache *c, const struct vm_record *rec);
/* Take the entry out of the map; the caller frees it with cache_entry_free(). */
void cache_remove(struct vm_cache *c, struct vm_entry *e);
void cache_entry_free(struct vm_entry *e);

/* Unpack the record and (if any) handles; either pointer may be NULL. */
void cache_entry_get(const struct vm_entry *e, struct vm_record *r, struct vm_handles *h);
/* Replace record and handles (h NULL: none). Returns 0 or -ENOMEM (the entry is unchanged). */
int cache_entry_put(struct vm_entry *e, const struct vm_record *r, const struct vm_handles *h);

/* Stop watching the firecracker: closes and unwatches the pidfd. */
void cache_entry_unwatch(struct vm_entry *e);
size_t cache_count(const struct vm_cache *c);
void cache_free_all(struct vm_cache *c);

#define CACHE_FOREACH(c, e, tmp) HASH_ITER(hh, (c)->by_id, e, tmp)
