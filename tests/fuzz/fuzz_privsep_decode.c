/*
 * libFuzzer target for the privsep decoders, the one place where bytes from
 * the other side of the privsep socket become a struct: the helper's
 * (asroot_decode, its request table over proto/privsep_request.c) and
 * bangerd's (ps_decode_reply). The helper runs as root and
 * trusts nothing bangerd sends, so the decoder must never read past the
 * datagram, and a message it accepts must really hold what every handler
 * then assumes: terminated strings, counts within their arrays, fd counts
 * that match. A memory error is caught by the sanitizers; an accepted
 * message that breaks one of those promises is turned into a crash here.
 *
 * The invariants below are written from privsep.h, not copied from the
 * validators in proto/, so that a check dropped there shows up here.
 * Input layout: see fuzz_privsep_input.h. libFuzzer provides main().
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_privsep_input.h"
#include "fuzz_invariant.h"
#include "macro.h"
#include "privsep.h"

/* Large enough for every message the decoders write; a short one tests truncation. */
#define WHY_BUFFER_BYTES       256
#define SHORT_WHY_BUFFER_BYTES 8

static bool field_is_terminated(const char *field, size_t size)
{
	return memchr(field, '\0', size) != NULL;
}

#define TERMINATED(field) field_is_terminated((field), sizeof(field))

/* The first count entries of a fixed array of string fields: each terminated and non-empty. */
static void check_string_entries(const char *base, size_t entry_size, size_t capacity,
				 uint32_t count)
{
	INVARIANT(count <= capacity);
	for (size_t i = 0; i < count; i++) {
		const char *entry = base + i * entry_size;
		INVARIANT(field_is_terminated(entry, entry_size));
		INVARIANT(entry[0] != '\0');
	}
}

/* A printable word, as a log field takes it. */
static bool printable_word(const char *s)
{
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

static void check_caller(const struct ps_caller *caller)
{
	INVARIANT(TERMINATED(caller->call));
	INVARIANT(printable_word(caller->call));
	INVARIANT(TERMINATED(caller->vm));
	INVARIANT(strlen(caller->vm) <= PS_VM_ID_MAX);
	INVARIANT(printable_word(caller->vm));
	INVARIANT(caller->vm[0] != '-' && caller->vm[0] != '.' && caller->vm[0] != '_');
}

static void check_hello(const union ps_payload *p, size_t nfds)
{
	INVARIANT(nfds == 0);
	check_caller(&p->hello.caller);
}

static void check_hello_reply(const union ps_payload *p, size_t nfds)
{
	const struct ps_policy *policy = &p->hello_reply.policy;

	INVARIANT(nfds == 0);
	INVARIANT((p->hello_reply.flags & ~PS_HELLO_PRIVILEGED) == 0);
	INVARIANT(TERMINATED(policy->tap_prefix));
	INVARIANT(TERMINATED(policy->dm_prefix));
	INVARIANT(TERMINATED(policy->dm_uuid_prefix));
	check_string_entries(policy->loop_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS,
			     policy->n_loop_roots);
	check_string_entries(policy->api_sock_roots[0], PS_PATH_MAX, PS_POLICY_MAX_ROOTS,
			     policy->n_api_sock_roots);
	check_string_entries(policy->firecracker_names[0], PS_EXE_NAME_MAX, PS_POLICY_MAX_NAMES,
			     policy->n_firecracker_names);
}

static void check_probe(const union ps_payload *p, size_t nfds)
{
	const struct ps_probe *probe = &p->probe;
	bool has_pidfd = probe->flags & PS_PROBE_HAS_PIDFD;

	check_caller(&probe->caller);
	INVARIANT((probe->flags & ~PS_PROBE_HAS_PIDFD) == 0);
	INVARIANT(has_pidfd == (nfds == 1));
	INVARIANT(has_pidfd || probe->pid > 0);
	INVARIANT(TERMINATED(probe->api_sock));
	INVARIANT(probe->api_sock[0] != '\0');
}

static void check_probe_reply(const union ps_payload *p, size_t nfds)
{
	const struct ps_probe_reply *reply = &p->probe_reply;

	INVARIANT(reply->status >= PS_PROBE_RUNNING && reply->status <= PS_PROBE_FAILED);
	INVARIANT(reply->reason >= 0 && reply->reason < PS_REASON_MAX_);
	INVARIANT((reply->status == PS_PROBE_RUNNING) == (nfds == 1));
	INVARIANT(reply->err <= 0);
}

static void check_scan(const union ps_payload *p, size_t nfds)
{
	const struct ps_scan *scan = &p->scan;

	INVARIANT(nfds == 0);
	check_caller(&scan->caller);
	INVARIANT(scan->nparts >= 1 && scan->nparts <= PS_SCAN_MAX_PARTS);
	INVARIANT(scan->part < scan->nparts);
	INVARIANT(scan->budget_ms >= 1 && scan->budget_ms <= PS_SCAN_BUDGET_MAX_MS);
	check_string_entries(scan->sockets[0], PS_SOCK_PATH_MAX, PS_SCAN_PART_MAX, scan->count);
}

static void check_scan_reply(const union ps_payload *p, size_t nfds)
{
	const struct ps_scan_reply *reply = &p->scan_reply;
	size_t with_pidfd = 0;

	INVARIANT((reply->flags & ~(PS_SCAN_LAST | PS_SCAN_CUT_SHORT)) == 0);
	INVARIANT(!(reply->flags & PS_SCAN_CUT_SHORT) ||
		  ((reply->flags & PS_SCAN_LAST) && reply->uninspected > 0));
	INVARIANT(reply->err <= 0);
	INVARIANT(reply->count <= PS_SCAN_REPLY_MAX);
	for (size_t i = 0; i < reply->count; i++) {
		const struct ps_scan_entry *entry = &reply->entries[i];
		INVARIANT(entry->kind >= PS_SCAN_MATCH && entry->kind <= PS_SCAN_UNKNOWN);
		INVARIANT(entry->index < PS_SCAN_MAX_SOCKETS);
		INVARIANT(entry->kind != PS_SCAN_ORPHAN || entry->index == 0);
		/* Only a match is ever adopted: it alone carries a pidfd. */
		INVARIANT(entry->has_pidfd == (entry->kind == PS_SCAN_MATCH));
		/* A socket that could not be looked at names no process, and says why. */
		INVARIANT((entry->kind == PS_SCAN_UNKNOWN) == (entry->pid == 0) && entry->pid >= 0);
		INVARIANT((entry->kind == PS_SCAN_UNKNOWN) == (entry->err < 0) && entry->err <= 0);
		INVARIANT(TERMINATED(entry->api_sock));
		with_pidfd += entry->has_pidfd;
	}
	/* The daemon hands out one fd per entry that says it has one: the counts must agree. */
	INVARIANT(with_pidfd == nfds);
}

static void check_teardown(const union ps_payload *p, size_t nfds)
{
	const struct ps_teardown *teardown = &p->teardown;

	INVARIANT(nfds == 0);
	check_caller(&teardown->caller);
	check_string_entries(teardown->dm[0], PS_DM_NAME_MAX, PS_TEARDOWN_MAX_DM, teardown->n_dm);
	check_string_entries(teardown->loops[0], PS_PATH_MAX, PS_TEARDOWN_MAX_LOOPS,
			     teardown->n_loops);
	INVARIANT(TERMINATED(teardown->tap));
}

static void check_teardown_reply(const union ps_payload *p, size_t nfds)
{
	const struct ps_teardown_reply *reply = &p->teardown_reply;

	INVARIANT(nfds == 0);
	INVARIANT(reply->err <= 0);
	INVARIANT(reply->count <= PS_TEARDOWN_MAX_RESULTS);
	for (size_t i = 0; i < reply->count; i++) {
		const struct ps_teardown_result *result = &reply->results[i];
		INVARIANT(result->kind >= PS_RESOURCE_DM && result->kind <= PS_RESOURCE_TAP);
		INVARIANT(result->status >= PS_TEARDOWN_REMOVED &&
			  result->status <= PS_TEARDOWN_FAILED);
		INVARIANT(result->reason >= 0 && result->reason < PS_REASON_MAX_);
		INVARIANT(result->err <= 0);
		INVARIANT(TERMINATED(result->name));
	}
}

/* What privsep.h promises about each type, independent of the decoder's own table. */
struct expected_type {
	uint16_t type;
	enum ps_direction dir;
	size_t payload_size;
	void (*check)(const union ps_payload *p, size_t nfds);
};

static const struct expected_type expected_types[] = {
    {PS_HELLO, PS_TO_HELPER, sizeof(struct ps_hello), check_hello},
    {PS_HELLO_REPLY, PS_TO_DAEMON, sizeof(struct ps_hello_reply), check_hello_reply},
    {PS_PROBE, PS_TO_HELPER, sizeof(struct ps_probe), check_probe},
    {PS_PROBE_REPLY, PS_TO_DAEMON, sizeof(struct ps_probe_reply), check_probe_reply},
    {PS_SCAN, PS_TO_HELPER, sizeof(struct ps_scan), check_scan},
    {PS_SCAN_REPLY, PS_TO_DAEMON, sizeof(struct ps_scan_reply), check_scan_reply},
    {PS_TEARDOWN, PS_TO_HELPER, sizeof(struct ps_teardown), check_teardown},
    {PS_TEARDOWN_REPLY, PS_TO_DAEMON, sizeof(struct ps_teardown_reply), check_teardown_reply},
};

static const struct expected_type *expected_type_lookup(uint16_t type)
{
	for (size_t i = 0; i < ELEMENTSOF(expected_types); i++)
		if (expected_types[i].type == type)
			return &expected_types[i];
	return NULL;
}

static void check_accepted(enum ps_direction dir, const uint8_t *datagram, size_t len, size_t nfds,
			   const struct ps_message *msg)
{
	const struct ps_header *header = &msg->header;

	INVARIANT(len >= sizeof(*header));
	INVARIANT(memcmp(header, datagram, sizeof(*header)) == 0);
	INVARIANT(header->magic == PS_MAGIC);
	INVARIANT(header->version == PS_PROTOCOL_VERSION);
	INVARIANT(header->nfds == nfds);

	const struct expected_type *expected = expected_type_lookup(header->type);
	INVARIANT(expected != NULL);
	INVARIANT(expected->dir == dir);
	INVARIANT(header->payload_len == expected->payload_size);
	INVARIANT(header->payload_len == len - sizeof(*header));
	INVARIANT(memcmp(&msg->payload, datagram + sizeof(*header), header->payload_len) == 0);
	expected->check(&msg->payload, nfds);
}

/*
 * A refusal must say why, in a terminated string, however small the caller's
 * buffer; and the verdict must not depend on that buffer's size.
 */
static void check_refused(enum ps_direction dir, const uint8_t *datagram, size_t len, size_t nfds,
			  struct ps_message *msg, int r, const char *why)
{
	char short_why[SHORT_WHY_BUFFER_BYTES];

	INVARIANT(r == -EBADMSG);
	INVARIANT(field_is_terminated(why, WHY_BUFFER_BYTES));
	INVARIANT(why[0] != '\0');

	memset(short_why, 'X', sizeof(short_why));
	INVARIANT(
	    fuzz_privsep_decode(dir, datagram, len, nfds, msg, short_why, sizeof(short_why)) == r);
	INVARIANT(TERMINATED(short_why));
	INVARIANT(strncmp(short_why, why, strlen(short_why)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* On the heap, sized exactly, so that AddressSanitizer sees a write past its end. */
	_cleanup_free_ struct ps_message *msg = calloc(1, sizeof(*msg));
	char why[WHY_BUFFER_BYTES];

	if (!msg)
		abort();

	uint8_t selector = size > 0 ? data[0] : 0;
	enum ps_direction dir = fuzz_privsep_direction(selector);
	size_t nfds = fuzz_privsep_nfds(selector);
	const uint8_t *datagram = size > 0 ? data + 1 : data;
	size_t len = size > 0 ? size - 1 : 0;

	/* Not NUL-filled, so that a refusal which forgets to write why is caught. */
	memset(why, 'X', sizeof(why));
	int r = fuzz_privsep_decode(dir, datagram, len, nfds, msg, why, sizeof(why));
	if (r == 0)
		check_accepted(dir, datagram, len, nfds, msg);
	else
		check_refused(dir, datagram, len, nfds, msg, r, why);
	return 0;
}
