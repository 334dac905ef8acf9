/*
 * Writes the seed corpus for fuzz_varlink_server: scripts (see
 * fuzz_varlink_input.h) that make each kind of call the server knows,
 * valid and hostile, so that the fuzzer starts from the shapes of real
 * traffic instead of guessing JSON and the script format byte by byte.
 *
 * Most seeds are one message sent in one chunk, listed in a table; the rest
 * are short scripts: pipelining, a call cut into single bytes, fds, two
 * clients, a client that leaves with a stream open, one that stops reading.
 *
 * Usage: make_varlink_corpus DIR. The output is checked in under
 * corpus/varlink/; `ninja fuzz-corpus` regenerates it there.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corpus_writer.h"
#include "fuzz_varlink_input.h"
#include "macro.h"

#define SEED_MAX_BYTES 8192

/* Indexes into fuzz_varlink_nfds_choices. */
#define NO_FDS	      0u
#define ONE_FD	      1u
#define MOST_FDS      2u
#define TOO_MANY_FDS  3u
#define MAX_SEND_LONG 0xffffu

/* Setup bytes (fuzz_varlink_input.h). */
#define ADMIN_0	   (1u << FUZZ_VARLINK_SETUP_ADMIN_SHIFT)
#define ADMIN_2	   (4u << FUZZ_VARLINK_SETUP_ADMIN_SHIFT)
#define ALL_ADMINS (7u << FUZZ_VARLINK_SETUP_ADMIN_SHIFT)
#define TIGHT	   FUZZ_VARLINK_SETUP_TIGHT_LIMITS
#define SMALL_BUF  FUZZ_VARLINK_SETUP_SMALL_SNDBUF

/* Indexes into fuzz_varlink_repeat_units. */
#define UNIT_64	     1u
#define UNIT_4_KIB   2u
#define UNIT_LARGEST 3u /* 64 of them make the largest message the server takes */

struct seed {
	unsigned char bytes[SEED_MAX_BYTES];
	size_t len;
	bool overflow;
};

static void seed_begin(struct seed *s, unsigned setup)
{
	s->len = 0;
	s->overflow = false;
	s->bytes[s->len++] = (unsigned char)setup;
}

static void seed_put(struct seed *s, const void *bytes, size_t len)
{
	if (len > sizeof(s->bytes) - s->len) {
		s->overflow = true;
		return;
	}
	memcpy(s->bytes + s->len, bytes, len);
	s->len += len;
}

static void seed_byte(struct seed *s, unsigned byte)
{
	unsigned char b = (unsigned char)byte;
	seed_put(s, &b, 1);
}

static void seed_op(struct seed *s, enum fuzz_varlink_op op, unsigned nfds_choice, unsigned turns)
{
	seed_byte(s, fuzz_varlink_op_byte(op, nfds_choice, turns));
}

/* Bytes in one chunk, the fds (if any) on its first byte, then turns of the loop. */
static void seed_send(struct seed *s, const void *bytes, size_t len, unsigned nfds_choice,
		      unsigned turns)
{
	if (len <= 0xff) {
		seed_op(s, FUZZ_VARLINK_SEND, nfds_choice, turns);
		seed_byte(s, (unsigned)len);
	} else if (len <= MAX_SEND_LONG) {
		seed_op(s, FUZZ_VARLINK_SEND_LONG, nfds_choice, turns);
		seed_byte(s, (unsigned)(len & 0xff));
		seed_byte(s, (unsigned)(len >> 8));
	} else {
		s->overflow = true;
		return;
	}
	seed_put(s, bytes, len);
}

/* One message: the text and its terminating NUL. */
static void seed_call(struct seed *s, const char *text, unsigned nfds_choice, unsigned turns)
{
	seed_send(s, text, strlen(text) + 1, nfds_choice, turns);
}

/* pattern repeated to count * the unit at unit_index bytes, without a NUL. */
static void seed_repeat(struct seed *s, const char *pattern, size_t count, unsigned unit_index,
			unsigned turns)
{
	size_t len = strlen(pattern);

	if (len == 0 || len > FUZZ_VARLINK_REPEAT_PATTERN_MASK + 1u || count == 0 ||
	    count > FUZZ_VARLINK_REPEAT_COUNT_MASK + 1u ||
	    unit_index >= ELEMENTSOF(fuzz_varlink_repeat_units)) {
		s->overflow = true;
		return;
	}
	seed_op(s, FUZZ_VARLINK_REPEAT, NO_FDS, turns);
	seed_byte(s, (unsigned)(len - 1));
	seed_byte(s, (unsigned)(count - 1) | unit_index << FUZZ_VARLINK_REPEAT_UNIT_SHIFT);
	seed_put(s, pattern, len);
}

static void seed_emit(struct corpus *c, const char *name, const struct seed *s)
{
	if (s->overflow) {
		corpus_fail(c, "%s does not fit a seed", name);
		return;
	}
	corpus_write(c, name, s->bytes, s->len);
}

/* One message in one chunk; three turns answer anything that answers later. */
static const struct {
	const char *name;
	const char *text;
} single_calls[] = {
    /* Valid calls. */
    {"get-info", "{\"method\":\"org.varlink.service.GetInfo\"}"},
    {"get-info-empty-parameters", "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{}}"},
    {"describe-fuzz", "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
		      "\"parameters\":{\"interface\":\"io.banger.Fuzz\"}}"},
    {"describe-service", "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
			 "\"parameters\":{\"interface\":\"org.varlink.service\"}}"},
    {"describe-unknown", "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
			 "\"parameters\":{\"interface\":\"org.example.Nothing\"}}"},
    {"echo", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"value\":{\"s\":\"text\","
	     "\"i\":-42,\"f\":2.5e3,\"b\":true,\"n\":null,\"a\":[1,[2,{}]],\"o\":{\"k\":\"v\"}}}}"},
    {"echo-parameters-null", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":null}"},
    {"echo-unicode", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":"
		     "\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}}"},
    {"later", "{\"method\":\"io.banger.Fuzz.Later\",\"parameters\":{\"ticks\":2}}"},
    {"later-default", "{\"method\":\"io.banger.Fuzz.Later\"}"},
    {"later-oneway", "{\"method\":\"io.banger.Fuzz.Later\",\"oneway\":true}"},
    {"echo-oneway", "{\"method\":\"io.banger.Fuzz.Echo\",\"oneway\":true,\"parameters\":{}}"},
    {"stream-more",
     "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true,\"parameters\":{\"count\":3}}"},
    {"stream-more-now", "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true,"
			"\"parameters\":{\"count\":4,\"now\":true}}"},
    {"stream-more-oneway", "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true,"
			   "\"oneway\":true}"},
    {"stream-without-more", "{\"method\":\"io.banger.Fuzz.Stream\"}"},
    {"take-fd-none", "{\"method\":\"io.banger.Fuzz.TakeFd\"}"},
    /* Hostile ones. */
    {"empty-message", ""},
    {"not-an-object-array", "[\"method\",\"org.varlink.service.GetInfo\"]"},
    {"not-an-object-string", "\"org.varlink.service.GetInfo\""},
    {"not-an-object-number", "42"},
    {"not-an-object-null", "null"},
    {"not-json", "method=GetInfo"},
    {"trailing-garbage", "{\"method\":\"org.varlink.service.GetInfo\"} {}"},
    {"method-missing", "{\"parameters\":{}}"},
    {"method-not-a-string", "{\"method\":42}"},
    {"method-unknown", "{\"method\":\"io.banger.Fuzz.Nothing\"}"},
    {"method-unknown-interface", "{\"method\":\"org.example.Nothing.Method\"}"},
    {"method-without-dot", "{\"method\":\"GetInfo\"}"},
    {"method-trailing-dot", "{\"method\":\"io.banger.Fuzz.\"}"},
    {"method-long-non-ascii",
     "{\"method\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
     "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
     "\xc3\xa9\xc3\xa9.Method\"}"},
    {"more-not-a-bool", "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":\"yes\"}"},
    {"oneway-not-a-bool", "{\"method\":\"io.banger.Fuzz.Echo\",\"oneway\":1}"},
    {"upgrade", "{\"method\":\"io.banger.Fuzz.Echo\",\"upgrade\":true}"},
    {"parameters-array", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":[]}"},
    {"parameters-unknown-key",
     "{\"method\":\"io.banger.Fuzz.Later\",\"parameters\":{\"ticks\":1,\"extra\":1}}"},
    {"parameters-out-of-range",
     "{\"method\":\"io.banger.Fuzz.Later\",\"parameters\":{\"ticks\":99999999999999999999}}"},
    {"parameters-wrong-type",
     "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true,\"parameters\":{\"count\":1.5}}"},
    {"get-info-unknown-key",
     "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{\"x\":1}}"},
    {"describe-missing-interface", "{\"method\":\"org.varlink.service.GetInterfaceDescription\"}"},
    {"duplicate-keys",
     "{\"method\":\"io.banger.Fuzz.Echo\",\"method\":\"org.varlink.service.GetInfo\"}"},
    {"comments", "/* a call */ {\"method\" /* \"quoted\" [ { */ : \"io.banger.Fuzz.Echo\", "
		 "// \"to the end\" of the line\n \"parameters\": {\"v\": [1 /* ] */]}}"},
    {"nul-escape",
     "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"before\\u0000after\"}}"},
    {"nul-escape-in-key", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"k\\u0000\":1}}"},
    {"escaped-backslash-before-u", "{\"method\":\"io.banger.Fuzz.Echo\","
				   "\"parameters\":{\"s\":\"\\\\u0000\"}}"},
    {"invalid-utf8-string",
     "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"\xff\xfe\xc3\"}}"},
    {"invalid-utf8-method", "{\"method\":\"io.banger.Fuzz.\xc3\x28\"}"},
    {"lone-surrogate", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"\\ud800\"}}"},
    {"control-character", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"\x01\"}}"},
    {"nesting-at-limit", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"v\":"
			 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
			 "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}"},
    {"nesting-over-limit", "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"v\":"
			   "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
			   "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}"},
    {"nesting-in-string-only",
     "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":"
     "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}}"},
    {"unbalanced-closers", "]]]]}}}}{\"method\":\"org.varlink.service.GetInfo\"}"},
};

static void seed_single_calls(struct corpus *c, struct seed *s)
{
	for (size_t i = 0; i < ELEMENTSOF(single_calls); i++) {
		seed_begin(s, 0);
		seed_call(s, single_calls[i].text, NO_FDS, 3);
		seed_emit(c, single_calls[i].name, s);
	}
}

static const char get_info[] = "{\"method\":\"org.varlink.service.GetInfo\"}";
static const char later[] = "{\"method\":\"io.banger.Fuzz.Later\"}";
static const char stream[] = "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true}";
static const char describe_fuzz[] = "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
				    "\"parameters\":{\"interface\":\"io.banger.Fuzz\"}}";

/* Several calls in one chunk, answered in order, the asynchronous ones holding up the rest. */
static void seed_pipelined(struct corpus *c, struct seed *s)
{
	static const char calls[] =
	    "{\"method\":\"org.varlink.service.GetInfo\"}\0"
	    "{\"method\":\"io.banger.Fuzz.Later\",\"parameters\":{\"ticks\":1}}\0"
	    "{\"method\":\"io.banger.Fuzz.Echo\",\"oneway\":true}\0"
	    "{\"method\":\"io.banger.Fuzz.Stream\",\"more\":true,\"parameters\":{\"count\":2}}\0"
	    "{\"method\":\"io.banger.Fuzz.Nothing\"}\0"
	    "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"last\":true}}";

	seed_begin(s, 0);
	seed_send(s, calls, sizeof(calls), NO_FDS, 7);
	seed_emit(c, "pipelined", s);
}

/* One call a byte at a time, with a turn of the loop after each. */
static void seed_byte_by_byte(struct corpus *c, struct seed *s)
{
	seed_begin(s, 0);
	for (size_t i = 0; i <= strlen(get_info); i++)
		seed_send(s, get_info + i, 1, NO_FDS, 1);
	seed_emit(c, "byte-by-byte", s);
}

/* A message that never ends, then the same with the writer gone. */
static void seed_unterminated(struct corpus *c, struct seed *s)
{
	seed_begin(s, 0);
	seed_send(s, get_info, strlen(get_info), NO_FDS, 2);
	seed_emit(c, "unterminated", s);

	seed_begin(s, 0);
	seed_send(s, get_info, strlen(get_info), NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 2);
	seed_byte(s, 0);
	seed_emit(c, "unterminated-then-shutdown", s);
}

static void seed_nuls(struct corpus *c, struct seed *s)
{
	static const char two_nuls[] = "{\"method\":\"org.varlink.service.GetInfo\"}\0\0";

	seed_begin(s, 0);
	seed_send(s, two_nuls, sizeof(two_nuls), NO_FDS, 3);
	seed_emit(c, "two-nuls-in-a-row", s);
}

/*
 * fds with a call, from an admin (nobody else may send any): one, the most a
 * message may carry, one too many; with a method that takes none; sent ahead
 * of their call's bytes; more than the server queues while a call is open.
 */
static void seed_fds(struct corpus *c, struct seed *s)
{
	static const char take_last[] =
	    "{\"method\":\"io.banger.Fuzz.TakeFd\",\"parameters\":{\"index\":3}}";
	static const char take_past_end[] =
	    "{\"method\":\"io.banger.Fuzz.TakeFd\",\"parameters\":{\"index\":4}}";
	static const char take_first[] = "{\"method\":\"io.banger.Fuzz.TakeFd\"}";
	static const char echo[] = "{\"method\":\"io.banger.Fuzz.Echo\"}";

	seed_begin(s, ADMIN_0);
	seed_call(s, take_first, ONE_FD, 2);
	seed_emit(c, "take-fd", s);

	seed_begin(s, ADMIN_0);
	seed_call(s, take_last, MOST_FDS, 2);
	seed_call(s, take_past_end, MOST_FDS, 2);
	seed_emit(c, "take-fd-most", s);

	seed_begin(s, ADMIN_0);
	seed_call(s, take_first, TOO_MANY_FDS, 2);
	seed_emit(c, "take-fd-too-many", s);

	seed_begin(s, ADMIN_0);
	seed_call(s, get_info, MOST_FDS, 2);
	seed_emit(c, "fds-with-get-info", s);

	seed_begin(s, ADMIN_0);
	seed_call(s, echo, ONE_FD, 2);
	seed_emit(c, "fds-with-echo", s);

	seed_begin(s, ADMIN_0);
	seed_send(s, "{", 1, MOST_FDS, 1);
	seed_call(s, take_last + 1, NO_FDS, 2);
	seed_emit(c, "fds-ahead-of-their-call", s);

	/* A reader's fds: refused by the kernel (SO_PASSRIGHTS) or by the server. */
	seed_begin(s, 0);
	seed_call(s, take_first, ONE_FD, 2);
	seed_emit(c, "fds-from-reader", s);

	/*
	 * A call with an fd written right behind one without: one read takes both,
	 * and the fd cannot be told apart from the first call's.
	 */
	seed_begin(s, ADMIN_0);
	seed_call(s, echo, NO_FDS, 0);
	seed_call(s, take_first, ONE_FD, 3);
	seed_emit(c, "fd-pipelined-behind-a-call", s);

	seed_begin(s, ADMIN_0);
	seed_call(s, later, NO_FDS, 0);
	for (int i = 0; i < 5; i++)
		seed_send(s, " ", 1, MOST_FDS, 0);
	seed_call(s, take_first, NO_FDS, 4);
	seed_emit(c, "fds-queue-overflow", s);
}

/* Messages near and over the size limit, built by REPEAT so that the seeds stay small. */
static void seed_large(struct corpus *c, struct seed *s)
{
	static const char head[] = "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"";
	static const char tail[] = "\"}}";
	static const char nest_head[] =
	    "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"v\":";

	seed_begin(s, 0);
	seed_send(s, head, strlen(head), NO_FDS, 0);
	seed_repeat(s, "0123456789abcdef", 32, UNIT_LARGEST, 1);
	seed_call(s, tail, NO_FDS, 4);
	seed_emit(c, "huge-string", s);

	seed_begin(s, 0);
	seed_repeat(s, "a", 64, UNIT_LARGEST, 1);
	seed_repeat(s, "a", 1, UNIT_4_KIB, 2);
	seed_call(s, get_info, NO_FDS, 2);
	seed_emit(c, "over-the-limit", s);

	/* A message held back behind an open call, while more than the limit waits. */
	seed_begin(s, 0);
	seed_call(s, later, NO_FDS, 0);
	seed_send(s, head, strlen(head), NO_FDS, 0);
	seed_repeat(s, "x", 64, UNIT_LARGEST, 0);
	seed_call(s, tail, NO_FDS, 4);
	seed_emit(c, "over-the-limit-behind-a-call", s);

	seed_begin(s, 0);
	seed_send(s, nest_head, strlen(nest_head), NO_FDS, 0);
	seed_repeat(s, "[", 16, UNIT_4_KIB, 0);
	seed_repeat(s, "]", 16, UNIT_4_KIB, 0);
	seed_call(s, "}}", NO_FDS, 2);
	seed_emit(c, "deep-nesting-repeated", s);
}

/* Clients that leave with calls open: the cancel callbacks run and end them. */
static void seed_leaving(struct corpus *c, struct seed *s)
{
	seed_begin(s, 0);
	seed_call(s, stream, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 2);
	seed_byte(s, FUZZ_VARLINK_HANGUP_CLOSE);
	seed_emit(c, "stream-then-close", s);

	seed_begin(s, 0);
	seed_call(s, stream, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 2);
	seed_byte(s, 0);
	seed_emit(c, "stream-then-shutdown", s);

	seed_begin(s, 0);
	seed_call(s, later, NO_FDS, 0);
	seed_call(s, get_info, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 3);
	seed_byte(s, FUZZ_VARLINK_HANGUP_CLOSE);
	seed_emit(c, "later-then-close", s);

	seed_begin(s, 0);
	seed_call(s, stream, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_CLOSE_IDLE, NO_FDS, 2);
	seed_emit(c, "stream-then-close-idle", s);
}

/* A client that stops reading while the server writes more than its socket holds. */
static void seed_not_reading(struct corpus *c, struct seed *s)
{
	seed_begin(s, FUZZ_VARLINK_SETUP_SMALL_SNDBUF);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 0);
	for (int i = 0; i < 8; i++)
		seed_call(s, describe_fuzz, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 3);
	seed_emit(c, "not-reading", s);

	seed_begin(s, FUZZ_VARLINK_SETUP_SMALL_SNDBUF);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 0);
	for (int i = 0; i < 8; i++)
		seed_call(s, describe_fuzz, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 2);
	seed_byte(s, FUZZ_VARLINK_HANGUP_CLOSE);
	seed_emit(c, "not-reading-then-close", s);
}

/* Three clients at once, interleaved. */
static void seed_clients(struct corpus *c, struct seed *s)
{
	seed_begin(s, 0);
	seed_call(s, stream, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_call(s, later, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_send(s, get_info, 10, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 1);
	seed_byte(s, FUZZ_VARLINK_HANGUP_CLOSE);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_call(s, get_info + 10, NO_FDS, 3);
	seed_emit(c, "three-clients", s);
}

/*
 * Comments hiding what json_parse() must refuse, from the days it pre-scanned
 * the text without knowing comments (fixed in a105491): a `"` in a comment
 * turned the scan's idea of strings inside out. 458752 levels made
 * yajl_tree_free() overflow the stack in conn_dispatch(); 130 made a reply
 * deeper than any client takes (130 levels); the NUL reached every C string unseen.
 */
static void seed_comment_regressions(struct corpus *c, struct seed *s)
{
	static const char get_info_head[] =
	    "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{\"v\":/*\"*/";
	static const char echo_head[] =
	    "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"v\":/*\"*/";
	static const char hidden_nul[] =
	    "{\"method\":\"io.banger.Fuzz.Echo\","
	    "\"parameters\":{\"s\":/*\"*/\"visible\\u0000hidden\"/*\"*/}}";

	seed_begin(s, 0);
	seed_send(s, get_info_head, strlen(get_info_head), NO_FDS, 0);
	seed_repeat(s, "[", 28, UNIT_LARGEST, 0);
	seed_repeat(s, "]", 28, UNIT_LARGEST, 0);
	seed_call(s, "/*\"*/}}", NO_FDS, 3);
	seed_emit(c, "comment-hides-deep-nesting", s);

	seed_begin(s, 0);
	seed_send(s, echo_head, strlen(echo_head), NO_FDS, 0);
	seed_repeat(s, "[", 2, UNIT_64, 0);
	seed_repeat(s, "]", 2, UNIT_64, 0);
	seed_call(s, "/*\"*/}}", NO_FDS, 3);
	seed_emit(c, "comment-hides-nesting", s);

	seed_begin(s, 0);
	seed_call(s, hidden_nul, NO_FDS, 3);
	seed_emit(c, "comment-hides-nul", s);
}

/* The limits of fuzz_varlink_tight_limits(), each reached. */
static void seed_limits(struct corpus *c, struct seed *s)
{
	static const char echo_head[] =
	    "{\"method\":\"io.banger.Fuzz.Echo\",\"parameters\":{\"s\":\"";

	/* Readers in slots 0 and 1, an admin in 2; then a reader past the limits. */
	seed_begin(s, TIGHT | ADMIN_2);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 1);
	seed_call(s, get_info, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_HANGUP, NO_FDS, 2);
	seed_byte(s, FUZZ_VARLINK_HANGUP_CLOSE);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 1);
	seed_call(s, get_info, NO_FDS, 2);
	seed_emit(c, "tight-connections", s);

	/* Unread replies past the per-connection limit: throttled, then read and resumed. */
	seed_begin(s, TIGHT | SMALL_BUF);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 0);
	for (int i = 0; i < 8; i++)
		seed_call(s, describe_fuzz, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 4);
	seed_emit(c, "tight-output-throttled", s);

	/* Throttled, and no stall allowed: dropped at the next turn. */
	seed_begin(s, TIGHT | SMALL_BUF | FUZZ_VARLINK_SETUP_NO_STALL_WAIT);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 0);
	for (int i = 0; i < 16; i++)
		seed_call(s, describe_fuzz, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_TURN, NO_FDS, 2);
	seed_emit(c, "tight-output-stalled", s);

	/* One reply over twice the per-connection limit: dropped. */
	seed_begin(s, TIGHT | SMALL_BUF);
	seed_op(s, FUZZ_VARLINK_READING, NO_FDS, 0);
	seed_send(s, echo_head, strlen(echo_head), NO_FDS, 0);
	seed_repeat(s, "abcdefgh", 3, UNIT_4_KIB, 0);
	seed_call(s, "\"}}", NO_FDS, 3);
	seed_emit(c, "tight-output-dropped", s);

	/* Unparsed input over the total: a reader is dropped, an admin is not. */
	seed_begin(s, TIGHT);
	seed_send(s, echo_head, strlen(echo_head), NO_FDS, 0);
	seed_repeat(s, "x", 20, UNIT_4_KIB, 3);
	seed_emit(c, "tight-input-reader", s);

	seed_begin(s, TIGHT | ALL_ADMINS);
	seed_send(s, echo_head, strlen(echo_head), NO_FDS, 0);
	seed_repeat(s, "x", 20, UNIT_4_KIB, 1);
	seed_call(s, "\"}}", NO_FDS, 3);
	seed_emit(c, "tight-input-admin", s);
}

/* More calls in one chunk than a connection may start in one turn, with and without priorities. */
static void seed_turns(struct corpus *c, struct seed *s)
{
	char calls[SEED_MAX_BYTES / 2];
	size_t len = 0, n = strlen(get_info) + 1;

	for (int i = 0; i < 2 * VARLINK_CALLS_PER_TURN + 2 && len + n <= sizeof(calls); i++) {
		memcpy(calls + len, get_info, n);
		len += n;
	}
	seed_begin(s, 0);
	seed_send(s, calls, len, NO_FDS, 4);
	seed_emit(c, "calls-per-turn", s);

	seed_begin(s, FUZZ_VARLINK_SETUP_NO_PRIORITIES | ADMIN_0);
	seed_send(s, calls, len, NO_FDS, 1);
	seed_op(s, FUZZ_VARLINK_CLIENT, NO_FDS, 0);
	seed_call(s, later, NO_FDS, 4);
	seed_emit(c, "calls-per-turn-no-priorities", s);
}

static void write_seeds(struct corpus *c, void *scratch)
{
	struct seed *s = scratch;

	seed_single_calls(c, s);
	seed_pipelined(c, s);
	seed_byte_by_byte(c, s);
	seed_unterminated(c, s);
	seed_nuls(c, s);
	seed_fds(c, s);
	seed_large(c, s);
	seed_leaving(c, s);
	seed_not_reading(c, s);
	seed_clients(c, s);
	seed_comment_regressions(c, s);
	seed_limits(c, s);
	seed_turns(c, s);
}

int main(int argc, char **argv)
{
	return corpus_main(argc, argv, "make_varlink_corpus", sizeof(struct seed), write_seeds);
}
