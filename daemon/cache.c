/* See cache.h. uthash (a well-kept header library) instead of a hand-written table. */
#include "cache.h"

#include <stdlib.h>
#include <string.h>

#include "event_util.h"
#include "log.h"
#include "macro.h"

struct vm_entry *cache_find(struct vm_cache *c, const char *id)
{
	struct vm_entry *e = NULL;
	HASH_FIND_STR(c->by_id, id, e);
	return e;
}

struct vm_entry *cache_add(struct vm_cache *c, const struct vm_record *rec)
{
	struct vm_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	memcpy(e->id, rec->id, sizeof(e->id));
	e->pidfd = -1;
	e->record_persisted = true;
	e->handles_persisted = true;
	e->liveness = VM_DEAD;
	if (cache_entry_put(e, rec, NULL) < 0) {
		free(e);
		return NULL;
	}
	HASH_ADD_STR(c->by_id, id, e);
	return e;
}

void cache_remove(struct vm_cache *c, struct vm_entry *e)
{
	HASH_DEL(c->by_id, e);
}

void cache_entry_get(const struct vm_entry *e, struct vm_record *r, struct vm_handles *h)
{
	/* The blob was written by vm_pack in this process: failing to read it is a bug. */
	if (vm_unpack(e->packed, e->packed_len, r, h, NULL) < 0)
		fatalx(1, "vm %s: corrupt in-memory entry", e->id);
}

int cache_entry_put(struct vm_entry *e, const struct vm_record *r, const struct vm_handles *h)
{
	uint8_t *packed;
	size_t len;
	int ret = vm_pack(r, h, &packed, &len);
	if (ret < 0)
		return ret;
	free(e->packed);
	e->packed = packed;
	e->packed_len = (uint32_t)len;
	e->version++;
	e->state = r->state;
	e->has_handles = h != NULL;
	e->pid = h ? h->pid : 0;
	return 0;
}

void cache_entry_unwatch(struct vm_entry *e)
{
	event_freep(&e->ev_exit);
	e->pidfd = safe_close(e->pidfd);
}

void cache_entry_free(struct vm_entry *e)
{
	if (!e)
		return;
	cache_entry_unwatch(e);
	free(e->packed);
	free(e->problem);
	free(e->kept_as);
	free(e);
}

size_t cache_count(const struct vm_cache *c)
{
	return HASH_COUNT(c->by_id);
}

void cache_free_all(struct vm_cache *c)
{
	struct vm_entry *e, *tmp;
	HASH_ITER(hh, c->by_id, e, tmp)
	{
		HASH_DEL(c->by_id, e);
		cache_entry_free(e);
	}
}
