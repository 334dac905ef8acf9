/*
 * The helper's request table and the small handlers that need no kernel
 * work. Sizes, fd allowances and field checks of every message type are in
 * the codec's own table (proto/privsep.c), which has rejected anything
 * malformed before a handler here runs; this table adds what only the
 * helper knows: which handler answers a type and whether it may come
 * before HELLO. A request type with no entry here is a violation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"
#include "log.h"

struct asroot_entry {
	uint16_t type;
	const char *op;
	bool before_hello; /* may arrive before the handshake */
	asroot_handler handler;
};

static const struct asroot_entry asroot_table[] = {
    {PS_HELLO, "hello", true, asroot_hello},
    {PS_PROBE, "probe", false, asroot_probe},
    {PS_SCAN, "scan", false, asroot_scan},
    {PS_TEARDOWN, "teardown", false, asroot_teardown},
};

int asroot_hello(struct helper *h, struct ps_message *m, char *why, size_t why_size)
{
	const struct ps_hello *q = &m->payload.hello;
	struct ps_hello_reply rep;
	struct audit_record a;

	if (h->hello_done) {
		snprintf(why, why_size, "second hello");
		return -EBADMSG;
	}
	audit_start(&a, m->header.request_id, &q->caller, "hello");
	strbuf_appendf(&a.args, "protocol_version=%u", q->protocol_version);
	memset(&rep, 0, sizeof(rep));
	rep.protocol_version = PS_PROTOCOL_VERSION;
	rep.helper_pid = (int32_t)getpid();
	rep.helper_uid = (uint32_t)geteuid();
	rep.flags = h->privileged ? PS_HELLO_PRIVILEGED : 0;
	rep.policy = h->policy;
	if (q->protocol_version != PS_PROTOCOL_VERSION) {
		audit_finish(h, &a, "refused", "protocol-version", -EPROTONOSUPPORT);
		snprintf(why, why_size, "hello for protocol version %u, helper speaks %d",
			 q->protocol_version, PS_PROTOCOL_VERSION);
		/* Answer first so the daemon can say what went wrong, then exit. */
		ps_send(h->sock, PS_HELLO_REPLY, m->header.request_id, &rep, sizeof(rep), NULL, 0);
		return -EBADMSG;
	}
	h->hello_done = true;
	audit_finish(h, &a, "ok", NULL, 0);
	return ps_send(h->sock, PS_HELLO_REPLY, m->header.request_id, &rep, sizeof(rep), NULL, 0);
}

int helper_dispatch(struct helper *h, struct ps_message *m, char *why, size_t why_size)
{
	const struct asroot_entry *e = NULL;
	for (size_t i = 0; i < ELEMENTSOF(asroot_table); i++)
		if (asroot_table[i].type == m->header.type)
			e = &asroot_table[i];
	if (!e) {
		snprintf(why, why_size, "no handler for message type %u", m->header.type);
		return -EBADMSG;
	}
	if (!h->hello_done && !e->before_hello) {
		snprintf(why, why_size, "%s before hello", e->op);
		return -EBADMSG;
	}
	/* A multi-part scan is one request: nothing may come between its parts. */
	if (h->scan.active && m->header.type != PS_SCAN) {
		snprintf(why, why_size, "%s in the middle of a multi-part scan", e->op);
		return -EBADMSG;
	}
	return e->handler(h, m, why, why_size);
}
