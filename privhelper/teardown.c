/*
 * TEARDOWN: remove what a dead VM left behind, in the order DM -> loops ->
 * tap (a DM device sits on loops; nothing sits on the tap), one result per
 * requested resource. Every name of the request is checked against the
 * policy before anything is touched, so a bad name anywhere is a refusal
 * of that item only. Something still busy stops the chain: what lies
 * below it (and the tap) is left standing and reported busy, never torn
 * out from under a user. Idempotent: a resource already gone is "absent",
 * which counts as done. Never trusts a name for more than where to look.
 */
#include <assert.h>
#include <net/if.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "helper.h"
#include "log.h"
#include "path.h"
#include "teardown.h"

static_assert(PS_DM_NAME_MAX <= PS_PATH_MAX && PS_IFNAME_MAX <= PS_PATH_MAX,
	      "every requested name fits a result's name");

/* What each kind of resource does, indexed by enum ps_resource_kind. */
struct teardown_kind {
	bool (*check)(const struct ps_policy *p, struct ps_teardown_result *r);
	void (*act)(const struct ps_policy *p, struct ps_teardown_result *r);
};

static const struct teardown_kind teardown_kinds[] = {
    [PS_RESOURCE_DM] = {dm_name_check, dm_teardown},
    [PS_RESOURCE_LOOP] = {loop_name_check, loop_teardown},
    [PS_RESOURCE_TAP] = {tap_name_check, tap_teardown},
};

void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void plan_add(const struct ps_policy *p, struct ps_teardown_reply *rep,
		     enum ps_resource_kind kind, const char *name, uint64_t recorded)
{
	struct ps_teardown_result *r = &rep->results[rep->count++];
	r->kind = kind;
	/* What bangerd recorded of its identity (0: nothing): a loop's diskseq, a tap's ifindex. */
	if (kind == PS_RESOURCE_LOOP)
		r->diskseq = recorded;
	else if (kind == PS_RESOURCE_TAP)
		r->ifindex = (uint32_t)recorded; /* the decoder keeps it within INT32_MAX */
	/* Cannot fail: no request field is wider than name (PS_PATH_MAX). */
	field_set(r->name, sizeof(r->name), name);
	teardown_kinds[kind].check(p, r);
}

/* One result per requested item, in chain order; refused ones are final already. */
static void teardown_plan(const struct ps_policy *p, const struct ps_teardown *q,
			  struct ps_teardown_reply *rep)
{
	for (uint32_t i = 0; i < q->n_dm; i++)
		plan_add(p, rep, PS_RESOURCE_DM, q->dm[i], 0);
	for (uint32_t i = 0; i < q->n_loops; i++)
		plan_add(p, rep, PS_RESOURCE_LOOP, q->loops[i], q->loop_diskseq[i]);
	if (q->tap[0] != '\0')
		plan_add(p, rep, PS_RESOURCE_TAP, q->tap, q->tap_ifindex);
}

static bool blocks_chain(const struct ps_teardown_result *r)
{
	return r->status == PS_TEARDOWN_BUSY || r->status == PS_TEARDOWN_FAILED;
}

/*
 * Act on every item the plan left open. Items of one kind do not block
 * each other; an item that ends busy or failed blocks every later kind.
 */
static void teardown_run(const struct ps_policy *p, struct ps_teardown_reply *rep)
{
	bool blocked = false, kind_blocks = false;
	uint32_t kind = 0;

	for (uint32_t i = 0; i < rep->count; i++) {
		struct ps_teardown_result *r = &rep->results[i];
		if (r->kind != kind) {
			blocked = blocked || kind_blocks;
			kind = r->kind;
		}
		if (r->status != 0)
			continue;
		if (blocked)
			teardown_set(r, PS_TEARDOWN_BUSY, PS_REASON_DEPENDENCY_BUSY, 0);
		else
			teardown_kinds[r->kind].act(p, r);
		kind_blocks = kind_blocks || blocks_chain(r);
	}
}

#define AUDIT_LIST_SEPARATORS ",:()"
/*
 * The longest TEARDOWN audit line fits a strbuf: each name byte at most 5 (\xNN, its
 * backslash escaped again when the list is quoted), each result's status and reason at
 * most 96, and 2 KiB for the request's other fields.
 */
static_assert(PS_TEARDOWN_MAX_DM * (5 * PS_DM_NAME_MAX + 96) +
		      PS_TEARDOWN_MAX_LOOPS * (5 * PS_PATH_MAX + 96) + 5 * IF_NAMESIZE + 96 + 2048 <
		  STRBUF_CAPACITY,
	      "a TEARDOWN's audit line may not fit a strbuf");

static void audit_results(struct asroot_call *c, const struct ps_teardown_reply *rep,
			  enum ps_resource_kind kind, const char *key, const char *field)
{
	struct strbuf list;
	strbuf_init(&list);
	for (uint32_t i = 0; i < rep->count; i++) {
		const struct ps_teardown_result *r = &rep->results[i];
		if (r->kind != kind)
			continue;
		audit_field(c, field, r->name);
		if (list.len)
			strbuf_appendf(&list, ",");
		/* A name cannot forge an item ("x:removed,y") or a reason: its separators go
		 * escaped. */
		strbuf_append_escaped(&list, r->name, AUDIT_LIST_SEPARATORS);
		strbuf_appendf(&list, ":%s", ps_teardown_status_name((int)r->status));
		if (r->reason == PS_REASON_DISKSEQ_CHANGED)
			strbuf_appendf(&list, "(diskseq %llu != recorded %llu)",
				       (unsigned long long)r->diskseq_found,
				       (unsigned long long)r->diskseq);
		else if (r->reason == PS_REASON_IFINDEX_CHANGED)
			strbuf_appendf(&list, "(ifindex %u != recorded %u)", r->ifindex_found,
				       r->ifindex);
		else if (r->reason)
			strbuf_appendf(&list, "(%s)", ps_reason_name(r->reason));
		else if (r->err && strerrorname_np(-r->err))
			strbuf_appendf(&list, "(%s)", strerrorname_np(-r->err));
	}
	strbuf_append_kv_quoted(&c->args, key, strbuf_str(&list));
}

/* True when every item is removed or absent; *err gets the first errno of any other. */
static bool teardown_complete(const struct ps_teardown_reply *rep, int *err)
{
	bool complete = true;
	*err = 0;
	for (uint32_t i = 0; i < rep->count; i++) {
		uint32_t s = rep->results[i].status;
		if (s == PS_TEARDOWN_REMOVED || s == PS_TEARDOWN_ABSENT)
			continue;
		complete = false;
		if (*err == 0)
			*err = rep->results[i].err;
	}
	return complete;
}

int asroot_teardown(struct helper *h, struct asroot_call *c)
{
	struct ps_teardown_reply *rep = &c->reply.teardown;

	teardown_plan(&h->policy, &c->m->payload.teardown, rep);
	teardown_run(&h->policy, rep);
	audit_results(c, rep, PS_RESOURCE_DM, "dm", "BANGER_DM");
	audit_results(c, rep, PS_RESOURCE_LOOP, "loops", "BANGER_LOOP");
	audit_results(c, rep, PS_RESOURCE_TAP, "tap", "BANGER_TAP");
	c->result = teardown_complete(rep, &c->err) ? "ok" : "partial";
	return 0;
}
