/*
 * PROBE and SCAN: the helper's read-only look at firecracker processes.
 * Both report a process only when its executable is a firecracker name of
 * the policy and its api socket (resolved as the host sees it) lies under
 * an api socket root; both hand back pidfds opened before /proc was read,
 * so that bangerd watches exactly the process that was verified. Never
 * signals or changes any process.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "helper.h"
#include "log.h"
#include "path.h"
#include "procfs.h"

static void probe_judge(const struct ps_policy *policy, const struct ps_probe *q, int pidfd,
			pid_t pid, struct ps_probe_reply *rep)
{
	struct proc_facts f;
	int r = proc_inspect(policy, pid, &f);

	rep->pid = pid;
	rep->status = PS_PROBE_NOT_RUNNING;
	if (r == -ESRCH) {
		rep->reason = PS_REASON_NO_PROCESS;
	} else if (r < 0) {
		rep->status = PS_PROBE_FAILED;
		rep->err = r;
	} else if (!f.is_firecracker) {
		rep->reason = PS_REASON_NOT_FIRECRACKER;
	} else if (!f.has_api_sock || strcmp(f.api_sock, q->api_sock) != 0) {
		rep->reason = PS_REASON_API_SOCK_MISMATCH;
	} else if (q->start_time != 0 && q->start_time != f.start_time) {
		rep->reason = PS_REASON_START_TIME_MISMATCH;
	} else if (pidfd_has_exited(pidfd)) {
		/* The facts may belong to a successor that reused the pid. */
		rep->reason = PS_REASON_EXITED_DURING_PROBE;
	} else {
		rep->status = PS_PROBE_RUNNING;
		rep->start_time = f.start_time;
	}
}

int asroot_probe(struct helper *h, struct ps_message *m, char *why, size_t why_size)
{
	(void)why;
	(void)why_size;
	const struct ps_probe *q = &m->payload.probe;
	struct ps_probe_reply rep = {.status = PS_PROBE_NOT_RUNNING};
	struct audit_record a;
	_cleanup_close_ int pidfd = -1;
	pid_t pid = q->pid;

	audit_start(&a, m->header.request_id, &q->caller, "probe");
	strbuf_appendf(&a.args, "pid=%d pidfd=%s start_time=%llu", q->pid,
		       (q->flags & PS_PROBE_HAS_PIDFD) ? "yes" : "no",
		       (unsigned long long)q->start_time);
	strbuf_append_kv_quoted(&a.args, "api_sock", q->api_sock);

	if (q->flags & PS_PROBE_HAS_PIDFD) {
		/* The pidfd names the process; a pid in the payload is not trusted. */
		pidfd = ps_message_take_fd(m, 0);
		int p = pidfd_get_pid(pidfd);
		if (p > 0)
			pid = p;
		else if (p == -ESRCH)
			rep.reason = PS_REASON_NO_PROCESS;
		else
			rep.reason = PS_REASON_PIDFD_INVALID;
		if (p > 0)
			strbuf_appendf(&a.args, " pidfd_pid=%d", p);
	}

	if (!policy_api_sock_allowed(&h->policy, q->api_sock)) {
		rep.status = PS_PROBE_REFUSED;
		rep.reason = PS_REASON_OUTSIDE_ROOTS;
	} else if (rep.reason == PS_REASON_NONE) {
		if (pidfd < 0)
			pidfd = pidfd_open_pid(pid);
		if (pidfd == -ESRCH)
			rep.reason = PS_REASON_NO_PROCESS;
		else if (pidfd < 0)
			rep.status = PS_PROBE_FAILED, rep.err = pidfd;
		else
			probe_judge(&h->policy, q, pidfd, pid, &rep);
	}
	if (rep.status != PS_PROBE_RUNNING)
		pidfd = safe_close(pidfd);

	audit_finish(h, &a, ps_probe_status_name(rep.status),
		     rep.reason ? ps_reason_name(rep.reason) : NULL, rep.err);
	return ps_send(h->sock, PS_PROBE_REPLY, m->header.request_id, &rep, sizeof(rep),
		       pidfd >= 0 ? &pidfd : NULL, pidfd >= 0 ? 1 : 0);
}

/* --- SCAN --------------------------------------------------------------- */

struct socket_entry {
	const char *path; /* points into the scan request */
	uint32_t index;
	bool matched;
	UT_hash_handle hh;
};

struct scan_hit {
	struct ps_scan_entry entry;
	int pidfd;
};

struct scan_result {
	struct scan_hit *hits;
	size_t count, capacity;
	uint32_t uninspected;
	size_t matched, orphans;
};

static void scan_result_free(struct scan_result *res)
{
	for (size_t i = 0; i < res->count; i++)
		safe_close(res->hits[i].pidfd);
	free(res->hits);
}

static int scan_result_add(struct scan_result *res, const struct proc_facts *f, uint32_t kind,
			   uint32_t index, int pidfd)
{
	if (res->count == res->capacity) {
		size_t cap = res->capacity ? 2 * res->capacity : 64;
		struct scan_hit *n = realloc(res->hits, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		res->hits = n;
		res->capacity = cap;
	}
	struct scan_hit *hit = &res->hits[res->count++];
	memset(&hit->entry, 0, sizeof(hit->entry));
	hit->entry.kind = kind;
	hit->entry.index = kind == PS_SCAN_MATCH ? index : 0;
	hit->entry.pid = f->pid;
	hit->entry.start_time = f->start_time;
	hit->entry.has_pidfd = pidfd >= 0;
	/* An orphan's path may be longer than a bindable socket path; cut it to report it anyway.
	 */
	size_t n = strnlen(f->api_sock, sizeof(hit->entry.api_sock) - 1);
	memcpy(hit->entry.api_sock, f->api_sock, n);
	hit->pidfd = pidfd;
	if (kind == PS_SCAN_MATCH)
		res->matched++;
	else
		res->orphans++;
	return 0;
}

/* Look at one /proc entry; adds at most one hit. */
static int scan_one(const struct ps_policy *policy, int proc_fd, pid_t pid,
		    struct socket_entry *table, struct scan_result *res)
{
	char name[16];
	bool is_fc;
	struct proc_facts f;

	snprintf(name, sizeof(name), "%d", (int)pid);
	_cleanup_close_ int dirfd = openat(proc_fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return 0; /* exited since readdir */
	int r = proc_exe_is_firecracker(policy, dirfd, &is_fc);
	if (r == -EACCES || r == -EPERM) {
		/* Only a process that may be a firecracker makes the scan incomplete. */
		if (proc_comm_may_be_firecracker(policy, dirfd))
			res->uninspected++;
		return 0;
	}
	if (r < 0 || !is_fc)
		return 0;

	/* pidfd first, then the facts, then liveness: the order that makes pid reuse harmless. */
	_cleanup_close_ int pidfd = pidfd_open_pid(pid);
	if (pidfd < 0)
		return 0;
	r = proc_inspect(policy, pid, &f);
	if (r == -EACCES || r == -EPERM) {
		res->uninspected++;
		return 0;
	}
	if (r < 0 || !f.is_firecracker || !f.has_api_sock || pidfd_has_exited(pidfd))
		return 0;
	if (!policy_api_sock_allowed(policy, f.api_sock))
		return 0;

	struct socket_entry *e = NULL;
	HASH_FIND_STR(table, f.api_sock, e);
	if (e && !e->matched) {
		e->matched = true;
		r = scan_result_add(res, &f, PS_SCAN_MATCH, e->index, pidfd);
		if (r == 0)
			pidfd = -1; /* now owned by res */
		return r;
	}
	/* No record names it, or a second process claims a socket already matched. */
	return scan_result_add(res, &f, PS_SCAN_ORPHAN, 0, -1);
}

static int scan_walk(const struct ps_policy *policy, const struct scan_request *s,
		     struct scan_result *res)
{
	_cleanup_free_ struct socket_entry *entries =
	    calloc(s->count ? s->count : 1, sizeof(*entries));
	struct socket_entry *table = NULL;
	int r = 0;

	if (!entries)
		return -ENOMEM;
	for (size_t i = 0; i < s->count; i++) {
		struct socket_entry *dup = NULL;
		HASH_FIND_STR(table, s->sockets[i], dup);
		if (dup)
			continue; /* a duplicate socket in the request can only match once */
		entries[i].path = s->sockets[i];
		entries[i].index = (uint32_t)i;
		HASH_ADD_KEYPTR(hh, table, entries[i].path, strlen(entries[i].path), &entries[i]);
	}

	_cleanup_closedir_ DIR *proc = opendir("/proc");
	if (!proc) {
		r = negative_errno();
		goto out;
	}
	for (struct dirent *d; (d = readdir(proc));) {
		char *end;
		long pid = strtol(d->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		r = scan_one(policy, dirfd(proc), (pid_t)pid, table, res);
		if (r < 0)
			break;
	}
out:
	HASH_CLEAR(hh, table);
	return r;
}

static int scan_reply_send(struct helper *h, uint64_t request_id, struct scan_result *res, int err)
{
	static struct ps_scan_reply rep; /* 8 KiB: kept off the stack */
	size_t off = 0;
	uint32_t part = 0;

	do {
		int fds[PS_SCAN_REPLY_MAX];
		size_t nfds = 0;
		memset(&rep, 0, sizeof(rep));
		rep.part = part++;
		rep.err = err;
		rep.uninspected = res->uninspected;
		for (; off < res->count && rep.count < PS_SCAN_REPLY_MAX; off++) {
			rep.entries[rep.count++] = res->hits[off].entry;
			if (res->hits[off].pidfd >= 0)
				fds[nfds++] = res->hits[off].pidfd;
		}
		if (off == res->count)
			rep.flags = PS_SCAN_LAST;
		int r = ps_send(h->sock, PS_SCAN_REPLY, request_id, &rep, sizeof(rep), fds, nfds);
		if (r < 0)
			return r;
	} while (off < res->count);
	return 0;
}

void scan_request_reset(struct scan_request *s)
{
	free(s->sockets);
	memset(s, 0, sizeof(*s));
}

/* Collect one part; a part that does not continue the scan under way is a violation. */
static int scan_collect(struct scan_request *s, const struct ps_message *m, char *why,
			size_t why_size)
{
	const struct ps_scan *q = &m->payload.scan;

	if (q->part == 0 && !s->active) {
		s->sockets = calloc((size_t)q->nparts * PS_SCAN_PART_MAX, PS_SOCK_PATH_MAX);
		if (!s->sockets)
			return -ENOMEM;
		s->active = true;
		s->request_id = m->header.request_id;
		s->nparts = q->nparts;
		s->caller = q->caller;
	} else if (!s->active || q->part != s->next_part || q->nparts != s->nparts ||
		   m->header.request_id != s->request_id ||
		   memcmp(&q->caller, &s->caller, sizeof(q->caller)) != 0) {
		snprintf(why, why_size, "scan part %u/%u does not continue the scan under way",
			 q->part, q->nparts);
		return -EBADMSG;
	}
	memcpy(s->sockets[s->count], q->sockets, (size_t)q->count * PS_SOCK_PATH_MAX);
	s->count += q->count;
	s->next_part = q->part + 1;
	return 0;
}

int asroot_scan(struct helper *h, struct ps_message *m, char *why, size_t why_size)
{
	struct scan_request *s = &h->scan;
	struct scan_result res = {0};
	struct audit_record a;

	int r = scan_collect(s, m, why, why_size);
	if (r < 0)
		return r;
	if (s->next_part < s->nparts)
		return 0; /* more parts to come; the reply follows the last one */

	audit_start(&a, s->request_id, &s->caller, "scan");
	strbuf_appendf(&a.args, "sockets=%zu parts=%u", s->count, s->nparts);
	int err = scan_walk(&h->policy, s, &res);
	strbuf_appendf(&a.args, " matched=%zu orphans=%zu uninspected=%u", res.matched, res.orphans,
		       res.uninspected);
	audit_finish(h, &a, err ? "failed" : "ok", NULL, err);
	r = scan_reply_send(h, s->request_id, &res, err);
	scan_result_free(&res);
	scan_request_reset(s);
	return r;
}
