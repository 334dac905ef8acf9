/*
 * Writes the seed corpus for fuzz_privsep_decode: one valid message of every
 * type, plus near misses that each break one rule. Without valid seeds the
 * fuzzer would spend its time guessing the magic, version and exact payload
 * size before it ever reached a validator.
 *
 * Messages are built from the real structs (and the policy from policy.h's
 * own setters), so regenerating after a layout change keeps the corpus in
 * step; every seed is run through its decoder before it is written, so a
 * file named as valid is valid and a near miss is refused.
 *
 * Usage: make_corpus DIR. The output is checked in under corpus/privsep/;
 * `ninja fuzz-corpus` regenerates it there.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corpus_writer.h"
#include "fuzz_privsep_input.h"
#include "macro.h"
#include "path.h"
#include "policy.h"
#include "privsep.h"

#define WHY_MAX 256

#define SEED_API_SOCK_ROOT "/run/banger/vms"
#define SEED_LOOP_ROOT	   "/var/lib/banger/images"

/* A datagram as it goes on the wire: the header directly followed by the payload. */
struct datagram {
	struct ps_header header;
	union ps_payload payload;
};
static_assert(offsetof(struct datagram, payload) == sizeof(struct ps_header),
	      "payload must follow the header with no padding");

enum seed_verdict {
	SEED_VALID,
	SEED_INVALID,
};

/* Zero the whole datagram, then write a correct header for a payload of this type. */
static void datagram_reset(struct datagram *d, uint16_t type, size_t payload_size, size_t nfds)
{
	memset(d, 0, sizeof(*d));
	d->header = (struct ps_header){
	    .magic = PS_MAGIC,
	    .version = PS_PROTOCOL_VERSION,
	    .type = type,
	    .request_id = 1,
	    .payload_len = (uint32_t)payload_size,
	    .nfds = (uint32_t)nfds,
	};
}

/* The length the header claims, which a near miss may have made a lie. */
static size_t datagram_len(const struct datagram *d)
{
	return sizeof(d->header) + d->header.payload_len;
}

static void set_string(struct corpus *c, char *field, size_t size, const char *value)
{
	if (field_set(field, size, value) < 0)
		corpus_fail(c, "\"%s\" does not fit a %zu-byte field", value, size);
}

#define SET_STRING(c, field, value) set_string((c), (field), sizeof(field), (value))

/*
 * Write the fuzz input for the first len bytes of d as delivered on a socket
 * of direction dir with nfds fds, after checking that its decoder agrees
 * with the verdict the seed's name promises.
 */
static void seed_emit(struct corpus *c, const char *name, enum ps_direction dir, size_t nfds,
		      const struct datagram *d, size_t len, enum seed_verdict verdict)
{
	_cleanup_free_ struct ps_message *msg = calloc(1, sizeof(*msg));
	_cleanup_free_ unsigned char *input = malloc(1 + len);
	char why[WHY_MAX] = "";
	int selector = fuzz_privsep_selector(dir, nfds);

	if (!msg || !input) {
		corpus_fail(c, "out of memory");
		return;
	}
	if (selector < 0) {
		corpus_fail(c, "%s: %zu fds cannot be expressed", name, nfds);
		return;
	}

	int r = fuzz_privsep_decode(dir, d, len, nfds, msg, why, sizeof(why));
	if ((r == 0) != (verdict == SEED_VALID)) {
		corpus_fail(c, "%s: expected %s, the decoder says %s%s", name,
			    verdict == SEED_VALID ? "valid" : "refused",
			    r == 0 ? "valid" : "refused: ", r == 0 ? "" : why);
		return;
	}

	input[0] = (unsigned char)selector;
	memcpy(input + 1, d, len);
	corpus_write(c, name, input, 1 + len);
}

static void fill_caller(struct corpus *c, struct ps_caller *caller, const char *call,
			const char *vm)
{
	caller->uid = 1000;
	caller->gid = 1000;
	caller->pid = 4242;
	SET_STRING(c, caller->call, call);
	SET_STRING(c, caller->vm, vm);
}

static void seed_hello(struct corpus *c, struct datagram *d)
{
	datagram_reset(d, PS_HELLO, sizeof(d->payload.hello), 0);
	fill_caller(c, &d->payload.hello.caller, "startup", "");
	d->payload.hello.caller.pid = 0; /* bangerd acting on its own */
	d->payload.hello.protocol_version = PS_PROTOCOL_VERSION;
	seed_emit(c, "hello-valid", PS_TO_HELPER, 0, d, datagram_len(d), SEED_VALID);
	seed_emit(c, "hello-wrong-direction", PS_TO_DAEMON, 0, d, datagram_len(d), SEED_INVALID);
	/* Shorter than a header: nothing past the length check may run. */
	seed_emit(c, "hello-short", PS_TO_HELPER, 0, d, sizeof(d->header) - 1, SEED_INVALID);

	d->payload.hello.caller.call[3] = '\t';
	seed_emit(c, "hello-unprintable-caller", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
	d->payload.hello.caller.call[3] = 'r';

	SET_STRING(c, d->payload.hello.caller.vm, ".hidden");
	seed_emit(c, "hello-bad-vm-id", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
	SET_STRING(c, d->payload.hello.caller.vm, "");

	d->header.magic = PS_MAGIC ^ 0xffu;
	seed_emit(c, "hello-wrong-magic", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
	d->header.magic = PS_MAGIC;

	d->header.version = PS_PROTOCOL_VERSION + 1;
	seed_emit(c, "hello-wrong-version", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
	d->header.version = PS_PROTOCOL_VERSION;

	d->header.type = 99;
	seed_emit(c, "unknown-type", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
}

static void seed_hello_reply(struct corpus *c, struct datagram *d)
{
	struct ps_hello_reply *reply = &d->payload.hello_reply;
	char why[WHY_MAX];

	datagram_reset(d, PS_HELLO_REPLY, sizeof(*reply), 0);
	reply->protocol_version = PS_PROTOCOL_VERSION;
	reply->helper_pid = 4243;
	reply->helper_uid = 0;
	reply->flags = PS_HELLO_PRIVILEGED;
	policy_init(&reply->policy);
	if (policy_set_tap_prefix(&reply->policy, "bgtap") < 0 ||
	    policy_set_dm_prefix(&reply->policy, "banger-") < 0 ||
	    policy_set_dm_uuid_prefix(&reply->policy, "BANGER-") < 0 ||
	    policy_add_loop_root(&reply->policy, SEED_LOOP_ROOT) < 0 ||
	    policy_add_api_sock_root(&reply->policy, SEED_API_SOCK_ROOT) < 0 ||
	    policy_add_api_sock_root(&reply->policy, "/srv/banger/sockets") < 0 ||
	    policy_finish(&reply->policy, why, sizeof(why)) < 0) {
		corpus_fail(c, "building the seed policy failed");
		return;
	}
	seed_emit(c, "hello-reply-valid", PS_TO_DAEMON, 0, d, datagram_len(d), SEED_VALID);

	reply->flags = 0x80000000u;
	seed_emit(c, "hello-reply-unknown-flags", PS_TO_DAEMON, 0, d, datagram_len(d),
		  SEED_INVALID);
}

static void seed_probe(struct corpus *c, struct datagram *d)
{
	struct ps_probe *probe = &d->payload.probe;

	datagram_reset(d, PS_PROBE, sizeof(*probe), 0);
	fill_caller(c, &probe->caller, "SetHandles#17", "vm-a");
	probe->pid = 5150;
	probe->start_time = 123456;
	SET_STRING(c, probe->api_sock, SEED_API_SOCK_ROOT "/a/api.sock");
	seed_emit(c, "probe-valid", PS_TO_HELPER, 0, d, datagram_len(d), SEED_VALID);
	seed_emit(c, "probe-truncated-payload", PS_TO_HELPER, 0, d, datagram_len(d) - 8,
		  SEED_INVALID);

	d->header.payload_len -= 1;
	seed_emit(c, "probe-bad-length", PS_TO_HELPER, 0, d, datagram_len(d) + 1, SEED_INVALID);
	d->header.payload_len += 1;

	memset(probe->api_sock, 'a', sizeof(probe->api_sock));
	seed_emit(c, "probe-unterminated-api-sock", PS_TO_HELPER, 0, d, datagram_len(d),
		  SEED_INVALID);
	SET_STRING(c, probe->api_sock, SEED_API_SOCK_ROOT "/a/api.sock");

	probe->flags = PS_PROBE_HAS_PIDFD;
	seed_emit(c, "probe-pidfd-flag-without-fd", PS_TO_HELPER, 0, d, datagram_len(d),
		  SEED_INVALID);
	probe->pid = 0; /* the pidfd names the process */
	d->header.nfds = 1;
	seed_emit(c, "probe-with-pidfd", PS_TO_HELPER, 1, d, datagram_len(d), SEED_VALID);
}

static void seed_probe_reply(struct corpus *c, struct datagram *d)
{
	struct ps_probe_reply *reply = &d->payload.probe_reply;

	datagram_reset(d, PS_PROBE_REPLY, sizeof(*reply), 1);
	reply->status = PS_PROBE_RUNNING;
	reply->reason = PS_REASON_NONE;
	reply->pid = 5150;
	reply->start_time = 123456;
	seed_emit(c, "probe-reply-running", PS_TO_DAEMON, 1, d, datagram_len(d), SEED_VALID);

	datagram_reset(d, PS_PROBE_REPLY, sizeof(*reply), 0);
	reply->status = PS_PROBE_NOT_RUNNING;
	reply->reason = PS_REASON_START_TIME_MISMATCH;
	reply->pid = 5150;
	seed_emit(c, "probe-reply-not-running", PS_TO_DAEMON, 0, d, datagram_len(d), SEED_VALID);
}

static void seed_scan(struct corpus *c, struct datagram *d)
{
	struct ps_scan *scan = &d->payload.scan;

	datagram_reset(d, PS_SCAN, sizeof(*scan), 0);
	fill_caller(c, &scan->caller, "Reconcile#3", "");
	scan->caller.pid = 0;
	scan->part = 0;
	scan->nparts = 1;
	scan->budget_ms = 7500;
	scan->count = 3;
	SET_STRING(c, scan->sockets[0], SEED_API_SOCK_ROOT "/a/api.sock");
	SET_STRING(c, scan->sockets[1], SEED_API_SOCK_ROOT "/b/api.sock");
	SET_STRING(c, scan->sockets[2], SEED_API_SOCK_ROOT "/c/api.sock");
	seed_emit(c, "scan-3-sockets", PS_TO_HELPER, 0, d, datagram_len(d), SEED_VALID);

	scan->count = PS_SCAN_PART_MAX + 1;
	seed_emit(c, "scan-count-over-max", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);

	/* A count that stops short of a filled entry would hide that socket from the helper. */
	scan->count = 2;
	seed_emit(c, "scan-entry-beyond-count", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
}

static void fill_scan_entry(struct corpus *c, struct ps_scan_entry *entry, uint32_t kind,
			    uint32_t index, const char *api_sock)
{
	entry->kind = kind;
	entry->index = index;
	entry->pid = (int32_t)(6000 + index);
	entry->has_pidfd = kind == PS_SCAN_MATCH;
	entry->start_time = 100000 + index;
	SET_STRING(c, entry->api_sock, api_sock);
}

static void seed_scan_reply(struct corpus *c, struct datagram *d)
{
	struct ps_scan_reply *reply = &d->payload.scan_reply;
	char api_sock[PS_SOCK_PATH_MAX];

	datagram_reset(d, PS_SCAN_REPLY, sizeof(*reply), 1);
	reply->flags = PS_SCAN_LAST;
	reply->count = 2;
	fill_scan_entry(c, &reply->entries[0], PS_SCAN_MATCH, 1, SEED_API_SOCK_ROOT "/b/api.sock");
	fill_scan_entry(c, &reply->entries[1], PS_SCAN_ORPHAN, 0,
			SEED_API_SOCK_ROOT "/stray/api.sock");
	seed_emit(c, "scan-reply-2-entries", PS_TO_DAEMON, 1, d, datagram_len(d), SEED_VALID);

	/* Two processes hold socket 2's listener; socket 3 could not be looked at. */
	reply->count = 5;
	fill_scan_entry(c, &reply->entries[2], PS_SCAN_AMBIGUOUS, 2, "");
	fill_scan_entry(c, &reply->entries[3], PS_SCAN_AMBIGUOUS, 2, "");
	reply->entries[3].pid++;
	fill_scan_entry(c, &reply->entries[4], PS_SCAN_UNKNOWN, 3, "");
	reply->entries[4].pid = 0;
	reply->entries[4].start_time = 0;
	reply->entries[4].err = -13; /* EACCES */
	seed_emit(c, "scan-reply-ambiguous-unknown", PS_TO_DAEMON, 1, d, datagram_len(d),
		  SEED_VALID);
	/* An ambiguous claimant with a pidfd would be adopted after all. */
	reply->entries[3].has_pidfd = 1;
	d->header.nfds = 2;
	seed_emit(c, "scan-reply-ambiguous-with-pidfd", PS_TO_DAEMON, 2, d, datagram_len(d),
		  SEED_INVALID);
	reply->entries[3].has_pidfd = 0;
	d->header.nfds = 1;
	memset(&reply->entries[2], 0, 3 * sizeof(reply->entries[0]));
	reply->count = 2;

	/* The walk ran out of its budget: cut short, with what it left uninspected. */
	reply->flags = PS_SCAN_LAST | PS_SCAN_CUT_SHORT;
	reply->uninspected = 1;
	seed_emit(c, "scan-reply-cut-short", PS_TO_DAEMON, 1, d, datagram_len(d), SEED_VALID);
	reply->uninspected = 0;
	seed_emit(c, "scan-reply-cut-short-nothing-left", PS_TO_DAEMON, 1, d, datagram_len(d),
		  SEED_INVALID);
	reply->flags = PS_SCAN_LAST;

	/* One fd more than the entries account for: the daemon would leak or misassign it. */
	d->header.nfds = 2;
	seed_emit(c, "scan-reply-fd-count-mismatch", PS_TO_DAEMON, 2, d, datagram_len(d),
		  SEED_INVALID);

	datagram_reset(d, PS_SCAN_REPLY, sizeof(*reply), PS_SCAN_REPLY_MAX);
	reply->part = 0;
	reply->count = PS_SCAN_REPLY_MAX;
	for (uint32_t i = 0; i < PS_SCAN_REPLY_MAX; i++) {
		snprintf(api_sock, sizeof(api_sock), SEED_API_SOCK_ROOT "/vm%u/api.sock", i);
		fill_scan_entry(c, &reply->entries[i], PS_SCAN_MATCH, i, api_sock);
	}
	seed_emit(c, "scan-reply-full-part", PS_TO_DAEMON, PS_SCAN_REPLY_MAX, d, datagram_len(d),
		  SEED_VALID);
}

static void seed_teardown(struct corpus *c, struct datagram *d)
{
	struct ps_teardown *teardown = &d->payload.teardown;

	datagram_reset(d, PS_TEARDOWN, sizeof(*teardown), 0);
	fill_caller(c, &teardown->caller, "Teardown#9", "vm-a");
	teardown->n_dm = 2;
	SET_STRING(c, teardown->dm[0], "banger-a-root");
	SET_STRING(c, teardown->dm[1], "banger-a-root-base");
	teardown->n_loops = 2;
	SET_STRING(c, teardown->loops[0], "/dev/loop7");
	teardown->loop_diskseq[0] = 34207;
	SET_STRING(c, teardown->loops[1], "/var/lib/banger/images/a-root.img");
	SET_STRING(c, teardown->tap, "bgtap3");
	teardown->tap_ifindex = 17;
	seed_emit(c, "teardown-valid", PS_TO_HELPER, 0, d, datagram_len(d), SEED_VALID);

	teardown->tap_ifindex = 0x80000000u;
	seed_emit(c, "teardown-ifindex-not-int", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
	teardown->tap_ifindex = 17;
	SET_STRING(c, teardown->tap, "");
	seed_emit(c, "teardown-ifindex-without-tap", PS_TO_HELPER, 0, d, datagram_len(d),
		  SEED_INVALID);
	SET_STRING(c, teardown->tap, "bgtap3");

	teardown->loop_diskseq[2] = 34208;
	seed_emit(c, "teardown-diskseq-beyond-count", PS_TO_HELPER, 0, d, datagram_len(d),
		  SEED_INVALID);
	teardown->loop_diskseq[2] = 0;

	teardown->n_dm = 1;
	seed_emit(c, "teardown-dm-beyond-count", PS_TO_HELPER, 0, d, datagram_len(d), SEED_INVALID);
}

static void seed_teardown_reply(struct corpus *c, struct datagram *d)
{
	struct ps_teardown_reply *reply = &d->payload.teardown_reply;
	static const struct {
		uint32_t kind;
		uint32_t status;
		int32_t reason;
		uint64_t diskseq, diskseq_found;
		uint32_t ifindex, ifindex_found;
		const char *name;
	} results[] = {
	    {PS_RESOURCE_DM, PS_TEARDOWN_REMOVED, PS_REASON_NONE, 0, 0, 0, 0, "banger-a-root"},
	    {PS_RESOURCE_LOOP, PS_TEARDOWN_ABSENT, PS_REASON_DISKSEQ_CHANGED, 34207, 34210, 0, 0,
	     "/dev/loop7"},
	    {PS_RESOURCE_TAP, PS_TEARDOWN_ABSENT, PS_REASON_IFINDEX_CHANGED, 0, 0, 17, 23,
	     "bgtap3"},
	};

	datagram_reset(d, PS_TEARDOWN_REPLY, sizeof(*reply), 0);
	reply->count = ELEMENTSOF(results);
	for (size_t i = 0; i < ELEMENTSOF(results); i++) {
		reply->results[i].kind = results[i].kind;
		reply->results[i].status = results[i].status;
		reply->results[i].reason = results[i].reason;
		reply->results[i].diskseq = results[i].diskseq;
		reply->results[i].diskseq_found = results[i].diskseq_found;
		reply->results[i].ifindex = results[i].ifindex;
		reply->results[i].ifindex_found = results[i].ifindex_found;
		SET_STRING(c, reply->results[i].name, results[i].name);
	}
	seed_emit(c, "teardown-reply-3-results", PS_TO_DAEMON, 0, d, datagram_len(d), SEED_VALID);

	reply->results[2].diskseq = 34207;
	seed_emit(c, "teardown-reply-diskseq-on-tap", PS_TO_DAEMON, 0, d, datagram_len(d),
		  SEED_INVALID);
	reply->results[2].diskseq = 0;
	reply->results[1].ifindex_found = 17;
	seed_emit(c, "teardown-reply-ifindex-on-loop", PS_TO_DAEMON, 0, d, datagram_len(d),
		  SEED_INVALID);
}

static void write_seeds(struct corpus *c, void *scratch)
{
	struct datagram *d = scratch;

	seed_hello(c, d);
	seed_hello_reply(c, d);
	seed_probe(c, d);
	seed_probe_reply(c, d);
	seed_scan(c, d);
	seed_scan_reply(c, d);
	seed_teardown(c, d);
	seed_teardown_reply(c, d);
}

int main(int argc, char **argv)
{
	return corpus_main(argc, argv, "make_corpus", sizeof(struct datagram), write_seeds);
}
