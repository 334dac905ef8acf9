/*
 * A fixed-capacity string builder for log and audit lines. Appends never
 * overflow: what does not fit is cut and the line ends in "...".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define STRBUF_CAPACITY 2048

struct strbuf {
	char buf[STRBUF_CAPACITY];
	size_t len;
	bool truncated;
};

void strbuf_init(struct strbuf *sb);
void strbuf_appendf(struct strbuf *sb, const char *fmt, ...) _printf_(2, 3);
/* Append key="value" with quotes, backslashes and non-printable bytes escaped (logfmt). */
void strbuf_append_kv_quoted(struct strbuf *sb, const char *key, const char *value);
const char *strbuf_str(struct strbuf *sb);
