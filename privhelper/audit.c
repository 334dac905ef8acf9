/*
 * The helper's audit trail: one structured (logfmt) line per request with
 * the request id, the client bangerd acted for (its uid, gid and pid,
 * bangerd's call id and the VM), the operation, its arguments, result,
 * errno and duration. Lines go to stderr (journald keeps them with the
 * unit) and, when configured, to an append-only file. When stderr is the
 * journal, the line is an entry whose fields say the same (BANGER_CALL,
 * BANGER_VM_ID, BANGER_OP, ...) under the operation's MESSAGE_ID, so that
 * `journalctl BANGER_VM_ID=vm7` shows the helper's acts among bangerd's. The dispatcher
 * writes the line for every request it answers, so none is ever skipped.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "helper.h"
#include "log.h"
#include "message_id.h"

uint64_t audit_clock_us(void)
{
	return monotonic_us();
}

static void audit_write(struct helper *h, const char *message_id, const struct log_field *fields,
			size_t n_fields, const char *line)
{
	log_struct(LOG_LEVEL_NOTICE, 0, message_id, fields, n_fields, "audit %s", line);
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

/* Every request starts with its caller (privsep.h), so any request's payload names it. */
static_assert(offsetof(struct ps_probe, caller) == 0 && offsetof(struct ps_scan, caller) == 0 &&
		  offsetof(struct ps_teardown, caller) == 0,
	      "caller first");

void audit_field(struct asroot_call *c, const char *name, const char *value)
{
	if (c->n_fields < ELEMENTSOF(c->fields))
		c->fields[c->n_fields++] = (struct log_field){name, value};
}

void audit_request(struct helper *h, const char *op, const char *message_id,
		   const struct asroot_call *c)
{
	const struct ps_caller *caller = &c->m->payload.hello.caller;
	struct strbuf sb;
	strbuf_init(&sb);
	/* call and vm are printable words (the decoder checked): they need no quoting. */
	strbuf_appendf(&sb, "req=%llu caller_uid=%u caller_gid=%u caller_pid=%d call=%s",
		       (unsigned long long)c->m->header.request_id, caller->uid, caller->gid,
		       caller->pid, caller->call[0] ? caller->call : "-");
	if (caller->vm[0])
		strbuf_appendf(&sb, " vm=%s", caller->vm);
	strbuf_appendf(&sb, " op=%s", op);
	if (c->args.len > 0)
		strbuf_appendf(&sb, " %s", c->args.buf);
	strbuf_appendf(&sb, " result=%s", c->result);
	if (c->reason)
		strbuf_appendf(&sb, " reason=%s", c->reason);
	const char *errname = c->err ? strerrorname_np(-c->err) : NULL;
	strbuf_appendf(&sb, " errno=%s dur_us=%llu", errname ? errname : "0",
		       (unsigned long long)(audit_clock_us() - c->started_us));

	char req[24], uid[12], gid[12], pid[12];
	snprintf(req, sizeof(req), "%llu", (unsigned long long)c->m->header.request_id);
	snprintf(uid, sizeof(uid), "%u", caller->uid);
	snprintf(gid, sizeof(gid), "%u", caller->gid);
	snprintf(pid, sizeof(pid), "%d", caller->pid);
	struct log_field fields[10 + ELEMENTSOF(c->fields)] = {
	    {"BANGER_HELPER_REQ", req},
	    {"BANGER_CALLER_UID", uid},
	    {"BANGER_CALLER_GID", gid},
	    {"BANGER_CALLER_PID", caller->pid > 0 ? pid : NULL},
	    {"BANGER_CALL", caller->call[0] ? caller->call : NULL},
	    {"BANGER_VM_ID", caller->vm[0] ? caller->vm : NULL},
	    {"BANGER_OP", op},
	    {"BANGER_RESULT", c->result},
	    {"BANGER_REASON", c->reason},
	    {"BANGER_ERRNO", errname ? errname : "0"},
	};
	size_t n = 10;
	for (size_t i = 0; i < c->n_fields; i++)
		fields[n++] = c->fields[i];
	audit_write(h, message_id, fields, n, strbuf_str(&sb));
}

void audit_violation(struct helper *h, const char *why)
{
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_appendf(&sb, "op=violation result=fatal");
	strbuf_append_kv_quoted(&sb, "violation", why);
	audit_write(h, BANGER_MID_HELPER_VIOLATION,
		    LOG_FIELDS({"BANGER_OP", "violation"}, {"BANGER_RESULT", "fatal"}),
		    strbuf_str(&sb));
}
