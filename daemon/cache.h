/*
 * The handle cache (DESIGN §2): id -> what bangerd knows about a VM right
 * now, including the pidfd that tells it, with no round trip, whether the
 * firecracker still lives. While bangerd runs this is the authority for
 * live handles; vm.json and handles.json exist so a restart can rebuild it.
 * No I/O here: service.c decides what to write and when.
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
	struct vm_record rec;
	bool has_handles;
	struct vm_handles handles;
	bool handles_persisted; /* handles.json says what handles says */
	bool record_persisted;	/* vm.json says what rec says */
	enum vm_liveness liveness;
	int pidfd; /* the verified firecracker, or -1 */
	struct event *ev_exit;
	char
	    *problem; /* a file on disk that could not be read (for List and GetHandles), or NULL */
	char *kept_as; /* where a corrupt handles.json was kept, or NULL */
	unsigned busy; /* helper requests in flight for this VM */
	void *owner;   /* the daemon, for event callbacks */
	UT_hash_handle hh;
};

struct vm_cache {
	struct vm_entry *by_id;
};

struct vm_entry *cache_find(struct vm_cache *c, const char *id);
/* Returns a new entry (zeroed, pidfd -1) added under rec->id, or NULL on allocation failure. */
struct vm_entry *cache_add(struct vm_cache *c, const struct vm_record *rec);
/* Take the entry out of the map; the caller frees it with cache_entry_free(). */
void cache_remove(struct vm_cache *c, struct vm_entry *e);
void cache_entry_free(struct vm_entry *e);
/* Forget the live handles (the entry stays): closes and unwatches the pidfd. */
void cache_drop_handles(struct vm_entry *e);
size_t cache_count(const struct vm_cache *c);
void cache_free_all(struct vm_cache *c);

#define CACHE_FOREACH(c, e, tmp) HASH_ITER(hh, (c)->by_id, e, tmp)
