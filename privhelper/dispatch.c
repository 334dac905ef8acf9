/*
 * The helper's one table of requests, after OpenSSH's mon_table: per type
 * the payload it must carry (size, fds allowed, field checks), when it is
 * permitted, its reply and its handler. A type with no row is a violation.
 *
 * The dispatcher owns the envelope: it reads and decodes the datagram,
 * checks the permit, lets the handler fill in the reply, writes the one
 * audit line and sends the one reply, so that every request is audited and
 * answered exactly once by construction. After each request it recomputes
 * what may come next: before HELLO only HELLO; HELLO only once; inside a
 * multi-part request only its next part. Handlers are policy and action.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"
#include "log.h"
#include "message_id.h"

enum {
	PERMIT_BEFORE_HELLO = 1 << 0, /* the handshake: the only thing before it is answered */
	PERMIT_AFTER_HELLO = 1 << 1,
	PERMIT_ONCE = 1 << 2,
	PERMIT_MULTIPART = 1 << 3, /* may leave the exchange open for its next part */
};

struct asroot_entry {
	struct ps_spec request;
	unsigned permit;
	size_t reply_size; /* of its reply, type PS_REPLY_TO(request.type); send() streams SCAN's */
	asroot_handler handler;
	int (*send)(struct helper *h, struct asroot_call *c);
	const char *message_id; /* of its audit entry in the journal (message_id.h) */
};

/* A row for request struct ps_NAME, checked by ps_validate_NAME, answered with ps_NAME_reply. */
#define ROW(type, name, max_fds, permit, handler, send, message_id)                                \
	{                                                                                          \
		{type, #name, sizeof(struct ps_##name), max_fds, ps_validate_##name}, permit,      \
		    sizeof(struct ps_##name##_reply), handler, send, message_id                    \
	}

static const struct asroot_entry asroot_table[] = {
    ROW(PS_HELLO, hello, 0, PERMIT_BEFORE_HELLO | PERMIT_ONCE, asroot_hello, NULL,
	BANGER_MID_HELPER_HELLO),
    ROW(PS_PROBE, probe, 1, PERMIT_AFTER_HELLO, asroot_probe, NULL, BANGER_MID_HELPER_PROBE),
    ROW(PS_SCAN, scan, 0, PERMIT_AFTER_HELLO | PERMIT_MULTIPART, asroot_scan, asroot_scan_send,
	BANGER_MID_HELPER_SCAN),
    ROW(PS_TEARDOWN, teardown, 0, PERMIT_AFTER_HELLO, asroot_teardown, NULL,
	BANGER_MID_HELPER_TEARDOWN),
};

#define TYPE_BIT(type) (1u << (type))
static_assert(PS_TEARDOWN_REPLY < 32, "a permit mask holds every type");

static const struct asroot_entry *entry_for(uint16_t type)
{
	for (size_t i = 0; i < ELEMENTSOF(asroot_table); i++)
		if (asroot_table[i].request.type == type)
			return &asroot_table[i];
	return NULL;
}

const char *asroot_op_name(uint16_t type)
{
	const struct asroot_entry *e = entry_for(type);
	return e ? e->request.name : "unknown";
}

/* The types whose rows carry flag, but for those in except. */
static uint32_t permits_where(unsigned flag, uint32_t except)
{
	uint32_t mask = 0;
	for (size_t i = 0; i < ELEMENTSOF(asroot_table); i++)
		if (asroot_table[i].permit & flag)
			mask |= TYPE_BIT(asroot_table[i].request.type);
	return mask & ~except;
}

void helper_init(struct helper *h)
{
	memset(h, 0, sizeof(*h));
	h->sock = HELPER_SOCKET_FD;
	h->audit_fd = -1;
	h->permitted = permits_where(PERMIT_BEFORE_HELLO, 0);
}

int asroot_decode(const void *buf, size_t len, size_t nfds, struct ps_message *msg, char *why,
		  size_t why_size)
{
	struct ps_header hdr;
	int r = ps_decode_header(buf, len, nfds, &hdr, why, why_size);
	if (r < 0)
		return r;
	const struct asroot_entry *e = entry_for(hdr.type);
	if (e)
		return ps_decode_payload(&e->request, buf, len, nfds, msg, why, why_size);
	e = entry_for(hdr.type - 1); /* the request a reply of this type would answer */
	if (e)
		return ps_violation(why, why_size,
				    "message type %u (the %s reply) sent in the wrong direction",
				    hdr.type, e->request.name);
	return ps_violation(why, why_size, "unknown message type %u", hdr.type);
}

int asroot_recv(int sock, struct ps_message *msg, char *why, size_t why_size)
{
	/* One byte more than the largest request, so that an oversize one shows as MSG_TRUNC. */
	unsigned char buf[PS_MAX_REQUEST_BYTES + 1];
	return ps_recv_decoded(sock, buf, sizeof(buf), 1, false, asroot_decode, msg, why, why_size);
}

/* Why a request that is not permitted now came at the wrong time. */
static int not_permitted(const struct helper *h, const struct asroot_entry *e, char *why,
			 size_t why_size)
{
	if (h->open)
		return ps_violation(why, why_size, "%s in the middle of a multi-part %s",
				    e->request.name, h->open->request.name);
	if (h->answered_once & TYPE_BIT(e->request.type))
		return ps_violation(why, why_size, "second %s", e->request.name);
	return ps_violation(why, why_size, "%s before hello", e->request.name);
}

/* After a whole request: every answer but a refused HELLO means the handshake is done. */
static void permits_after(struct helper *h, const struct asroot_entry *e)
{
	if (e->permit & PERMIT_ONCE)
		h->answered_once |= TYPE_BIT(e->request.type);
	h->open = NULL;
	h->permitted = permits_where(PERMIT_AFTER_HELLO, h->answered_once);
}

int helper_dispatch(struct helper *h, struct ps_message *m, char *why, size_t why_size)
{
	const struct asroot_entry *e = entry_for(m->header.type);
	if (!e) /* asroot_decode() lets no such message through */
		return ps_violation(why, why_size, "no handler for type %u", m->header.type);
	if (!(h->permitted & TYPE_BIT(e->request.type)))
		return not_permitted(h, e, why, why_size);

	struct asroot_call c = {.m = m, .result = "ok", .why = why, .why_size = why_size};
	c.started_us = audit_clock_us();
	strbuf_init(&c.args);
	int r = e->handler(h, &c);
	if (r == 0 && c.more && (e->permit & PERMIT_MULTIPART)) {
		h->open = e;
		h->permitted = TYPE_BIT(e->request.type);
		return 0;
	}
	if (r == 0) {
		permits_after(h, e);
		audit_request(h, e->request.name, e->message_id, &c);
		r = e->send ? e->send(h, &c)
			    : ps_send(h->sock, PS_REPLY_TO(e->request.type), m->header.request_id,
				      &c.reply, e->reply_size, c.fds, c.nfds);
	}
	fdpass_close_all(c.fds, &c.nfds);
	return r == 0 && c.fatal ? -EBADMSG : r;
}

/* The handshake: our protocol version, pid, uid and the policy we hold, for bangerd to check. */
int asroot_hello(struct helper *h, struct asroot_call *c)
{
	const struct ps_hello *q = &c->m->payload.hello;
	struct ps_hello_reply *rep = &c->reply.hello;

	strbuf_appendf(&c->args, "protocol_version=%u", q->protocol_version);
	rep->protocol_version = PS_PROTOCOL_VERSION;
	rep->helper_pid = (int32_t)getpid();
	rep->helper_uid = (uint32_t)geteuid();
	rep->flags = h->privileged ? PS_HELLO_PRIVILEGED : 0;
	rep->policy = h->policy;
	if (q->protocol_version != PS_PROTOCOL_VERSION) {
		/* Answered, so that bangerd can say what went wrong; then we exit. */
		c->result = "refused", c->reason = "protocol-version", c->err = -EPROTONOSUPPORT;
		c->fatal = true;
		snprintf(c->why, c->why_size, "hello for protocol version %u, helper speaks %d",
			 q->protocol_version, PS_PROTOCOL_VERSION);
	}
	return 0;
}
