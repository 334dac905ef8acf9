/* See cache.h. uthash (a well-kept header library) instead of a hand-written table. */
#include "cache.h"

#include <stdlib.h>
#include <string.h>

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
	e->rec = *rec;
	e->pidfd = -1;
	e->record_persisted = true;
	e->handles_persisted = true;
	e->liveness = VM_DEAD;
	HASH_ADD_STR(c->by_id, rec.id, e);
	return e;
}

void cache_remove(struct vm_cache *c, struct vm_entry *e)
{
	HASH_DEL(c->by_id, e);
}

void cache_drop_handles(struct vm_entry *e)
{
	if (e->ev_exit) {
		event_free(e->ev_exit);
		e->ev_exit = NULL;
	}
	e->pidfd = safe_close(e->pidfd);
	e->has_handles = false;
	memset(&e->handles, 0, sizeof(e->handles));
	e->handles_persisted = true;
	e->liveness = VM_DEAD;
}

void cache_entry_free(struct vm_entry *e)
{
	if (!e)
		return;
	cache_drop_handles(e);
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
