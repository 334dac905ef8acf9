/* See strbuf.h. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void strbuf_init(struct strbuf *sb)
{
	sb->len = 0;
	sb->buf[0] = '\0';
	sb->truncated = false;
}

static void strbuf_putc(struct strbuf *sb, char c)
{
	if (sb->len + 1 >= sizeof(sb->buf)) {
		sb->truncated = true;
		return;
	}
	sb->buf[sb->len++] = c;
	sb->buf[sb->len] = '\0';
}

void strbuf_appendf(struct strbuf *sb, const char *fmt, ...)
{
	size_t room = sizeof(sb->buf) - sb->len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sb->buf + sb->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= room) {
		sb->len = sizeof(sb->buf) - 1;
		sb->truncated = true;
	} else {
		sb->len += (size_t)n;
	}
}

void strbuf_append_kv_quoted(struct strbuf *sb, const char *key, const char *value)
{
	strbuf_appendf(sb, "%s%s=\"", sb->len > 0 ? " " : "", key);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\') {
			strbuf_putc(sb, '\\');
			strbuf_putc(sb, (char)*p);
		} else if (*p < 0x20 || *p >= 0x7f) {
			strbuf_appendf(sb, "\\x%02x", *p);
		} else {
			strbuf_putc(sb, (char)*p);
		}
	}
	strbuf_putc(sb, '"');
}

void strbuf_append_escaped(struct strbuf *sb, const char *value, const char *specials)
{
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '\\' || *p < 0x20 || *p >= 0x7f || strchr(specials, *p))
			strbuf_appendf(sb, "\\x%02x", *p);
		else
			strbuf_putc(sb, (char)*p);
	}
}

const char *strbuf_str(struct strbuf *sb)
{
	if (sb->truncated && sb->len >= 3)
		memcpy(sb->buf + sb->len - 3, "...", 3);
	return sb->buf;
}
