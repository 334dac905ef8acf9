/*
 * See helper_client.h. The socket is non-blocking; an outgoing queue keeps
 * request order when the helper is slower than we are, and the pending
 * list matches replies to requests by id. Anything the helper sends that
 * does not answer a pending request exactly is treated as the helper being
 * broken: it is dropped (declared dead), never trusted.
 *
 * Deadlines: the helper answers one request at a time, in order, so only
 * the oldest pending request can be late, and its clock starts when the
 * helper could start on it (when it was sent, or when the one before it was
 * answered): a probe queued behind a long teardown is not blamed for the
 * teardown's time. One timer watches that request. When it fires the
 * helper is stuck: the socket is dropped and every waiter is answered at
 * once, never left waiting for a helper that may never come back.
 */
#include "helper_client.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "path.h"
#include "policy.h"
#include "vm.h"

#ifndef CLOSE_RANGE_CLOEXEC
#include <linux/close_range.h>
#endif

#define HELPER_FD 3

/* Every VM id fits the request's vm field, so every audit line can name its VM. */
static_assert(VM_ID_MAX == PS_VM_ID_MAX, "a VM id fits struct ps_caller's vm");

extern char **environ;

struct outgoing {
	TAILQ_ENTRY(outgoing) link;
	uint16_t type;
	uint64_t request_id;
	int fd; /* our own dup of the fd to send, or -1 */
	size_t len;
	unsigned char payload[];
};

struct pending {
	TAILQ_ENTRY(pending) link;
	uint64_t request_id;
	enum helper_op op;
	uint64_t sent_ms; /* when the caller asked: how long it has waited */
	uint64_t head_ms; /* when it became the oldest unanswered: its deadline counts from here */
	uint16_t reply_type;
	helper_reply_cb cb;
	helper_scan_cb scan_cb;
	void *userdata;
	uint32_t next_part;
	size_t scan_capacity;
	struct helper_scan_result scan;
};

struct helper_client {
	struct event_base *base;
	int sock;
	pid_t pid;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_deadline; /* the oldest pending request's */
	unsigned deadline_ms[HELPER_N_OPS];
	TAILQ_HEAD(, outgoing) outq;
	TAILQ_HEAD(, pending) pending;
	size_t npending;
	uint64_t next_id;
	bool dead;
	char failure[384]; /* why it is dead */
	helper_dead_cb on_dead;
	void *userdata;
};

const char *helper_op_name(enum helper_op op)
{
	static const char *const names[] = {[HELPER_OP_HELLO] = "HELLO",
					    [HELPER_OP_PROBE] = "PROBE",
					    [HELPER_OP_SCAN] = "SCAN",
					    [HELPER_OP_TEARDOWN] = "TEARDOWN"};
	return (unsigned)op < ELEMENTSOF(names) ? names[op] : "?";
}

void describe_wait_status(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
			 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
	else
		snprintf(buf, size, "ended with wait status 0x%x", status);
}

/* Environment for the helper: ours, minus what systemd meant for bangerd alone. */
static char **helper_environment(void)
{
	static const char *const drop[] = {"LISTEN_FDS=",    "LISTEN_PID=",   "LISTEN_FDNAMES=",
					   "NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC="};
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 1, sizeof(char *));
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool keep = true;
		for (size_t j = 0; j < ELEMENTSOF(drop); j++)
			if (strncmp(environ[i], drop[j], strlen(drop[j])) == 0)
				keep = false;
		if (keep)
			env[k++] = environ[i];
	}
	return env;
}

/* The helper's argv: its path, the policy's flags, the audit log and log level. */
static void helper_argv(const char **argv, const char *helper_path, const struct ps_policy *policy,
			const char *audit_log, int log_level)
{
	size_t n = 0;
	argv[n++] = helper_path;
	n += policy_to_args(policy, argv + n, POLICY_MAX_ARGS);
	if (audit_log && audit_log[0]) {
		argv[n++] = "--audit-log";
		argv[n++] = audit_log;
	}
	if (log_level_name(log_level)) {
		argv[n++] = "--log-level";
		argv[n++] = log_level_name(log_level);
	}
	argv[n] = NULL;
}

/* In the child: our end of the socketpair on HELPER_FD, stdin /dev/null, nothing else; exec. */
static _Noreturn void helper_exec(int sock, const char *helper_path, const char *const *argv,
				  char **env)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (sock == HELPER_FD) {
		if (fcntl(HELPER_FD, F_SETFD, 0) < 0)
			_exit(127);
	} else if (dup2(sock, HELPER_FD) < 0) {
		_exit(127);
	}
	int devnull = open("/dev/null", O_RDONLY);
	if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0)
		_exit(127);
	/* Socket-activation fds and everything else stay with bangerd. */
	close_range(HELPER_FD + 1, ~0U, 0);
	execve(helper_path, (char *const *)argv, env);
	static const char msg[] = "<3>bangerd: cannot execute the helper\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)w;
	_exit(127);
}

int helper_spawn(const char *helper_path, const struct ps_policy *policy, const char *audit_log,
		 int log_level, pid_t *pid_out)
{
	const char *argv[POLICY_MAX_ARGS + 8];
	int sv[2];

	/* Everything the child needs is built before fork: it only execs. */
	helper_argv(argv, helper_path, policy, audit_log, log_level);
	_cleanup_free_ char **env = helper_environment();
	if (!env)
		return -ENOMEM;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return negative_errno();
	pid_t pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		safe_close(sv[0]);
		safe_close(sv[1]);
		return r;
	}
	if (pid == 0)
		helper_exec(sv[1], helper_path, argv, env);
	safe_close(sv[1]);
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
		int r = negative_errno();
		safe_close(sv[0]);
		return r;
	}
	*pid_out = pid;
	return sv[0];
}

int helper_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (field_set(sa.sun_path, sizeof(sa.sun_path), path) < 0)
		return -ENAMETOOLONG;
	/* Non-blocking from the start: an AF_UNIX connect then fails (EAGAIN) rather than waits. */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = negative_errno();
		close(fd);
		return r;
	}
	return fd;
}

static void scan_result_release(struct helper_scan_result *res)
{
	for (size_t i = 0; i < res->count; i++)
		safe_close(res->pidfds[i]);
	free(res->entries);
	free(res->pidfds);
	memset(res, 0, sizeof(*res));
}

static void pending_fail(struct pending *p, int err, const char *why, struct helper_client *hc)
{
	if (p->scan_cb) {
		scan_result_release(&p->scan);
		p->scan.err = err;
		p->scan.why = why;
		p->scan_cb(hc, &p->scan, p->userdata);
	} else if (p->cb) {
		struct helper_reply reply = {.err = err, .why = why};
		p->cb(hc, &reply, p->userdata);
	}
}

/*
 * No more requests: tell the owner first, then answer every waiter with
 * its own operation and wait in the reason. late is the request that
 * passed its deadline (how == HELPER_STUCK), or NULL.
 */
static void helper_fail(struct helper_client *hc, enum helper_failure how, const char *why,
			const struct pending *late)
{
	if (hc->dead)
		return;
	hc->dead = true;
	snprintf(hc->failure, sizeof(hc->failure), "%s", why);
	event_del(hc->ev_read);
	event_del(hc->ev_write);
	event_del(hc->ev_deadline);
	for (struct outgoing *o; (o = TAILQ_FIRST(&hc->outq));) {
		TAILQ_REMOVE(&hc->outq, o, link);
		safe_close(o->fd);
		free(o);
	}
	if (hc->on_dead)
		hc->on_dead(hc, how, hc->failure, hc->userdata);
	uint64_t now = monotonic_ms();
	for (struct pending *p; (p = TAILQ_FIRST(&hc->pending));) {
		char reason[512];
		TAILQ_REMOVE(&hc->pending, p, link);
		hc->npending--;
		if (p == late)
			snprintf(reason, sizeof(reason), "%s", hc->failure);
		else if (how == HELPER_STUCK)
			snprintf(reason, sizeof(reason),
				 "the helper did not answer %s (waited %llu ms): it is stuck (%s)",
				 helper_op_name(p->op), (unsigned long long)(now - p->sent_ms),
				 hc->failure);
		else
			snprintf(reason, sizeof(reason),
				 "the helper went away before answering %s (waited %llu ms): %s",
				 helper_op_name(p->op), (unsigned long long)(now - p->sent_ms),
				 hc->failure);
		pending_fail(p, how == HELPER_STUCK ? -ETIMEDOUT : -EPIPE, reason, hc);
		free(p);
	}
}

static void helper_declare_dead(struct helper_client *hc, const char *why)
{
	helper_fail(hc, HELPER_GONE, why, NULL);
}

void helper_client_declare_dead(struct helper_client *hc, const char *why)
{
	helper_declare_dead(hc, why);
}

const char *helper_client_failure(const struct helper_client *hc)
{
	return hc->dead ? hc->failure : NULL;
}

/* Watch the oldest pending request's deadline (or nothing, when none is pending). */
static void deadline_arm(struct helper_client *hc)
{
	struct pending *p = TAILQ_FIRST(&hc->pending);
	if (!p || hc->dead) {
		event_del(hc->ev_deadline);
		return;
	}
	uint64_t due = p->head_ms + hc->deadline_ms[p->op], now = monotonic_ms();
	uint64_t left = due > now ? due - now : 0;
	struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
	evtimer_add(hc->ev_deadline, &tv);
}

/* The oldest request is due: the helper is stuck, unless it answered in the meantime. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct helper_client *hc = arg;
	struct pending *p = TAILQ_FIRST(&hc->pending);
	char why[160];
	(void)fd;
	(void)what;

	if (!p || hc->dead)
		return;
	if (monotonic_ms() < p->head_ms + hc->deadline_ms[p->op]) {
		deadline_arm(hc);
		return;
	}
	snprintf(why, sizeof(why), "the helper did not answer %s within %u ms",
		 helper_op_name(p->op), hc->deadline_ms[p->op]);
	helper_fail(hc, HELPER_STUCK, why, p);
}

/* Send what the queue holds until the socket is full. */
static void helper_flush(struct helper_client *hc)
{
	for (struct outgoing *o; !hc->dead && (o = TAILQ_FIRST(&hc->outq));) {
		int r = ps_send(hc->sock, o->type, o->request_id, o->payload, o->len,
				o->fd >= 0 ? &o->fd : NULL, o->fd >= 0 ? 1 : 0);
		if (r == -EAGAIN) {
			event_add(hc->ev_write, NULL);
			return;
		}
		if (r < 0) {
			char why[128];
			snprintf(why, sizeof(why), "sending to the helper failed: %s",
				 strerror(-r));
			helper_declare_dead(hc, why);
			return;
		}
		TAILQ_REMOVE(&hc->outq, o, link);
		safe_close(o->fd);
		free(o);
	}
}

static int helper_enqueue(struct helper_client *hc, uint16_t type, uint64_t request_id,
			  const void *payload, size_t len, int fd)
{
	if (hc->dead)
		return -EPIPE;
	struct outgoing *o = malloc(sizeof(*o) + len);
	if (!o)
		return -ENOMEM;
	o->type = type;
	o->request_id = request_id;
	o->len = len;
	memcpy(o->payload, payload, len);
	o->fd = -1;
	if (fd >= 0) {
		o->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (o->fd < 0) {
			int r = negative_errno();
			free(o);
			return r;
		}
	}
	TAILQ_INSERT_TAIL(&hc->outq, o, link);
	helper_flush(hc);
	return 0;
}

static struct pending *pending_new(struct helper_client *hc, enum helper_op op, uint16_t reply_type)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->request_id = ++hc->next_id;
	p->op = op;
	p->reply_type = reply_type;
	p->sent_ms = monotonic_ms();
	return p;
}

static void pending_add(struct helper_client *hc, struct pending *p)
{
	bool first = TAILQ_EMPTY(&hc->pending);
	TAILQ_INSERT_TAIL(&hc->pending, p, link);
	hc->npending++;
	if (first) {
		p->head_ms = p->sent_ms;
		deadline_arm(hc);
	}
}

/* p is answered: the next one's clock starts now, as the helper can only now start on it. */
static void pending_remove(struct helper_client *hc, struct pending *p)
{
	bool was_first = p == TAILQ_FIRST(&hc->pending);
	TAILQ_REMOVE(&hc->pending, p, link);
	hc->npending--;
	struct pending *next = TAILQ_FIRST(&hc->pending);
	if (was_first && next)
		next->head_ms = monotonic_ms();
	if (was_first)
		deadline_arm(hc);
}

static int scan_append(struct pending *p, struct ps_message *m)
{
	const struct ps_scan_reply *r = &m->payload.scan_reply;
	struct helper_scan_result *res = &p->scan;
	size_t next_fd = 0;

	if (res->count + r->count > p->scan_capacity) {
		size_t cap = p->scan_capacity ? p->scan_capacity : 64;
		while (cap < res->count + r->count)
			cap *= 2;
		struct ps_scan_entry *e = realloc(res->entries, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		res->entries = e;
		int *fds = realloc(res->pidfds, cap * sizeof(*fds));
		if (!fds)
			return -ENOMEM;
		res->pidfds = fds;
		p->scan_capacity = cap;
	}
	for (uint32_t i = 0; i < r->count; i++) {
		res->entries[res->count] = r->entries[i];
		res->pidfds[res->count] =
		    r->entries[i].has_pidfd ? ps_message_take_fd(m, next_fd++) : -1;
		res->count++;
	}
	res->uninspected = r->uninspected;
	res->cut_short = (r->flags & PS_SCAN_CUT_SHORT) != 0;
	if (r->err < 0)
		res->err = r->err;
	return 0;
}

/* Deliver one reply. Returns 0, or -EBADMSG with why set if it answers nothing we asked. */
static int helper_deliver(struct helper_client *hc, struct ps_message *m, char *why, size_t size)
{
	struct pending *p;
	TAILQ_FOREACH(p, &hc->pending, link)
	if (p->request_id == m->header.request_id)
		break;
	if (!p) {
		snprintf(why, size, "helper answered request %llu, which is not pending",
			 (unsigned long long)m->header.request_id);
		return -EBADMSG;
	}
	if (p->reply_type != m->header.type) {
		snprintf(why, size, "helper answered request %llu with a %s",
			 (unsigned long long)p->request_id, ps_type_name(m->header.type));
		return -EBADMSG;
	}
	if (p->scan_cb) {
		if (m->payload.scan_reply.part != p->next_part++) {
			snprintf(why, size, "scan reply part out of order");
			return -EBADMSG;
		}
		if (scan_append(p, m) < 0) {
			snprintf(why, size, "out of memory collecting a scan");
			return -EBADMSG;
		}
		if (!(m->payload.scan_reply.flags & PS_SCAN_LAST))
			return 0;
	}
	pending_remove(hc, p);
	if (p->scan_cb) {
		p->scan_cb(hc, &p->scan, p->userdata);
		scan_result_release(&p->scan);
	} else if (p->cb) {
		struct helper_reply reply = {.msg = m};
		p->cb(hc, &reply, p->userdata);
	}
	free(p);
	return 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct helper_client *hc = arg;
	char why[512];
	(void)fd;
	(void)what;

	while (!hc->dead) {
		struct ps_message m;
		int r = ps_recv_reply(hc->sock, true, &m, why, sizeof(why));
		if (r == -EAGAIN)
			return;
		if (r == 0) {
			helper_declare_dead(hc, "the helper closed its socket");
			return;
		}
		if (r < 0) {
			char msg[600];
			snprintf(msg, sizeof(msg), "%s from the helper: %s",
				 r == -EBADMSG ? "protocol violation" : "receive error",
				 r == -EBADMSG ? why : strerror(-r));
			helper_declare_dead(hc, msg);
			return;
		}
		r = helper_deliver(hc, &m, why, sizeof(why));
		ps_message_close_fds(&m);
		if (r < 0)
			helper_declare_dead(hc, why);
	}
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	helper_flush(arg);
}

struct helper_client *helper_client_new(struct event_base *base, int sock, pid_t pid,
					const unsigned deadline_ms[HELPER_N_OPS],
					helper_dead_cb on_dead, void *userdata)
{
	struct helper_client *hc = calloc(1, sizeof(*hc));
	if (!hc)
		return NULL;
	hc->base = base;
	hc->sock = sock;
	hc->pid = pid;
	hc->on_dead = on_dead;
	hc->userdata = userdata;
	memcpy(hc->deadline_ms, deadline_ms, sizeof(hc->deadline_ms));
	TAILQ_INIT(&hc->outq);
	TAILQ_INIT(&hc->pending);
	hc->ev_read = event_new(base, sock, EV_READ | EV_PERSIST, on_readable, hc);
	hc->ev_write = event_new(base, sock, EV_WRITE, on_writable, hc);
	hc->ev_deadline = evtimer_new(base, on_deadline, hc);
	if (!hc->ev_read || !hc->ev_write || !hc->ev_deadline || event_add(hc->ev_read, NULL) < 0) {
		helper_client_free(hc);
		return NULL;
	}
	return hc;
}

void helper_client_free(struct helper_client *hc)
{
	if (!hc)
		return;
	hc->on_dead = NULL;
	if (!hc->dead && hc->ev_read && hc->ev_write && hc->ev_deadline)
		helper_declare_dead(hc, "bangerd is shutting down");
	if (hc->ev_read)
		event_free(hc->ev_read);
	if (hc->ev_write)
		event_free(hc->ev_write);
	if (hc->ev_deadline)
		event_free(hc->ev_deadline);
	safe_close(hc->sock);
	free(hc);
}

pid_t helper_client_pid(const struct helper_client *hc)
{
	return hc->pid;
}

size_t helper_client_pending(const struct helper_client *hc)
{
	return hc->npending;
}

/* Queue one request and remember who waits for its answer. */
static int helper_request(struct helper_client *hc, struct pending *p, uint16_t type,
			  const void *payload, size_t len, int fd)
{
	int r = helper_enqueue(hc, type, p->request_id, payload, len, fd);
	if (r < 0) {
		free(p);
		return r;
	}
	pending_add(hc, p);
	return 0;
}

int helper_hello(struct helper_client *hc, const struct ps_caller *caller, helper_reply_cb cb,
		 void *userdata)
{
	struct ps_hello q;
	struct pending *p = pending_new(hc, HELPER_OP_HELLO, PS_HELLO_REPLY);
	if (!p)
		return -ENOMEM;
	p->cb = cb;
	p->userdata = userdata;
	memset(&q, 0, sizeof(q));
	q.caller = *caller;
	q.protocol_version = PS_PROTOCOL_VERSION;
	return helper_request(hc, p, PS_HELLO, &q, sizeof(q), -1);
}

int helper_probe(struct helper_client *hc, const struct ps_caller *caller, pid_t pid, int pidfd,
		 uint64_t start_time, const char *api_sock, helper_reply_cb cb, void *userdata)
{
	struct ps_probe q;
	memset(&q, 0, sizeof(q));
	q.caller = *caller;
	q.pid = pid;
	q.flags = pidfd >= 0 ? PS_PROBE_HAS_PIDFD : 0;
	q.start_time = start_time;
	int r = field_set(q.api_sock, sizeof(q.api_sock), api_sock);
	if (r < 0)
		return r;
	if (pidfd < 0 && pid <= 0)
		return -EINVAL;
	struct pending *p = pending_new(hc, HELPER_OP_PROBE, PS_PROBE_REPLY);
	if (!p)
		return -ENOMEM;
	p->cb = cb;
	p->userdata = userdata;
	return helper_request(hc, p, PS_PROBE, &q, sizeof(q), pidfd);
}

int helper_scan(struct helper_client *hc, const struct ps_caller *caller,
		const char *const *sockets, size_t count, helper_scan_cb cb, void *userdata)
{
	size_t nparts = count == 0 ? 1 : (count + PS_SCAN_PART_MAX - 1) / PS_SCAN_PART_MAX;
	if (nparts > PS_SCAN_MAX_PARTS)
		return -E2BIG;
	for (size_t i = 0; i < count; i++)
		if (strlen(sockets[i]) >= PS_SOCK_PATH_MAX || sockets[i][0] == '\0')
			return -ENAMETOOLONG;
	if (hc->dead)
		return -EPIPE;

	struct pending *p = pending_new(hc, HELPER_OP_SCAN, PS_SCAN_REPLY);
	if (!p)
		return -ENOMEM;
	p->scan_cb = cb;
	p->userdata = userdata;
	/*
	 * The walk gets three quarters of the deadline: a host full of processes (or one
	 * process full of fds) then makes the answer incomplete (unknown), not late (the
	 * helper judged stuck and replaced, again at every start).
	 */
	uint32_t budget = hc->deadline_ms[HELPER_OP_SCAN] / 4 * 3;
	p->scan.budget_ms = budget ? budget : 1;
	_cleanup_free_ struct ps_scan *q = malloc(sizeof(*q));
	if (!q) {
		free(p);
		return -ENOMEM;
	}
	/* All parts are queued back to back, so no other request can come between them. */
	for (size_t part = 0; part < nparts; part++) {
		memset(q, 0, sizeof(*q));
		q->caller = *caller;
		q->part = (uint32_t)part;
		q->nparts = (uint32_t)nparts;
		q->budget_ms = p->scan.budget_ms;
		for (size_t i = part * PS_SCAN_PART_MAX; i < count && q->count < PS_SCAN_PART_MAX;
		     i++)
			field_set(q->sockets[q->count++], PS_SOCK_PATH_MAX, sockets[i]);
		int r = helper_enqueue(hc, PS_SCAN, p->request_id, q, sizeof(*q), -1);
		if (r < 0) {
			free(p);
			/* A scan cut short would leave the helper waiting for parts. */
			if (part > 0)
				helper_declare_dead(hc, "could not queue a whole scan");
			return r;
		}
	}
	pending_add(hc, p);
	return 0;
}

int helper_teardown(struct helper_client *hc, const struct ps_teardown *request, helper_reply_cb cb,
		    void *userdata)
{
	struct pending *p = pending_new(hc, HELPER_OP_TEARDOWN, PS_TEARDOWN_REPLY);
	if (!p)
		return -ENOMEM;
	p->cb = cb;
	p->userdata = userdata;
	return helper_request(hc, p, PS_TEARDOWN, request, sizeof(*request), -1);
}
