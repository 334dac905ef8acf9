/*
 * The helper's half of the codec: what a request must look like before a
 * handler may see it. Runs as root against a possibly compromised bangerd,
 * so every field is checked, reserved bytes included; a failed check is a
 * protocol violation and the helper exits. Which request types exist, and
 * when each is permitted, is the helper's table (privhelper/dispatch.c).
 */
#include <stdint.h>
#include <string.h>

#include "privsep.h"
#include "privsep_check.h"

/* A printable word: what may become a log field as it is. */
static int check_word(const char *s, const char *label, char *why, size_t why_size)
{
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return ps_violation(why, why_size, "%s: byte 0x%02x is not printable",
					    label, (unsigned char)*s);
	return 0;
}

/* Empty, or a VM id: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
static int check_vm_id(const char *id, char *why, size_t why_size)
{
	static const char more[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
	size_t n = strlen(id);
	if (n > PS_VM_ID_MAX)
		return ps_violation(why, why_size, "caller.vm: %zu bytes, at most %d", n,
				    PS_VM_ID_MAX);
	if (n > 0 && (strspn(id, more) != n || !strchr(more, id[0]) || strchr("_.-", id[0])))
		return ps_violation(why, why_size, "caller.vm: not a VM id");
	return 0;
}

static int check_caller(const struct ps_caller *c, char *why, size_t why_size)
{
	CHECK_ZERO(c->reserved, "caller.reserved");
	CHECK_STRING(c->call, "caller.call");
	CHECK_STRING(c->vm, "caller.vm");
	PS_TRY(check_word(c->call, "caller.call", why, why_size));
	return check_vm_id(c->vm, why, why_size);
}

int ps_validate_hello(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	(void)nfds;
	CHECK_ZERO(p->hello.reserved, "hello.reserved");
	return check_caller(&p->hello.caller, why, why_size);
}

int ps_validate_probe(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_probe *q = &p->probe;
	PS_TRY(check_caller(&q->caller, why, why_size));
	if (q->flags & ~PS_PROBE_HAS_PIDFD)
		return ps_violation(why, why_size, "probe.flags: unknown bits 0x%x", q->flags);
	if (((q->flags & PS_PROBE_HAS_PIDFD) != 0) != (nfds == 1))
		return ps_violation(why, why_size,
				    "probe: pidfd flag does not match %zu attached fds", nfds);
	if (!(q->flags & PS_PROBE_HAS_PIDFD) && q->pid <= 0)
		return ps_violation(why, why_size, "probe.pid: %d is not a process id", q->pid);
	CHECK_STRING(q->api_sock, "probe.api_sock");
	CHECK_ZERO(q->reserved, "probe.reserved");
	if (q->api_sock[0] == '\0')
		return ps_violation(why, why_size, "probe.api_sock: empty");
	return 0;
}

int ps_validate_scan(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_scan *q = &p->scan;
	(void)nfds;
	PS_TRY(check_caller(&q->caller, why, why_size));
	if (q->budget_ms == 0 || q->budget_ms > PS_SCAN_BUDGET_MAX_MS)
		return ps_violation(why, why_size, "scan.budget_ms: %u not in 1..%u", q->budget_ms,
				    PS_SCAN_BUDGET_MAX_MS);
	if (q->nparts == 0 || q->nparts > PS_SCAN_MAX_PARTS)
		return ps_violation(why, why_size, "scan.nparts: %u not in 1..%d", q->nparts,
				    PS_SCAN_MAX_PARTS);
	if (q->part >= q->nparts)
		return ps_violation(why, why_size, "scan.part: %u not below nparts %u", q->part,
				    q->nparts);
	return ps_check_string_array(q->sockets[0], PS_SOCK_PATH_MAX, PS_SCAN_PART_MAX, q->count,
				     "scan.sockets", why, why_size);
}

int ps_validate_teardown(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_teardown *q = &p->teardown;
	(void)nfds;
	PS_TRY(check_caller(&q->caller, why, why_size));
	PS_TRY(ps_check_string_array(q->dm[0], PS_DM_NAME_MAX, PS_TEARDOWN_MAX_DM, q->n_dm,
				     "teardown.dm", why, why_size));
	PS_TRY(ps_check_string_array(q->loops[0], PS_PATH_MAX, PS_TEARDOWN_MAX_LOOPS, q->n_loops,
				     "teardown.loops", why, why_size));
	PS_TRY(ps_check_counted(q->loop_diskseq, sizeof(q->loop_diskseq[0]), PS_TEARDOWN_MAX_LOOPS,
				q->n_loops, "teardown.loop_diskseq", why, why_size));
	CHECK_STRING(q->tap, "teardown.tap");
	CHECK_ZERO(q->reserved, "teardown.reserved");
	if (q->tap_ifindex > INT32_MAX || (q->tap_ifindex && q->tap[0] == '\0'))
		return ps_violation(why, why_size, "teardown.tap_ifindex: %u %s", q->tap_ifindex,
				    q->tap[0] ? "is not an ifindex" : "without a tap");
	return 0;
}
