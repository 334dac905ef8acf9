/*
 * The privsep codec (proto/privsep*.c) and the helper's request table that
 * decodes with it (privhelper/dispatch.c): valid messages of each type pass
 * a real SEQPACKET socketpair intact, and every rule of either decoder
 * rejects what it must, closing every fd that came with a rejected message.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"
#include "path.h"
#include "policy.h"
#include "privsep.h"
#include "testlib.h"

static char why[512];

/* Each direction has its own decoder: the helper's for requests, bangerd's for replies. */
static int decode(enum ps_direction dir, const void *buf, size_t len, size_t nfds,
		  struct ps_message *m)
{
	if (dir == PS_TO_HELPER)
		return asroot_decode(buf, len, nfds, m, why, sizeof(why));
	return ps_decode_reply(buf, len, nfds, m, why, sizeof(why));
}

static void pair(int sv[2])
{
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
}

static void roundtrip_probe_with_fd(void)
{
	int sv[2], p[2];
	struct ps_probe q;
	struct ps_message m;
	pair(sv);
	CHECK(pipe(p) == 0, "pipe");
	memset(&q, 0, sizeof(q));
	strcpy(q.caller.call, "SetHandles");
	q.caller.uid = 1000;
	q.pid = 42;
	q.flags = PS_PROBE_HAS_PIDFD;
	q.start_time = 12345;
	strcpy(q.api_sock, "/run/vms/a.sock");
	CHECK(ps_send(sv[0], PS_PROBE, 7, &q, sizeof(q), &p[0], 1) == 0, "send");
	CHECK(asroot_recv(sv[1], &m, why, sizeof(why)) == 1, "recv: %s", why);
	CHECK(m.header.request_id == 7 && m.header.type == PS_PROBE && m.nfds == 1, "header");
	CHECK(memcmp(&m.payload.probe, &q, sizeof(q)) == 0, "payload intact");
	/* The fd that arrived is the same pipe: what is written comes out of it. */
	int fd = ps_message_take_fd(&m, 0);
	CHECK(write(p[1], "x", 1) == 1, "write");
	char c;
	CHECK(read(fd, &c, 1) == 1 && c == 'x', "received fd is the pipe");
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "received fds are CLOEXEC");
	close(fd);
	ps_message_close_fds(&m);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	close(sv[1]);
}

/* Build a raw HELLO datagram that tests then damage. */
static size_t raw_hello(unsigned char *buf)
{
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	 PS_HELLO,
			      1,	sizeof(struct ps_hello), 0};
	struct ps_hello q;
	memset(&q, 0, sizeof(q));
	q.protocol_version = PS_PROTOCOL_VERSION;
	strcpy(q.caller.call, "startup");
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &q, sizeof(q));
	return sizeof(h) + sizeof(q);
}

static void expect_violation(const void *buf, size_t len, size_t nfds, enum ps_direction dir,
			     const char *needle)
{
	static struct ps_message m;
	int r = decode(dir, buf, len, nfds, &m);
	CHECK(r == -EBADMSG, "decoder accepted a message that breaks '%s'", needle);
	CHECK(strstr(why, needle), "violation text '%s' lacks '%s'", why, needle);
}

static void decoder_rules(void)
{
	static unsigned char buf[PS_MAX_MESSAGE_BYTES + 64];
	struct ps_header *h = (struct ps_header *)buf;
	size_t len;
	static struct ps_message m;

	len = raw_hello(buf);
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "valid hello: %s", why);
	expect_violation(buf, len, 0, PS_TO_DAEMON, "wrong direction");
	expect_violation(buf, 10, 0, PS_TO_HELPER, "short message");
	expect_violation(buf, len, 1, PS_TO_HELPER, "header declares 0 fds, 1 arrived");
	h->nfds = 1;
	expect_violation(buf, len, 1, PS_TO_HELPER, "hello: carries 1 fds, at most 0 allowed");

	len = raw_hello(buf);
	h->magic ^= 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "wrong magic");
	len = raw_hello(buf);
	h->version = 9;
	expect_violation(buf, len, 0, PS_TO_HELPER, "wrong protocol version");
	len = raw_hello(buf);
	h->type = 77;
	expect_violation(buf, len, 0, PS_TO_HELPER, "unknown message type");
	len = raw_hello(buf);
	h->payload_len += 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "header says");
	len = raw_hello(buf);
	h->payload_len += 4;
	expect_violation(buf, len + 4, 0, PS_TO_HELPER, "must be");
	len = raw_hello(buf);
	h->nfds = 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "declares 1 fds");

	/* Strings: unterminated, embedded NUL, unprintable. */
	struct ps_hello *q = (struct ps_hello *)(buf + sizeof(*h));
	len = raw_hello(buf);
	memset(q->caller.call, 'a', sizeof(q->caller.call));
	expect_violation(buf, len, 0, PS_TO_HELPER, "unterminated");
	len = raw_hello(buf);
	q->caller.call[10] = 'z';
	expect_violation(buf, len, 0, PS_TO_HELPER, "embedded NUL");
	len = raw_hello(buf);
	q->caller.call[0] = '\n';
	expect_violation(buf, len, 0, PS_TO_HELPER, "not printable");
	len = raw_hello(buf);
	q->reserved = 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "reserved");

	/* The VM a request is about: empty, or a VM id, nothing else. */
	len = raw_hello(buf);
	field_set(q->caller.vm, sizeof(q->caller.vm), "vm-1.a_b");
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "valid vm id: %s", why);
	field_set(q->caller.vm, sizeof(q->caller.vm), "-vm");
	expect_violation(buf, len, 0, PS_TO_HELPER, "caller.vm: not a VM id");
	field_set(q->caller.vm, sizeof(q->caller.vm), "vm 1");
	expect_violation(buf, len, 0, PS_TO_HELPER, "caller.vm: not a VM id");
	memset(q->caller.vm, 'v', PS_VM_ID_MAX + 1);
	expect_violation(buf, len, 0, PS_TO_HELPER, "caller.vm: 65 bytes");
	len = raw_hello(buf);
	q->caller.vm[PS_VM_ID_MAX + 4] = 'x';
	expect_violation(buf, len, 0, PS_TO_HELPER, "caller.vm: unterminated string or embedded");
	len = raw_hello(buf);
	strcpy(q->caller.call, "Set Handles#1");
	expect_violation(buf, len, 0, PS_TO_HELPER, "caller.call: byte 0x20 is not printable");

	/* bangerd's decoder takes replies only. */
	len = raw_hello(buf);
	expect_violation(buf, len, 0, PS_TO_DAEMON, "hello sent in the wrong direction");
	h->type = PS_PROBE_REPLY;
	expect_violation(buf, len, 0, PS_TO_HELPER,
			 "(the probe reply) sent in the wrong direction");

	/* Counts and unused entries of a scan. */
	struct ps_header sh = {PS_MAGIC, PS_PROTOCOL_VERSION,	 PS_SCAN,
			       2,	 sizeof(struct ps_scan), 0};
	struct ps_scan *s = (struct ps_scan *)(buf + sizeof(sh));
	memcpy(buf, &sh, sizeof(sh));
	memset(s, 0, sizeof(*s));
	s->nparts = 1;
	s->count = 1;
	s->budget_ms = 7500;
	strcpy(s->sockets[0], "/run/a.sock");
	len = sizeof(sh) + sizeof(*s);
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "valid scan: %s", why);
	s->budget_ms = 0;
	expect_violation(buf, len, 0, PS_TO_HELPER, "scan.budget_ms: 0 not in 1..600000");
	s->budget_ms = PS_SCAN_BUDGET_MAX_MS + 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "scan.budget_ms: 600001 not in 1..600000");
	s->budget_ms = PS_SCAN_BUDGET_MAX_MS;
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "the longest budget: %s", why);
	s->count = PS_SCAN_PART_MAX + 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "over the maximum");
	s->count = 1;
	strcpy(s->sockets[5], "/stale");
	expect_violation(buf, len, 0, PS_TO_HELPER, "unused entry is not zero");
	memset(s->sockets[5], 0, PS_SOCK_PATH_MAX);
	memset(s->sockets[0], 0, PS_SOCK_PATH_MAX);
	expect_violation(buf, len, 0, PS_TO_HELPER, "empty string");
	strcpy(s->sockets[0], "/run/a.sock");
	s->part = 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "not below nparts");
	s->part = 0;
	s->nparts = PS_SCAN_MAX_PARTS + 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "nparts");

	/* A probe without a pidfd must name a pid; its flag must match the fds. */
	struct ps_header ph = {PS_MAGIC, PS_PROTOCOL_VERSION,	  PS_PROBE,
			       3,	 sizeof(struct ps_probe), 0};
	struct ps_probe *pr = (struct ps_probe *)(buf + sizeof(ph));
	memcpy(buf, &ph, sizeof(ph));
	memset(pr, 0, sizeof(*pr));
	strcpy(pr->api_sock, "/run/a.sock");
	len = sizeof(ph) + sizeof(*pr);
	expect_violation(buf, len, 0, PS_TO_HELPER, "not a process id");
	pr->pid = 5;
	pr->flags = PS_PROBE_HAS_PIDFD;
	expect_violation(buf, len, 0, PS_TO_HELPER, "pidfd flag");
	pr->flags = 0x80;
	expect_violation(buf, len, 0, PS_TO_HELPER, "unknown bits");

	/* A loop's diskseq: only for the loops named, and only on a loop's result. */
	struct ps_header th = {PS_MAGIC, PS_PROTOCOL_VERSION,	     PS_TEARDOWN,
			       4,	 sizeof(struct ps_teardown), 0};
	struct ps_teardown *td = (struct ps_teardown *)(buf + sizeof(th));
	memcpy(buf, &th, sizeof(th));
	memset(td, 0, sizeof(*td));
	td->n_loops = 1;
	strcpy(td->loops[0], "/dev/loop7");
	td->loop_diskseq[0] = 34207;
	len = sizeof(th) + sizeof(*td);
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "valid teardown: %s", why);
	CHECK(m.payload.teardown.loop_diskseq[0] == 34207, "the diskseq arrives");
	td->loop_diskseq[1] = 34208;
	expect_violation(buf, len, 0, PS_TO_HELPER,
			 "teardown.loop_diskseq[1]: unused entry is not zero");
	td->loop_diskseq[1] = 0;

	/* A tap's ifindex: a positive int, only with a tap; 0 is "not recorded". */
	td->tap_ifindex = 17;
	expect_violation(buf, len, 0, PS_TO_HELPER, "teardown.tap_ifindex: 17 without a tap");
	strcpy(td->tap, "bgt0");
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "teardown with an ifindex: %s", why);
	CHECK(m.payload.teardown.tap_ifindex == 17, "the ifindex arrives");
	td->tap_ifindex = 0;
	CHECK(decode(PS_TO_HELPER, buf, len, 0, &m) == 0, "a tap without an ifindex: %s", why);
	td->tap_ifindex = 0x80000000u;
	expect_violation(buf, len, 0, PS_TO_HELPER, "teardown.tap_ifindex: 2147483648 is not");
	td->tap_ifindex = 17;
	td->reserved = 1;
	expect_violation(buf, len, 0, PS_TO_HELPER, "teardown.reserved");

	struct ps_header rh = {
	    PS_MAGIC, PS_PROTOCOL_VERSION, PS_TEARDOWN_REPLY, 4, sizeof(struct ps_teardown_reply),
	    0};
	struct ps_teardown_reply *tr = (struct ps_teardown_reply *)(buf + sizeof(rh));
	memcpy(buf, &rh, sizeof(rh));
	memset(tr, 0, sizeof(*tr));
	tr->count = 2;
	tr->results[0] = (struct ps_teardown_result){.kind = PS_RESOURCE_LOOP,
						     .status = PS_TEARDOWN_ABSENT,
						     .reason = PS_REASON_DISKSEQ_CHANGED,
						     .diskseq = 34207,
						     .diskseq_found = 34210};
	strcpy(tr->results[0].name, "/dev/loop7");
	tr->results[1] =
	    (struct ps_teardown_result){.kind = PS_RESOURCE_TAP, .status = PS_TEARDOWN_REMOVED};
	strcpy(tr->results[1].name, "bgt0");
	len = sizeof(rh) + sizeof(*tr);
	CHECK(decode(PS_TO_DAEMON, buf, len, 0, &m) == 0, "valid teardown reply: %s", why);
	tr->results[1].diskseq_found = 1;
	expect_violation(buf, len, 0, PS_TO_DAEMON,
			 "teardown_reply.results[1]: a diskseq on a tap");
	tr->results[1].diskseq_found = 0;

	/* A tap's ifindex pair: only on a tap's result, each within int. */
	tr->results[1].reason = PS_REASON_IFINDEX_CHANGED;
	tr->results[1].status = PS_TEARDOWN_ABSENT;
	tr->results[1].ifindex = 17;
	tr->results[1].ifindex_found = 23;
	CHECK(decode(PS_TO_DAEMON, buf, len, 0, &m) == 0, "ifindex-changed reply: %s", why);
	CHECK(m.payload.teardown_reply.results[1].ifindex_found == 23, "the found ifindex arrives");
	tr->results[1].ifindex_found = 0x80000000u;
	expect_violation(buf, len, 0, PS_TO_DAEMON,
			 "teardown_reply.results[1]: an ifindex above INT32_MAX");
	tr->results[1].ifindex_found = 23;
	tr->results[0].ifindex = 17;
	expect_violation(buf, len, 0, PS_TO_DAEMON,
			 "teardown_reply.results[0]: an ifindex on a loop");
}

/* A rejected message's fds are closed by asroot_recv: none leaks into the receiver. */
static void rejected_fds_are_closed(void)
{
	int sv[2], p[2];
	unsigned char buf[256];
	pair(sv);
	CHECK(pipe(p) == 0, "pipe");
	int before = t_count_fds();
	size_t len = raw_hello(buf);
	/*
	 * HELLO carries no fd. Three fds overflow the helper's control buffer,
	 * which is sized for one (alignment leaves room for two): MSG_CTRUNC.
	 */
	int fds[3] = {p[0], p[1], p[0]};
	CHECK(t_send_raw(sv[0], buf, len, fds, 1) == 0, "send");
	CHECK(t_send_raw(sv[0], buf, len, fds, 3) == 0, "send");
	struct ps_message m;
	CHECK(asroot_recv(sv[1], &m, why, sizeof(why)) == -EBADMSG &&
		  strstr(why, "declares 0 fds, 1 arrived"),
	      "fd on hello: %s", why);
	CHECK(t_count_fds() == before, "fd leaked after a rejected hello");
	CHECK(asroot_recv(sv[1], &m, why, sizeof(why)) == -EBADMSG && strstr(why, "MSG_CTRUNC"),
	      "three fds: %s", why);
	CHECK(t_count_fds() == before, "fd leaked after MSG_CTRUNC");
	/* Oversize datagram. */
	static unsigned char big[PS_MAX_REQUEST_BYTES + 100];
	memcpy(big, buf, len);
	int sz = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	CHECK(t_send_raw(sv[0], big, sizeof(big), NULL, 0) == 0, "send big");
	CHECK(asroot_recv(sv[1], &m, why, sizeof(why)) == -EBADMSG && strstr(why, "oversize"),
	      "oversize: %s", why);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	close(sv[1]);
}

static void send_refuses_out_of_bounds(void)
{
	static unsigned char big[sizeof(union ps_payload) + 1];
	int fds[FDPASS_MAX_FDS + 1] = {0};
	CHECK(ps_send(-1, PS_HELLO, 1, big, sizeof(big), NULL, 0) == -EINVAL, "size checked");
	CHECK(ps_send(-1, PS_SCAN_REPLY, 1, big, 8, fds, ELEMENTSOF(fds)) == -EINVAL,
	      "fd count checked");
}

int main(void)
{
	roundtrip_probe_with_fd();
	decoder_rules();
	rejected_fds_are_closed();
	send_refuses_out_of_bounds();
	return 0;
}
