/*
 * The helper's audit trail: one structured (logfmt) line per request with
 * the request id, the client bangerd acted for, the operation, its
 * arguments, result, errno and duration. Lines go to stderr (journald
 * keeps them with the unit) and, when configured, to an append-only file.
 * Never skips a line on an error path: the handlers call audit_finish() on
 * every path before they reply.
 */
#include <string.h>
#include <time.h>

#include "helper.h"
#include "log.h"

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void audit_start(struct audit_record *a, uint64_t request_id, const struct ps_caller *caller,
		 const char *op)
{
	a->request_id = request_id;
	a->caller = caller;
	a->op = op;
	a->started_us = now_us();
	strbuf_init(&a->args);
}

static void audit_write(struct helper *h, const char *line)
{
	log_notice("audit %s", line);
	if (h->audit_fd < 0)
		return;

	char stamp[64];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%06ldZ", ts.tv_nsec / 1000);

	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_appendf(&sb, "ts=%s %s\n", stamp, line);
	const char *s = strbuf_str(&sb);
	if (sb.truncated)
		sb.buf[sb.len - 1] = '\n';
	/* O_APPEND: each line is one write, so concurrent writers cannot interleave. */
	if (write(h->audit_fd, s, strlen(s)) < 0)
		log_warn("audit log write failed");
}

void audit_finish(struct helper *h, struct audit_record *a, const char *result, const char *reason,
		  int err)
{
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_appendf(&sb, "req=%llu", (unsigned long long)a->request_id);
	if (a->caller) {
		strbuf_appendf(&sb, " caller_uid=%u caller_gid=%u caller_pid=%d", a->caller->uid,
			       a->caller->gid, a->caller->pid);
		strbuf_append_kv_quoted(&sb, "caller", a->caller->what);
	}
	strbuf_appendf(&sb, " op=%s", a->op);
	if (a->args.len > 0)
		strbuf_appendf(&sb, " %s", strbuf_str(&a->args));
	strbuf_appendf(&sb, " result=%s", result);
	if (reason)
		strbuf_appendf(&sb, " reason=%s", reason);
	const char *errname = err ? strerrorname_np(-err) : NULL;
	strbuf_appendf(&sb, " errno=%s", errname ? errname : "0");
	strbuf_appendf(&sb, " dur_us=%llu", (unsigned long long)(now_us() - a->started_us));
	audit_write(h, strbuf_str(&sb));
}

void audit_violation(struct helper *h, const char *why)
{
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_appendf(&sb, "op=violation result=fatal");
	strbuf_append_kv_quoted(&sb, "violation", why);
	audit_write(h, strbuf_str(&sb));
}
