/*
 * The privsep codec, shared by bangerd and banger-privhelper. ps_decode() is
 * the only place where bytes from the other side become a struct, and it is
 * pure so that the fuzzer can drive it without sockets. It never trusts a
 * length, count or string it has not checked.
 */
#include "privsep.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "macro.h"
#include "path.h"

/* Every byte of a payload is a named field: no compiler padding can carry stale memory. */
static_assert(sizeof(struct ps_caller) == 48, "ps_caller layout");
static_assert(sizeof(struct ps_policy) == 280 + 16 + 2 * PS_POLICY_MAX_ROOTS * PS_PATH_MAX +
					      PS_POLICY_MAX_NAMES * PS_EXE_NAME_MAX,
	      "ps_policy layout");
static_assert(sizeof(struct ps_probe) == 176, "ps_probe layout");
static_assert(sizeof(struct ps_probe_reply) == 24, "ps_probe_reply layout");
static_assert(sizeof(struct ps_scan) == 64 + PS_SCAN_PART_MAX * PS_SOCK_PATH_MAX, "ps_scan layout");
static_assert(sizeof(struct ps_scan_entry) == 136, "ps_scan_entry layout");
static_assert(sizeof(struct ps_scan_reply) == 24 + PS_SCAN_REPLY_MAX * 136, "ps_scan_reply layout");
static_assert(sizeof(struct ps_teardown) == 56 + PS_TEARDOWN_MAX_DM * PS_DM_NAME_MAX +
						PS_TEARDOWN_MAX_LOOPS * PS_PATH_MAX + PS_IFNAME_MAX,
	      "ps_teardown layout");
static_assert(sizeof(struct ps_teardown_result) == 16 + PS_PATH_MAX, "ps_teardown_result layout");

typedef int (*ps_validator)(const union ps_payload *p, size_t nfds, char *why, size_t why_size);

struct ps_type_spec {
	uint16_t type;
	const char *name;
	enum ps_direction dir;
	size_t payload_size;
	size_t max_fds;
	ps_validator validate;
};

_printf_(3, 4) static int violation(char *why, size_t why_size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_size, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

#define CHECK_STRING(field, label)                                                                 \
	do {                                                                                       \
		if (!field_is_clean_string((field), sizeof(field)))                                \
			return violation(why, why_size, "%s: unterminated string or embedded NUL", \
					 (label));                                                 \
	} while (0)

#define CHECK_ZERO(field, label)                                                                   \
	do {                                                                                       \
		if (!bytes_are_zero(&(field), sizeof(field)))                                      \
			return violation(why, why_size, "%s: reserved bytes are not zero",         \
					 (label));                                                 \
	} while (0)

/* A counted array of string fields: entries below count non-empty and clean, the rest all zero. */
static int check_string_array(const char *base, size_t entry_size, size_t capacity, uint32_t count,
			      const char *label, char *why, size_t why_size)
{
	if (count > capacity)
		return violation(why, why_size, "%s: count %u over the maximum %zu", label, count,
				 capacity);
	for (size_t i = 0; i < capacity; i++) {
		const char *entry = base + i * entry_size;
		if (i >= count) {
			if (!bytes_are_zero(entry, entry_size))
				return violation(why, why_size, "%s[%zu]: unused entry is not zero",
						 label, i);
			continue;
		}
		if (!field_is_clean_string(entry, entry_size))
			return violation(why, why_size,
					 "%s[%zu]: unterminated string or embedded NUL", label, i);
		if (entry[0] == '\0')
			return violation(why, why_size, "%s[%zu]: empty string", label, i);
	}
	return 0;
}

static int check_caller(const struct ps_caller *c, char *why, size_t why_size)
{
	CHECK_ZERO(c->reserved, "caller.reserved");
	CHECK_STRING(c->what, "caller.what");
	for (const char *s = c->what; *s; s++)
		if (*s <= ' ' || *s > '~')
			return violation(why, why_size, "caller.what: byte 0x%02x is not printable",
					 (unsigned char)*s);
	return 0;
}

static int check_policy(const struct ps_policy *p, char *why, size_t why_size)
{
	int r;
	CHECK_STRING(p->tap_prefix, "policy.tap_prefix");
	CHECK_STRING(p->dm_prefix, "policy.dm_prefix");
	CHECK_STRING(p->dm_uuid_prefix, "policy.dm_uuid_prefix");
	CHECK_ZERO(p->reserved, "policy.reserved");
	CHECK_ZERO(p->reserved2, "policy.reserved2");
	r = check_string_array(p->loop_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS, p->n_loop_roots,
			       "policy.loop_roots", why, why_size);
	if (r < 0)
		return r;
	r = check_string_array(p->api_sock_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS,
			       p->n_api_sock_roots, "policy.api_sock_roots", why, why_size);
	if (r < 0)
		return r;
	return check_string_array(p->firecracker_names[0], PS_EXE_NAME_MAX, PS_POLICY_MAX_NAMES,
				  p->n_firecracker_names, "policy.firecracker_names", why,
				  why_size);
}

static int validate_hello(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	(void)nfds;
	CHECK_ZERO(p->hello.reserved, "hello.reserved");
	return check_caller(&p->hello.caller, why, why_size);
}

static int validate_hello_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	(void)nfds;
	if (p->hello_reply.flags & ~PS_HELLO_PRIVILEGED)
		return violation(why, why_size, "hello_reply.flags: unknown bits 0x%x",
				 p->hello_reply.flags);
	return check_policy(&p->hello_reply.policy, why, why_size);
}

static int validate_probe(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_probe *q = &p->probe;
	int r = check_caller(&q->caller, why, why_size);
	if (r < 0)
		return r;
	if (q->flags & ~PS_PROBE_HAS_PIDFD)
		return violation(why, why_size, "probe.flags: unknown bits 0x%x", q->flags);
	if (((q->flags & PS_PROBE_HAS_PIDFD) != 0) != (nfds == 1))
		return violation(why, why_size, "probe: pidfd flag does not match %zu attached fds",
				 nfds);
	if (!(q->flags & PS_PROBE_HAS_PIDFD) && q->pid <= 0)
		return violation(why, why_size, "probe.pid: %d is not a process id", q->pid);
	CHECK_STRING(q->api_sock, "probe.api_sock");
	CHECK_ZERO(q->reserved, "probe.reserved");
	if (q->api_sock[0] == '\0')
		return violation(why, why_size, "probe.api_sock: empty");
	return 0;
}

static int validate_probe_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_probe_reply *q = &p->probe_reply;
	if (q->status < PS_PROBE_RUNNING || q->status > PS_PROBE_FAILED)
		return violation(why, why_size, "probe_reply.status: %d unknown", q->status);
	if (q->reason < 0 || q->reason >= PS_REASON_MAX_)
		return violation(why, why_size, "probe_reply.reason: %d unknown", q->reason);
	if ((q->status == PS_PROBE_RUNNING) != (nfds == 1))
		return violation(why, why_size, "probe_reply: %zu fds with status %d", nfds,
				 q->status);
	if (q->err > 0)
		return violation(why, why_size, "probe_reply.err: %d is not a negative errno",
				 q->err);
	return 0;
}

static int validate_scan(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_scan *q = &p->scan;
	(void)nfds;
	int r = check_caller(&q->caller, why, why_size);
	if (r < 0)
		return r;
	CHECK_ZERO(q->reserved, "scan.reserved");
	if (q->nparts == 0 || q->nparts > PS_SCAN_MAX_PARTS)
		return violation(why, why_size, "scan.nparts: %u not in 1..%d", q->nparts,
				 PS_SCAN_MAX_PARTS);
	if (q->part >= q->nparts)
		return violation(why, why_size, "scan.part: %u not below nparts %u", q->part,
				 q->nparts);
	return check_string_array(q->sockets[0], PS_SOCK_PATH_MAX, PS_SCAN_PART_MAX, q->count,
				  "scan.sockets", why, why_size);
}

static int validate_scan_reply(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_scan_reply *q = &p->scan_reply;
	size_t with_fd = 0;
	if (q->flags & ~PS_SCAN_LAST)
		return violation(why, why_size, "scan_reply.flags: unknown bits 0x%x", q->flags);
	CHECK_ZERO(q->reserved, "scan_reply.reserved");
	if (q->count > PS_SCAN_REPLY_MAX)
		return violation(why, why_size, "scan_reply.count: %u over the maximum %d",
				 q->count, PS_SCAN_REPLY_MAX);
	if (q->err > 0)
		return violation(why, why_size, "scan_reply.err: %d is not a negative errno",
				 q->err);
	for (size_t i = 0; i < PS_SCAN_REPLY_MAX; i++) {
		const struct ps_scan_entry *e = &q->entries[i];
		if (i >= q->count) {
			if (!bytes_are_zero(e, sizeof(*e)))
				return violation(
				    why, why_size,
				    "scan_reply.entries[%zu]: unused entry is not zero", i);
			continue;
		}
		if (e->kind < PS_SCAN_MATCH || e->kind > PS_SCAN_UNKNOWN)
			return violation(why, why_size, "scan_reply.entries[%zu].kind: %u unknown",
					 i, e->kind);
		if (e->has_pidfd != (e->kind == PS_SCAN_MATCH))
			return violation(why, why_size,
					 "scan_reply.entries[%zu].has_pidfd: %u not allowed", i,
					 e->has_pidfd);
		if (e->index >= PS_SCAN_MAX_SOCKETS || (e->kind == PS_SCAN_ORPHAN && e->index))
			return violation(why, why_size,
					 "scan_reply.entries[%zu].index: %u not allowed", i,
					 e->index);
		if ((e->kind == PS_SCAN_UNKNOWN) != (e->pid == 0) || e->pid < 0)
			return violation(why, why_size, "scan_reply.entries[%zu].pid: %d", i,
					 e->pid);
		if ((e->kind == PS_SCAN_UNKNOWN) != (e->err < 0) || e->err > 0)
			return violation(why, why_size, "scan_reply.entries[%zu].err: %d", i,
					 e->err);
		CHECK_STRING(e->api_sock, "scan_reply.entries[].api_sock");
		with_fd += e->has_pidfd;
	}
	if (with_fd != nfds)
		return violation(why, why_size, "scan_reply: %zu entries with a pidfd but %zu fds",
				 with_fd, nfds);
	return 0;
}

static int validate_teardown(const union ps_payload *p, size_t nfds, char *why, size_t why_size)
{
	const struct ps_teardown *q = &p->teardown;
	(void)nfds;
	int r = check_caller(&q->caller, why, why_size);
	if (r < 0)
		return r;
	r = check_string_array(q->dm[0], PS_DM_NAME_MAX, PS_TEARDOWN_MAX_DM, q->n_dm, "teardown.dm",
			       why, why_size);
	if (r < 0)
		return r;
	r = check_string_array(q->loops[0], PS_PATH_MAX, PS_TEARDOWN_MAX_LOOPS, q->n_loops,
			       "teardown.loops", why, why_size);
	if (r < 0)
		return r;
	CHECK_STRING(q->tap, "teardown.tap");
	return 0;
}

static int validate_teardown_reply(const union ps_payload *p, size_t nfds, char *why,
				   size_t why_size)
{
	const struct ps_teardown_reply *q = &p->teardown_reply;
	(void)nfds;
	if (q->err > 0)
		return violation(why, why_size, "teardown_reply.err: %d is not a negative errno",
				 q->err);
	if (q->count > PS_TEARDOWN_MAX_RESULTS)
		return violation(why, why_size, "teardown_reply.count: %u over the maximum %d",
				 q->count, PS_TEARDOWN_MAX_RESULTS);
	for (size_t i = 0; i < PS_TEARDOWN_MAX_RESULTS; i++) {
		const struct ps_teardown_result *t = &q->results[i];
		if (i >= q->count) {
			if (!bytes_are_zero(t, sizeof(*t)))
				return violation(
				    why, why_size,
				    "teardown_reply.results[%zu]: unused entry is not zero", i);
			continue;
		}
		if (t->kind < PS_RESOURCE_DM || t->kind > PS_RESOURCE_TAP)
			return violation(why, why_size, "teardown_reply.results[%zu].kind: %u", i,
					 t->kind);
		if (t->status < PS_TEARDOWN_REMOVED || t->status > PS_TEARDOWN_FAILED)
			return violation(why, why_size, "teardown_reply.results[%zu].status: %u", i,
					 t->status);
		if (t->reason < 0 || t->reason >= PS_REASON_MAX_ || t->err > 0)
			return violation(why, why_size,
					 "teardown_reply.results[%zu]: bad reason or errno", i);
		CHECK_STRING(t->name, "teardown_reply.results[].name");
	}
	return 0;
}

static const struct ps_type_spec ps_types[] = {
    {PS_HELLO, "hello", PS_TO_HELPER, sizeof(struct ps_hello), 0, validate_hello},
    {PS_HELLO_REPLY, "hello_reply", PS_TO_DAEMON, sizeof(struct ps_hello_reply), 0,
     validate_hello_reply},
    {PS_PROBE, "probe", PS_TO_HELPER, sizeof(struct ps_probe), 1, validate_probe},
    {PS_PROBE_REPLY, "probe_reply", PS_TO_DAEMON, sizeof(struct ps_probe_reply), 1,
     validate_probe_reply},
    {PS_SCAN, "scan", PS_TO_HELPER, sizeof(struct ps_scan), 0, validate_scan},
    {PS_SCAN_REPLY, "scan_reply", PS_TO_DAEMON, sizeof(struct ps_scan_reply), PS_SCAN_REPLY_MAX,
     validate_scan_reply},
    {PS_TEARDOWN, "teardown", PS_TO_HELPER, sizeof(struct ps_teardown), 0, validate_teardown},
    {PS_TEARDOWN_REPLY, "teardown_reply", PS_TO_DAEMON, sizeof(struct ps_teardown_reply), 0,
     validate_teardown_reply},
};

static const struct ps_type_spec *ps_type_lookup(uint16_t type)
{
	for (size_t i = 0; i < ELEMENTSOF(ps_types); i++)
		if (ps_types[i].type == type)
			return &ps_types[i];
	return NULL;
}

const char *ps_type_name(uint16_t type)
{
	const struct ps_type_spec *spec = ps_type_lookup(type);
	return spec ? spec->name : "unknown";
}

size_t ps_max_fds(enum ps_direction dir)
{
	size_t max = 0;
	for (size_t i = 0; i < ELEMENTSOF(ps_types); i++)
		if (ps_types[i].dir == dir && ps_types[i].max_fds > max)
			max = ps_types[i].max_fds;
	return max;
}

const char *ps_reason_name(int reason)
{
	static const char *const names[PS_REASON_MAX_] = {
	    [PS_REASON_NONE] = "none",
	    [PS_REASON_NO_PROCESS] = "no-such-process",
	    [PS_REASON_NOT_FIRECRACKER] = "not-firecracker",
	    [PS_REASON_API_SOCK_MISMATCH] = "api-sock-mismatch",
	    [PS_REASON_START_TIME_MISMATCH] = "start-time-mismatch",
	    [PS_REASON_OUTSIDE_ROOTS] = "outside-roots",
	    [PS_REASON_EXITED_DURING_PROBE] = "exited-during-probe",
	    [PS_REASON_PIDFD_INVALID] = "pidfd-invalid",
	    [PS_REASON_NOT_IMPLEMENTED] = "not-implemented",
	    [PS_REASON_MISSING_PREFIX] = "missing-prefix",
	    [PS_REASON_MISSING_UUID_PREFIX] = "missing-uuid-prefix",
	    [PS_REASON_WRONG_LINK_KIND] = "wrong-link-kind",
	    [PS_REASON_BAD_NAME] = "bad-name",
	    [PS_REASON_DEPENDENCY_BUSY] = "dependency-busy",
	    [PS_REASON_BACKING_CHANGED] = "backing-changed",
	    [PS_REASON_NO_LISTENER] = "no-listener",
	};
	if (reason < 0 || reason >= PS_REASON_MAX_ || !names[reason])
		return "unknown";
	return names[reason];
}

const char *ps_probe_status_name(int status)
{
	switch (status) {
	case PS_PROBE_RUNNING:
		return "running";
	case PS_PROBE_NOT_RUNNING:
		return "not-running";
	case PS_PROBE_REFUSED:
		return "refused";
	case PS_PROBE_FAILED:
		return "failed";
	}
	return "unknown";
}

const char *ps_teardown_status_name(int status)
{
	switch (status) {
	case PS_TEARDOWN_REMOVED:
		return "removed";
	case PS_TEARDOWN_ABSENT:
		return "absent";
	case PS_TEARDOWN_REFUSED:
		return "refused";
	case PS_TEARDOWN_BUSY:
		return "busy";
	case PS_TEARDOWN_FAILED:
		return "failed";
	}
	return "unknown";
}

const char *ps_resource_kind_name(int kind)
{
	switch (kind) {
	case PS_RESOURCE_DM:
		return "dm";
	case PS_RESOURCE_LOOP:
		return "loop";
	case PS_RESOURCE_TAP:
		return "tap";
	}
	return "unknown";
}

void ps_message_init(struct ps_message *msg)
{
	memset(&msg->header, 0, sizeof(msg->header));
	msg->nfds = 0;
}

void ps_message_close_fds(struct ps_message *msg)
{
	fdpass_close_all(msg->fds, &msg->nfds);
}

int ps_message_take_fd(struct ps_message *msg, size_t i)
{
	if (i >= msg->nfds)
		return -1;
	return TAKE_FD(msg->fds[i]);
}

int ps_decode(enum ps_direction dir, const void *buf, size_t len, size_t nfds_received,
	      struct ps_message *msg, char *why, size_t why_size)
{
	struct ps_header h;

	if (len < sizeof(h))
		return violation(why, why_size, "short message: %zu bytes, header is %zu", len,
				 sizeof(h));
	memcpy(&h, buf, sizeof(h));
	if (h.magic != PS_MAGIC)
		return violation(why, why_size, "wrong magic 0x%08x", h.magic);
	if (h.version != PS_PROTOCOL_VERSION)
		return violation(why, why_size, "wrong protocol version %u (want %d)", h.version,
				 PS_PROTOCOL_VERSION);
	const struct ps_type_spec *spec = ps_type_lookup(h.type);
	if (!spec)
		return violation(why, why_size, "unknown message type %u", h.type);
	if (spec->dir != dir)
		return violation(why, why_size, "message type %s sent in the wrong direction",
				 spec->name);
	if (h.payload_len != len - sizeof(h))
		return violation(why, why_size,
				 "%s: header says %u payload bytes, datagram has %zu", spec->name,
				 h.payload_len, len - sizeof(h));
	if (h.payload_len != spec->payload_size)
		return violation(why, why_size, "%s: payload is %u bytes, must be %zu", spec->name,
				 h.payload_len, spec->payload_size);
	if (nfds_received > spec->max_fds)
		return violation(why, why_size, "%s: carries %zu fds, at most %zu allowed",
				 spec->name, nfds_received, spec->max_fds);
	if (h.nfds != nfds_received)
		return violation(why, why_size, "%s: header declares %u fds, %zu arrived",
				 spec->name, h.nfds, nfds_received);

	msg->header = h;
	memcpy(&msg->payload, (const char *)buf + sizeof(h), spec->payload_size);
	return spec->validate(&msg->payload, nfds_received, why, why_size);
}

int ps_send(int sock, uint16_t type, uint64_t request_id, const void *payload, size_t payload_len,
	    const int *fds, size_t nfds)
{
	const struct ps_type_spec *spec = ps_type_lookup(type);
	if (!spec || payload_len != spec->payload_size || nfds > spec->max_fds)
		return -EINVAL;
	struct ps_header h = {
	    .magic = PS_MAGIC,
	    .version = PS_PROTOCOL_VERSION,
	    .type = type,
	    .request_id = request_id,
	    .payload_len = (uint32_t)payload_len,
	    .nfds = (uint32_t)nfds,
	};
	struct iovec iov[2] = {
	    {.iov_base = &h, .iov_len = sizeof(h)},
	    {.iov_base = (void *)payload, .iov_len = payload_len},
	};
	return fdpass_send(sock, iov, 2, fds, nfds);
}

int ps_recv(int sock, enum ps_direction dir, bool nonblock, struct ps_message *msg, char *why,
	    size_t why_size)
{
	/* One byte more than the largest message, so that an oversize one shows as MSG_TRUNC. */
	static _Thread_local unsigned char buf[PS_MAX_MESSAGE_BYTES + 1];
	struct fdpass_recv in;

	ps_message_init(msg);
	int r = fdpass_recv(sock, buf, sizeof(buf), ps_max_fds(dir), nonblock, &in);
	if (r <= 0)
		return r;
	if (in.truncated || in.len > PS_MAX_MESSAGE_BYTES)
		r = violation(why, why_size, "oversize message (over %zu bytes)",
			      PS_MAX_MESSAGE_BYTES);
	else if (in.ctruncated)
		r = violation(why, why_size, "more fds than any message may carry (MSG_CTRUNC)");
	else if (in.foreign_cmsg)
		r = violation(why, why_size, "control message other than SCM_RIGHTS");
	else
		r = ps_decode(dir, buf, in.len, in.nfds, msg, why, why_size);
	if (r < 0) {
		fdpass_close_all(in.fds, &in.nfds);
		return r;
	}
	memcpy(msg->fds, in.fds, sizeof(int) * in.nfds);
	msg->nfds = in.nfds;
	return 1;
}
