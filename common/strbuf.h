/*
 * A fixed-capacity string builder for log and audit lines. Appends never
 * overflow: what does not fit is cut and the line ends in "...". The
 * capacity holds the longest audit line a request can make (teardown.c
 * asserts it for the largest TEARDOWN, every byte escaped).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define STRBUF_CAPACITY 32768

struct strbuf {
	char buf[STRBUF_CAPACITY];
	size_t len;
	bool truncated;
};

void strbuf_init(struct strbuf *sb);
void strbuf_appendf(struct strbuf *sb, const char *fmt, ...) _printf_(2, 3);
/* Append key="value" with quotes, backslashes and non-printable bytes escaped (logfmt). */
void strbuf_append_kv_quoted(struct strbuf *sb, const char *key, const char *value);
/*
 * Append value with backslashes, non-printable bytes and every byte of specials as \xNN:
 * an item of a list that specials separate, which no value can then forge.
 */
void strbuf_append_escaped(struct strbuf *sb, const char *value, const char *specials);
const char *strbuf_str(struct strbuf *sb);
