/*
 * bangerd's half of the codec: what a reply from the helper must look like,
 * and reading one off the socket. The helper is the privileged side, but a
 * reply that breaks the layout still means it is broken, and bangerd drops
 * it rather than act on it. The names of every type and resource kind are
 * here too: only bangerd (and the tests) print them.
 */
#include <errno.h>
#include <string.h>

#include "path.h"
#include "privsep.h"
#include "privsep_check.h"

static int check_policy(const struct ps_policy *p, char *why, size_t why_size)
{
	CHECK_STRING(p->tap_prefix, "policy.tap_prefix");
	CHECK_STRING(p->dm_prefix, "policy.dm_prefix");
	CHECK_STRING(p->dm_uuid_prefix, "policy.dm_uuid_prefix");
	CHECK_ZERO(p->reserved, "policy.reserved");
	CHECK_ZERO(p->reserved2, "policy.reserved2");
	PS_TRY(ps_check_string_array(p->loop_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS,
				     p->n_loop_roots, "policy.loop_roots", why, why_size));
	PS_TRY(ps_check_string_array(p->api_sock_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS,
				     p->n_api_sock_roots, "policy.api_sock_roots", why, why_size));
	return ps_check_string_array(p->firecracker_names[0], PS_EXE_NAME_MAX, PS_POLICY_MAX_NAMES,
				     p->n_firecracker_names, "policy.firecracker_names", why,
				     why_size);
}

static int validate_hello_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	(void)nfds;
	if (p->hello_reply.flags & ~PS_HELLO_PRIVILEGED)
		return ps_violation(why, why_size, "hello_reply.flags: unknown bits 0x%x",
				    p->hello_reply.flags);
	return check_policy(&p->hello_reply.policy, why, why_size);
}

static int validate_probe_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_probe_reply *q = &p->probe_reply;
	if (q->status < PS_PROBE_RUNNING || q->status > PS_PROBE_FAILED)
		return ps_violation(why, why_size, "probe_reply.status: %d unknown", q->status);
	if (q->reason < 0 || q->reason >= PS_REASON_MAX_)
		return ps_violation(why, why_size, "probe_reply.reason: %d unknown", q->reason);
	if ((q->status == PS_PROBE_RUNNING) != (nfds == 1))
		return ps_violation(why, why_size, "probe_reply: %zu fds with status %d", nfds,
				    q->status);
	if (q->err > 0)
		return ps_violation(why, why_size, "probe_reply.err: %d is not a negative errno",
				    q->err);
	return 0;
}

static int validate_scan_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_scan_reply *q = &p->scan_reply;
	size_t with_fd = 0;
	if (q->flags & ~(PS_SCAN_LAST | PS_SCAN_CUT_SHORT))
		return ps_violation(why, why_size, "scan_reply.flags: unknown bits 0x%x", q->flags);
	if ((q->flags & PS_SCAN_CUT_SHORT) && (!(q->flags & PS_SCAN_LAST) || q->uninspected == 0))
		return ps_violation(why, why_size,
				    "scan_reply.flags: cut short, but not the last part or with "
				    "nothing uninspected");
	CHECK_ZERO(q->reserved, "scan_reply.reserved");
	if (q->err > 0)
		return ps_violation(why, why_size, "scan_reply.err: %d is not a negative errno",
				    q->err);
	PS_TRY(ps_check_counted(q->entries, sizeof(q->entries[0]), PS_SCAN_REPLY_MAX, q->count,
				"scan_reply.entries", why, why_size));
	for (size_t i = 0; i < q->count; i++) {
		const struct ps_scan_entry *e = &q->entries[i];
		if (e->kind < PS_SCAN_MATCH || e->kind > PS_SCAN_UNKNOWN)
			return ps_violation(why, why_size,
					    "scan_reply.entries[%zu].kind: %u unknown", i, e->kind);
		if (e->has_pidfd != (e->kind == PS_SCAN_MATCH))
			return ps_violation(why, why_size,
					    "scan_reply.entries[%zu].has_pidfd: %u not allowed", i,
					    e->has_pidfd);
		if (e->index >= PS_SCAN_MAX_SOCKETS || (e->kind == PS_SCAN_ORPHAN && e->index))
			return ps_violation(why, why_size,
					    "scan_reply.entries[%zu].index: %u not allowed", i,
					    e->index);
		if ((e->kind == PS_SCAN_UNKNOWN) != (e->pid == 0) || e->pid < 0)
			return ps_violation(why, why_size, "scan_reply.entries[%zu].pid: %d", i,
					    e->pid);
		if ((e->kind == PS_SCAN_UNKNOWN) != (e->err < 0) || e->err > 0)
			return ps_violation(why, why_size, "scan_reply.entries[%zu].err: %d", i,
					    e->err);
		CHECK_STRING(e->api_sock, "scan_reply.entries[].api_sock");
		with_fd += e->has_pidfd;
	}
	if (with_fd != nfds)
		return ps_violation(why, why_size,
				    "scan_reply: %zu entries with a pidfd but %zu fds", with_fd,
				    nfds);
	return 0;
}

static int validate_teardown_reply(const union ps_payload *p, size_t nfds, char *why,
				   size_t why_size)
{
	const struct ps_teardown_reply *q = &p->teardown_reply;
	(void)nfds;
	if (q->err > 0)
		return ps_violation(why, why_size, "teardown_reply.err: %d is not a negative errno",
				    q->err);
	PS_TRY(ps_check_counted(q->results, sizeof(q->results[0]), PS_TEARDOWN_MAX_RESULTS,
				q->count, "teardown_reply.results", why, why_size));
	for (size_t i = 0; i < q->count; i++) {
		const struct ps_teardown_result *t = &q->results[i];
		if (t->kind < PS_RESOURCE_DM || t->kind > PS_RESOURCE_TAP)
			return ps_violation(why, why_size, "teardown_reply.results[%zu].kind: %u",
					    i, t->kind);
		if (t->status < PS_TEARDOWN_REMOVED || t->status > PS_TEARDOWN_FAILED)
			return ps_violation(why, why_size, "teardown_reply.results[%zu].status: %u",
					    i, t->status);
		if (t->reason < 0 || t->reason >= PS_REASON_MAX_ || t->err > 0)
			return ps_violation(why, why_size,
					    "teardown_reply.results[%zu]: bad reason or errno", i);
		if (t->kind != PS_RESOURCE_LOOP && (t->diskseq || t->diskseq_found))
			return ps_violation(why, why_size,
					    "teardown_reply.results[%zu]: a diskseq on a %s", i,
					    ps_resource_kind_name((int)t->kind));
		if (t->kind != PS_RESOURCE_TAP && (t->ifindex || t->ifindex_found))
			return ps_violation(why, why_size,
					    "teardown_reply.results[%zu]: an ifindex on a %s", i,
					    ps_resource_kind_name((int)t->kind));
		if (t->ifindex > INT32_MAX || t->ifindex_found > INT32_MAX)
			return ps_violation(
			    why, why_size,
			    "teardown_reply.results[%zu]: an ifindex above INT32_MAX", i);
		CHECK_STRING(t->name, "teardown_reply.results[].name");
	}
	return 0;
}

/* The replies bangerd accepts, and how each looks. */
static const struct ps_spec ps_replies[] = {
    {PS_HELLO_REPLY, "hello_reply", sizeof(struct ps_hello_reply), 0, validate_hello_reply},
    {PS_PROBE_REPLY, "probe_reply", sizeof(struct ps_probe_reply), 1, validate_probe_reply},
    {PS_SCAN_REPLY, "scan_reply", sizeof(struct ps_scan_reply), PS_SCAN_REPLY_MAX,
     validate_scan_reply},
    {PS_TEARDOWN_REPLY, "teardown_reply", sizeof(struct ps_teardown_reply), 0,
     validate_teardown_reply},
};

const char *ps_type_name(uint16_t type)
{
	static const char *const requests[] = {[PS_HELLO] = "hello",
					       [PS_PROBE] = "probe",
					       [PS_SCAN] = "scan",
					       [PS_TEARDOWN] = "teardown"};
	for (size_t i = 0; i < ELEMENTSOF(ps_replies); i++)
		if (ps_replies[i].type == type)
			return ps_replies[i].name;
	return type < ELEMENTSOF(requests) && requests[type] ? requests[type] : "unknown";
}

const char *ps_resource_kind_name(int kind)
{
	static const char *const names[] = {
	    [PS_RESOURCE_DM] = "dm", [PS_RESOURCE_LOOP] = "loop", [PS_RESOURCE_TAP] = "tap"};
	return kind > 0 && (size_t)kind < ELEMENTSOF(names) ? names[kind] : "unknown";
}

int ps_decode_reply(const void *buf, size_t len, size_t nfds_received, struct ps_message *msg,
		    char *why, size_t why_size)
{
	struct ps_header h;
	PS_TRY(ps_decode_header(buf, len, nfds_received, &h, why, why_size));
	for (size_t i = 0; i < ELEMENTSOF(ps_replies); i++)
		if (ps_replies[i].type == h.type)
			return ps_decode_payload(&ps_replies[i], buf, len, nfds_received, msg, why,
						 why_size);
	if (strcmp(ps_type_name(h.type), "unknown") != 0)
		return ps_violation(why, why_size, "message type %s sent in the wrong direction",
				    ps_type_name(h.type));
	return ps_violation(why, why_size, "unknown message type %u", h.type);
}

int ps_recv_reply(int sock, bool nonblock, struct ps_message *msg, char *why, size_t why_size)
{
	/* One byte more than the largest message, so that an oversize one shows as MSG_TRUNC. */
	static _Thread_local unsigned char buf[PS_MAX_MESSAGE_BYTES + 1];
	return ps_recv_decoded(sock, buf, sizeof(buf), PS_SCAN_REPLY_MAX, nonblock, ps_decode_reply,
			       msg, why, why_size);
}
