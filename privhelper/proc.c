/*
 * PROBE and SCAN: the helper's read-only look at firecracker processes.
 *
 * One rule for both (DESIGN §4): a process IS the firecracker of api
 * socket S only if its executable has a policy name AND it holds the
 * listening socket bound to S's node, where S's node is what S names as
 * the host sees it: opened beneath its api-socket root, no symlinks, in the
 * helper's own mount namespace. What the process says of itself (argv,
 * its root, its mount namespace) is never consulted. Two processes that
 * hold the same listener are reported as ambiguous, never as a match.
 *
 * Both hand back pidfds opened before /proc was read, so that bangerd
 * watches exactly the process that was verified. Never signals or changes
 * any process.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "array.h"
#include "beneath.h"
#include "helper.h"
#include "log.h"
#include "path.h"
#include "procfs.h"
#include "unixsock.h"

/*
 * The node api socket path names, opened beneath its root as the host sees
 * it. roots: the policy's api socket roots already open (a scan opens them
 * once for all its sockets), or NULL.
 */
static int api_sock_node(const struct ps_policy *policy, const int *roots, const char *path,
			 struct unix_node *node)
{
	for (uint32_t i = 0; i < policy->n_api_sock_roots; i++) {
		const char *root = policy->api_sock_roots[i];
		if (!path_is_under(path, root) || strcmp(path, root) == 0)
			continue;
		_cleanup_close_ int fd = open_beneath_at(roots ? roots[i] : -1, root, path, O_PATH);
		if (fd < 0)
			return fd;
		return unix_node_of_fd(fd, node);
	}
	return -EXDEV;
}

/* Errors that say there is no such socket (so nobody can serve it), not that we cannot tell. */
static bool no_such_socket(int err)
{
	return err == -ENOENT || err == -ENOTDIR || err == -ELOOP || err == -EXDEV ||
	       err == -ENOTSOCK;
}

/* --- PROBE ---------------------------------------------------------------- */

struct holder_check {
	struct listener_table *listeners;
	const struct unix_node *node;
};

static int check_socket(uint64_t sock_ino, void *userdata)
{
	struct holder_check *c = userdata;
	const struct unix_listener *l = listener_table_find(c->listeners, sock_ino);
	return l && unix_node_equal(&l->node, c->node);
}

/* Does the process hold the listener bound to the api socket's node? 0, a reason, or -errno. */
static int probe_listener(struct helper *h, int dirfd, const char *api_sock)
{
	struct listener_table listeners = {0};
	struct unix_node node;
	struct holder_check c = {&listeners, &node};

	int r = api_sock_node(&h->policy, NULL, api_sock, &node);
	if (r == 0)
		r = listener_table_cover(&listeners, &h->netns, dirfd);
	if (r == 0)
		r = proc_for_each_socket(dirfd, 0, check_socket, &c);
	listener_table_free(&listeners);
	if (r == 1)
		return 0;
	return r == 0 || no_such_socket(r) ? PS_REASON_NO_LISTENER : r;
}

/*
 * The facts of pid, in the pid-reuse-safe order (its pidfd is open): 0
 * when it is q's firecracker (rep gets its start time), a reason, or -errno.
 */
static int probe_facts(struct helper *h, const struct ps_probe *q, int pidfd, pid_t pid,
		       struct ps_probe_reply *rep)
{
	uint64_t start_time;
	bool is_fc;

	rep->pid = pid;
	_cleanup_close_ int dirfd = proc_open_dir(pid);
	if (dirfd < 0)
		return dirfd;
	int r = proc_exe_is_firecracker(&h->policy, dirfd, &is_fc);
	if (r < 0 || !is_fc)
		return r < 0 ? r : PS_REASON_NOT_FIRECRACKER;
	r = proc_start_time(dirfd, &start_time);
	if (r < 0)
		return r;
	if (q->start_time != 0 && q->start_time != start_time)
		return PS_REASON_START_TIME_MISMATCH;
	r = probe_listener(h, dirfd, q->api_sock);
	if (r == 0 && pidfd_has_exited(pidfd))
		return PS_REASON_EXITED_DURING_PROBE; /* the facts may be a successor's */
	if (r == 0)
		rep->start_time = start_time;
	return r;
}

/* The reply for r: 0 running, a reason (or ESRCH) not running or refused, another -errno failed. */
static void probe_reply_set(struct ps_probe_reply *rep, int r)
{
	if (r == 0) {
		rep->status = PS_PROBE_RUNNING;
	} else if (r < 0 && r != -ESRCH) {
		rep->status = PS_PROBE_FAILED;
		rep->err = r;
	} else {
		rep->status =
		    r == PS_REASON_OUTSIDE_ROOTS ? PS_PROBE_REFUSED : PS_PROBE_NOT_RUNNING;
		rep->reason = r > 0 ? r : PS_REASON_NO_PROCESS;
	}
}

int asroot_probe(struct helper *h, struct asroot_call *c)
{
	const struct ps_probe *q = &c->m->payload.probe;
	struct ps_probe_reply *rep = &c->reply.probe;
	_cleanup_close_ int pidfd = -1;
	pid_t pid = q->pid;
	int r;

	strbuf_appendf(&c->args, "pid=%d pidfd=%s start_time=%llu", q->pid,
		       (q->flags & PS_PROBE_HAS_PIDFD) ? "yes" : "no",
		       (unsigned long long)q->start_time);
	strbuf_append_kv_quoted(&c->args, "api_sock", q->api_sock);
	audit_field(c, "BANGER_API_SOCK", q->api_sock);
	if (q->flags & PS_PROBE_HAS_PIDFD) {
		/* The pidfd names the process; a pid in the payload is not trusted. */
		pidfd = ps_message_take_fd(c->m, 0);
		pid = pidfd_get_pid(pidfd);
		if (pid > 0)
			strbuf_appendf(&c->args, " pidfd_pid=%d", pid);
	}

	if (!policy_api_sock_allowed(&h->policy, q->api_sock)) {
		r = PS_REASON_OUTSIDE_ROOTS;
	} else if (pid <= 0) {
		r = pid == -ESRCH ? pid : PS_REASON_PIDFD_INVALID;
	} else {
		if (pidfd < 0)
			pidfd = pidfd_open_pid(pid);
		r = pidfd < 0 ? pidfd : probe_facts(h, q, pidfd, pid, rep);
	}
	probe_reply_set(rep, r);
	if (r == 0)
		c->fds[c->nfds++] = TAKE_FD(pidfd);
	c->result = ps_probe_status_name(rep->status);
	c->reason = rep->reason ? ps_reason_name(rep->reason) : NULL;
	c->err = rep->err;
	return 0;
}

/* --- SCAN ------------------------------------------------------------------ */

/* What one firecracker holds, while its fds are read. */
struct holdings {
	const struct scan_request *s; /* wanted[], sorted by node */
	struct listener_table *listeners;
	const struct wanted_socket *wanted[PS_SCAN_PROCESS_MAX_MATCHES];
	size_t n_wanted;
	const struct unix_listener *others[PS_SCAN_PROCESS_MAX_MATCHES];
	size_t n_others;
};

static int compare_nodes(const void *a, const void *b)
{
	const struct unix_node *x = &((const struct wanted_socket *)a)->node;
	const struct unix_node *y = &((const struct wanted_socket *)b)->node;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* A new entry of the answer, all zero but kind and index; it owns pidfd (closed on ENOMEM). */
static struct ps_scan_entry *scan_hit_add(struct scan_request *s, uint32_t kind, uint32_t index,
					  int pidfd)
{
	if (grow_array(&s->hits, &s->hits_capacity, s->n_hits + 1, sizeof(*s->hits), 64) < 0) {
		safe_close(pidfd);
		return NULL;
	}
	struct scan_hit *hit = &s->hits[s->n_hits++];
	hit->entry = (struct ps_scan_entry){.kind = kind, .index = index, .has_pidfd = pidfd >= 0};
	hit->pidfd = pidfd;
	return &hit->entry;
}

/* The same listener in two of its fds (a dup) is one holding, not two claimants. */
static bool holds_already(const struct holdings *p, const struct wanted_socket *w)
{
	for (size_t i = 0; i < p->n_wanted; i++)
		if (p->wanted[i] == w)
			return true;
	return false;
}

/* Each socket the process holds: a wanted listener, another listener, or nothing of ours. */
static int note_socket(uint64_t sock_ino, void *userdata)
{
	struct holdings *p = userdata;
	const struct scan_request *s = p->s;
	const struct unix_listener *l = listener_table_find(p->listeners, sock_ino);
	if (!l)
		return 0;
	struct wanted_socket key = {.node = l->node};
	const struct wanted_socket *hit =
	    s->count ? bsearch(&key, s->wanted, s->count, sizeof(key), compare_nodes) : NULL;
	if (!hit) {
		if (p->n_others < PS_SCAN_PROCESS_MAX_MATCHES)
			p->others[p->n_others++] = l;
		return 0;
	}
	/* Every request entry with this node: neighbours in the sorted array. */
	while (hit > s->wanted && compare_nodes(hit - 1, &key) == 0)
		hit--;
	for (; hit < s->wanted + s->count && compare_nodes(hit, &key) == 0; hit++)
		if (p->n_wanted < PS_SCAN_PROCESS_MAX_MATCHES && !holds_already(p, hit))
			p->wanted[p->n_wanted++] = hit;
	return 0;
}

/*
 * Where, under the roots, is this listener's node? The name it was bound
 * by is only a hint: as given (absolute), or under the process's root (a
 * jailer chroot). A hint counts only when opening it beneath a root, here,
 * gives the very node.
 */
static bool orphan_path(const struct ps_policy *policy, int proc_dirfd,
			const struct unix_listener *l, char *path, size_t size)
{
	char root[PS_PATH_MAX];
	struct unix_node node;
	if (!l->name || l->name[0] != '/')
		return false;
	for (int i = 0; i < 2; i++) {
		if (i == 0)
			snprintf(path, size, "%s", l->name);
		else if (proc_readlink(proc_dirfd, "root", root, sizeof(root)) < 0 ||
			 strcmp(root, "/") == 0 ||
			 snprintf(path, size, "%s%s", root, l->name) >= (int)size)
			return false;
		if (api_sock_node(policy, NULL, path, &node) == 0 &&
		    unix_node_equal(&node, &l->node))
			return true;
	}
	return false;
}

/*
 * What a firecracker holds, as hits: one per wanted socket it listens on
 * (ambiguous when the request names that node twice), or one orphan.
 */
static int scan_holdings(struct helper *h, const struct holdings *p, int proc_dirfd, pid_t pid,
			 uint64_t start_time, int pidfd)
{
	struct ps_scan_entry *e;
	char path[PATH_MAX];

	for (size_t i = 0; i < p->n_wanted; i++) {
		int fd = fcntl(pidfd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			return negative_errno();
		e = scan_hit_add(&h->scan, p->wanted[i]->twice ? PS_SCAN_AMBIGUOUS : PS_SCAN_MATCH,
				 p->wanted[i]->index, fd);
		if (!e)
			return -ENOMEM;
		e->pid = pid;
		e->start_time = start_time;
	}
	for (size_t i = 0; p->n_wanted == 0 && i < p->n_others; i++) {
		if (!orphan_path(&h->policy, proc_dirfd, p->others[i], path, sizeof(path)))
			continue;
		e = scan_hit_add(&h->scan, PS_SCAN_ORPHAN, 0, -1);
		if (!e)
			return -ENOMEM;
		e->pid = pid;
		e->start_time = start_time;
		/* An orphan's path may be longer than a bindable one; cut it to report it anyway.
		 */
		memcpy(e->api_sock, path, strnlen(path, sizeof(e->api_sock) - 1));
		return 0;
	}
	return 0;
}

/* Out of time: stop the walk; whatever it has not looked at may be any VM's firecracker. */
static void scan_cut_short(struct scan_request *s)
{
	s->cut_short = true;
	s->uninspected++;
}

/* Look at one /proc entry. */
static int scan_one(struct helper *h, struct listener_table *listeners, pid_t pid)
{
	struct holdings p = {.s = &h->scan, .listeners = listeners};
	uint64_t start_time;
	bool is_fc;

	_cleanup_close_ int dirfd = proc_open_dir(pid);
	if (dirfd < 0)
		return 0; /* exited since readdir */
	int r = proc_exe_is_firecracker(&h->policy, dirfd, &is_fc);
	if (r == -EACCES || r == -EPERM) {
		/* Only a process that may be a firecracker makes the scan incomplete. */
		if (proc_comm_may_be_firecracker(&h->policy, dirfd))
			h->scan.uninspected++;
		return 0;
	}
	if (r < 0 || !is_fc)
		return 0;

	/* pidfd first, then the facts, then liveness: the order that makes pid reuse harmless. */
	_cleanup_close_ int pidfd = pidfd_open_pid(pid);
	if (pidfd < 0 || proc_start_time(dirfd, &start_time) < 0)
		return 0;
	r = listener_table_cover(listeners, &h->netns, dirfd);
	if (r == 0)
		r = proc_for_each_socket(dirfd, h->scan.deadline_ns, note_socket, &p);
	if (r == -ETIME) {
		scan_cut_short(&h->scan); /* this process too: it may be the one */
		return 0;
	}
	if (r == -ESRCH || pidfd_has_exited(pidfd))
		return 0;
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		/* A firecracker whose sockets we cannot see may serve any of them. */
		h->scan.uninspected++;
		return 0;
	}
	return scan_holdings(h, &p, dirfd, pid, start_time, pidfd);
}

static int scan_proc(struct helper *h)
{
	struct listener_table listeners = {0};
	int r = 0;

	_cleanup_closedir_ DIR *proc = opendir("/proc");
	if (!proc)
		return negative_errno();
	for (struct dirent *d; r == 0 && !h->scan.cut_short && (d = readdir(proc));) {
		char *end;
		long pid = strtol(d->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		if (monotonic_ns() >= h->scan.deadline_ns)
			scan_cut_short(&h->scan);
		else
			r = scan_one(h, &listeners, (pid_t)pid);
	}
	listener_table_free(&listeners);
	return r;
}

static int compare_hits(const void *a, const void *b)
{
	const struct ps_scan_entry *x = &((const struct scan_hit *)a)->entry;
	const struct ps_scan_entry *y = &((const struct scan_hit *)b)->entry;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * A socket held by more than one process, or named by more than one
 * request entry, adopts nobody: every claimant is reported ambiguous,
 * without a pidfd, and named in the audit line.
 */
static void scan_mark_ambiguous(struct scan_request *s, struct strbuf *audit)
{
	if (s->n_hits)
		qsort(s->hits, s->n_hits, sizeof(*s->hits), compare_hits);
	for (size_t i = 0, j; i < s->n_hits; i = j) {
		const struct ps_scan_entry *e = &s->hits[i].entry;
		for (j = i + 1; j < s->n_hits && compare_hits(&s->hits[i], &s->hits[j]) == 0; j++)
			;
		if (e->kind != PS_SCAN_AMBIGUOUS && (e->kind != PS_SCAN_MATCH || j - i == 1))
			continue;
		strbuf_appendf(audit, " conflict=%u:", e->index);
		for (size_t k = i; k < j; k++) {
			s->hits[k].entry.kind = PS_SCAN_AMBIGUOUS;
			s->hits[k].entry.has_pidfd = 0;
			s->hits[k].pidfd = safe_close(s->hits[k].pidfd);
			strbuf_appendf(audit, "%s%d", k > i ? "," : "", s->hits[k].entry.pid);
		}
	}
}

int asroot_scan_send(struct helper *h, struct asroot_call *c)
{
	struct scan_request *s = &h->scan;
	struct ps_scan_reply *rep = &c->reply.scan;
	size_t off = 0;
	uint32_t part = 0;
	int r;

	do {
		int fds[PS_SCAN_REPLY_MAX];
		size_t nfds = 0;
		memset(rep, 0, sizeof(*rep));
		rep->part = part++;
		rep->err = s->err;
		rep->uninspected = s->uninspected;
		for (; !s->err && off < s->n_hits && rep->count < PS_SCAN_REPLY_MAX; off++) {
			rep->entries[rep->count++] = s->hits[off].entry;
			if (s->hits[off].pidfd >= 0)
				fds[nfds++] = s->hits[off].pidfd;
		}
		if (s->err || off == s->n_hits)
			rep->flags = PS_SCAN_LAST | (s->cut_short ? PS_SCAN_CUT_SHORT : 0);
		r = ps_send(h->sock, PS_SCAN_REPLY, s->request_id, rep, sizeof(*rep), fds, nfds);
	} while (r == 0 && !s->err && off < s->n_hits);
	scan_request_reset(s);
	return r;
}

void scan_request_reset(struct scan_request *s)
{
	for (size_t i = 0; i < s->n_hits; i++)
		safe_close(s->hits[i].pidfd);
	free(s->hits);
	free(s->wanted);
	memset(s, 0, sizeof(*s));
}

/*
 * Resolve each socket of a part to its node now: the request keeps nodes,
 * never paths. A socket that could not be looked at is answered unknown.
 */
static int scan_want(struct scan_request *s, const struct ps_policy *policy,
		     const struct ps_scan *q)
{
	int roots[PS_POLICY_MAX_ROOTS], r = 0;

	/* Each root opened once for the part (-1 for one that cannot be: opened per path). */
	for (uint32_t i = 0; i < policy->n_api_sock_roots; i++)
		roots[i] = open(policy->api_sock_roots[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (uint32_t i = 0; r == 0 && i < q->count; i++) {
		struct wanted_socket *ws = &s->wanted[s->count];
		uint32_t index = q->part * PS_SCAN_PART_MAX + i;
		int err = api_sock_node(policy, roots, q->sockets[i], &ws->node);
		if (err == 0) {
			ws->index = index;
			s->count++;
		} else if (!no_such_socket(err)) {
			struct ps_scan_entry *e = scan_hit_add(s, PS_SCAN_UNKNOWN, index, -1);
			r = e ? 0 : -ENOMEM;
			if (e)
				e->err = err;
		}
	}
	for (uint32_t i = 0; i < policy->n_api_sock_roots; i++)
		safe_close(roots[i]);
	return r;
}

/* Collect one part; a part that does not continue the scan under way is a violation. */
static int scan_collect(struct helper *h, const struct ps_message *m, char *why, size_t why_size)
{
	struct scan_request *s = &h->scan;
	const struct ps_scan *q = &m->payload.scan;

	if (q->part == 0 && s->next_part == 0) {
		s->request_id = m->header.request_id;
		s->nparts = q->nparts;
		s->budget_ms = q->budget_ms;
		s->caller = q->caller;
		/* Room for every socket the parts may name (nparts is bounded by the decoder). */
		s->wanted = calloc((size_t)q->nparts * PS_SCAN_PART_MAX, sizeof(*s->wanted));
		s->err = s->wanted ? 0 : -ENOMEM;
	} else if (s->next_part == 0 || q->part != s->next_part || q->nparts != s->nparts ||
		   m->header.request_id != s->request_id || q->budget_ms != s->budget_ms ||
		   memcmp(&q->caller, &s->caller, sizeof(q->caller)) != 0) {
		return ps_violation(why, why_size,
				    "scan part %u/%u does not continue the scan under way", q->part,
				    q->nparts);
	}
	if (q->part + 1 < q->nparts && q->count != PS_SCAN_PART_MAX)
		return ps_violation(why, why_size, "scan part %u/%u is not full", q->part,
				    q->nparts);
	s->next_part = q->part + 1;
	s->sockets += q->count;
	if (s->err == 0)
		s->err = scan_want(s, &h->policy, q);
	return 0;
}

/* One /proc walk for every socket of the request; the hits stay in h->scan for the reply. */
static int scan_run(struct helper *h, struct strbuf *args)
{
	struct scan_request *s = &h->scan;
	size_t kinds[PS_SCAN_UNKNOWN + 1] = {0};

	if (s->err == 0 && s->count) { /* qsort(NULL, 0, ...) is undefined behaviour */
		qsort(s->wanted, s->count, sizeof(*s->wanted), compare_nodes);
		for (size_t i = 1; i < s->count; i++)
			if (compare_nodes(&s->wanted[i - 1], &s->wanted[i]) == 0)
				s->wanted[i - 1].twice = s->wanted[i].twice = true;
	}
	s->deadline_ns = monotonic_ns() + (uint64_t)s->budget_ms * 1000000u;
	if (s->err == 0)
		s->err = scan_proc(h);
	if (s->err == 0)
		scan_mark_ambiguous(s, args);
	for (size_t i = 0; i < s->n_hits; i++)
		kinds[s->hits[i].entry.kind]++;
	strbuf_appendf(args,
		       " matched=%zu orphans=%zu ambiguous=%zu unknown=%zu uninspected=%u "
		       "budget_ms=%u cut_short=%s",
		       kinds[PS_SCAN_MATCH], kinds[PS_SCAN_ORPHAN], kinds[PS_SCAN_AMBIGUOUS],
		       kinds[PS_SCAN_UNKNOWN], s->uninspected, s->budget_ms,
		       s->cut_short ? "yes" : "no");
	return s->err;
}

int asroot_scan(struct helper *h, struct asroot_call *c)
{
	struct scan_request *s = &h->scan;
	int r = scan_collect(h, c->m, c->why, c->why_size);
	if (r < 0)
		return r;
	if (s->next_part < s->nparts) {
		c->more = true; /* the answer follows the last part */
		return 0;
	}
	strbuf_appendf(&c->args, "sockets=%zu parts=%u", s->sockets, s->nparts);
	c->err = scan_run(h, &c->args);
	c->result = c->err ? "failed" : "ok";
	return 0;
}
