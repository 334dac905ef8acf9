/* See testlib.h. */
#include "testlib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdpass.h"
#include "macro.h"
#include "path.h"

void t_pathf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	CHECK(n >= 0 && (size_t)n < size, "path too long for its buffer (%d bytes)", n);
}

const char *t_env_path(const char *var)
{
	const char *v = getenv(var);
	CHECK(v && v[0], "environment variable %s is not set (run through meson test)", var);
	return v;
}

bool t_run_case(const struct t_case *cases, size_t n, int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	CHECK(argc == 2, "usage: %s CASE", argv[0]);
	for (size_t i = 0; i < n; i++)
		if (strcmp(cases[i].name, argv[1]) == 0) {
			cases[i].run();
			return true;
		}
	return false;
}

void t_require_root(void)
{
	if (geteuid() != 0)
		SKIP("needs root (real processes under other users, capabilities, devices)");
}

char *t_make_temp_dir(const char *tag)
{
	char *dir;
	CHECK(asprintf(&dir, "/tmp/banger-test-%s-XXXXXX", tag) > 0, "asprintf");
	CHECK(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
	chmod(dir, 0755);
	return dir;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void t_cleanup_dir(const char *dir)
{
	nftw(dir, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
}

void t_helper_start(struct t_helper *h, const char *const *policy_args)
{
	const char *helper = t_env_path("BANGER_HELPER");
	const char *argv[64];
	int sv[2], errpipe[2];
	size_t n = 0;

	argv[n++] = helper;
	for (size_t i = 0; policy_args[i] && n < 62; i++)
		argv[n++] = policy_args[i];
	argv[n] = NULL;
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	CHECK(pipe2(errpipe, O_CLOEXEC) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		dup2(sv[1], 3);
		dup2(errpipe[1], STDERR_FILENO);
		fcntl(3, F_SETFD, 0);
		execv(helper, (char *const *)argv);
		_exit(127);
	}
	close(sv[1]);
	close(errpipe[1]);
	fcntl(errpipe[0], F_SETFL, O_NONBLOCK);
	h->pid = pid;
	h->sock = sv[0];
	h->stderr_fd = errpipe[0];
	h->next_id = 1;
}

void t_helper_start_default(struct t_helper *h, const char *api_root, const char *loop_root)
{
	const char *args[] = {"--tap-prefix",	  "bgt",      "--dm-prefix", "bangertest-",
			      "--dm-uuid-prefix", "BANGERT-", "--loop-root", loop_root,
			      "--api-sock-root",  api_root,   NULL};
	t_helper_start(h, args);
}

static void recv_reply(struct t_helper *h, uint16_t type, uint64_t id, struct ps_message *m)
{
	char why[512];
	struct pollfd p = {.fd = h->sock, .events = POLLIN};
	CHECK(poll(&p, 1, 20000) == 1, "no reply from the helper within 20 s");
	int r = ps_recv_reply(h->sock, false, m, why, sizeof(why));
	CHECK(r == 1, "receiving reply: r=%d %s", r, r == -EBADMSG ? why : strerror(-r));
	CHECK(m->header.type == type, "reply type %u, want %u", m->header.type, type);
	CHECK(m->header.request_id == id, "reply id %llu, want %llu",
	      (unsigned long long)m->header.request_id, (unsigned long long)id);
}

void t_helper_hello(struct t_helper *h)
{
	struct ps_hello q = {.caller = {.call = "test"}, .protocol_version = PS_PROTOCOL_VERSION};
	struct ps_message m;
	uint64_t id = h->next_id++;
	CHECK(ps_send(h->sock, PS_HELLO, id, &q, sizeof(q), NULL, 0) == 0, "send hello");
	recv_reply(h, PS_HELLO_REPLY, id, &m);
}

int t_helper_wait(struct t_helper *h, int timeout_ms)
{
	int status;
	int pidfd = (int)syscall(SYS_pidfd_open, h->pid, 0);
	CHECK(pidfd >= 0, "pidfd_open(%d): %s", (int)h->pid, strerror(errno));
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	/* A pidfd polls readable when the process exits: wait for exactly that, bounded. */
	int r = poll(&p, 1, timeout_ms);
	close(pidfd);
	CHECK(r == 1, "helper did not exit within %d ms", timeout_ms);
	CHECK(waitpid(h->pid, &status, 0) == h->pid, "waitpid");
	h->pid = 0;
	return status;
}

char *t_helper_output(struct t_helper *h)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	CHECK(buf, "malloc");
	for (;;) {
		if (len + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			CHECK(buf, "realloc");
		}
		ssize_t n = read(h->stderr_fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

void t_helper_stop(struct t_helper *h)
{
	if (h->sock >= 0)
		close(h->sock);
	h->sock = -1;
	if (h->pid > 0)
		t_helper_wait(h, 5000);
}

int t_send_raw(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	return fdpass_send(sock, &iov, 1, fds, nfds);
}

void t_probe(struct t_helper *h, pid_t pid, int pidfd, uint64_t start_time, const char *api_sock,
	     struct ps_probe_reply *out, int *pidfd_out)
{
	struct ps_probe q;
	struct ps_message m;
	uint64_t id = h->next_id++;

	memset(&q, 0, sizeof(q));
	strcpy(q.caller.call, "test");
	strcpy(q.caller.vm,
	       "vm1"); /* the audit line names it (test_privhelper's probe-audit-line) */
	q.pid = pid;
	q.flags = pidfd >= 0 ? PS_PROBE_HAS_PIDFD : 0;
	q.start_time = start_time;
	CHECK(field_set(q.api_sock, sizeof(q.api_sock), api_sock) == 0, "api sock too long");
	CHECK(ps_send(h->sock, PS_PROBE, id, &q, sizeof(q), pidfd >= 0 ? &pidfd : NULL,
		      pidfd >= 0 ? 1 : 0) == 0,
	      "send probe");
	recv_reply(h, PS_PROBE_REPLY, id, &m);
	*out = m.payload.probe_reply;
	*pidfd_out = m.nfds ? ps_message_take_fd(&m, 0) : -1;
	ps_message_close_fds(&m);
}

void t_scan(struct t_helper *h, const char *const *sockets, size_t count, struct t_scan_result *out)
{
	static struct ps_scan q;
	size_t nparts = count == 0 ? 1 : (count + PS_SCAN_PART_MAX - 1) / PS_SCAN_PART_MAX;
	uint64_t id = h->next_id++;

	for (size_t part = 0; part < nparts; part++) {
		memset(&q, 0, sizeof(q));
		strcpy(q.caller.call, "test");
		q.part = (uint32_t)part;
		q.nparts = (uint32_t)nparts;
		q.budget_ms = 10000;
		for (size_t i = part * PS_SCAN_PART_MAX; i < count && q.count < PS_SCAN_PART_MAX;
		     i++)
			CHECK(field_set(q.sockets[q.count++], PS_SOCK_PATH_MAX, sockets[i]) == 0,
			      "socket path too long");
		CHECK(ps_send(h->sock, PS_SCAN, id, &q, sizeof(q), NULL, 0) == 0, "send scan part");
	}
	memset(out, 0, sizeof(*out));
	size_t cap = 0;
	for (uint32_t part = 0;; part++) {
		struct ps_message m;
		recv_reply(h, PS_SCAN_REPLY, id, &m);
		const struct ps_scan_reply *r = &m.payload.scan_reply;
		CHECK(r->part == part, "scan reply part %u, want %u", r->part, part);
		if (out->count + r->count > cap) {
			cap = (out->count + r->count) * 2 + 64;
			out->entries = realloc(out->entries, cap * sizeof(*out->entries));
			out->pidfds = realloc(out->pidfds, cap * sizeof(int));
			CHECK(out->entries && out->pidfds, "realloc");
		}
		size_t fd = 0;
		for (uint32_t i = 0; i < r->count; i++) {
			out->entries[out->count] = r->entries[i];
			out->pidfds[out->count] =
			    r->entries[i].has_pidfd ? ps_message_take_fd(&m, fd++) : -1;
			out->count++;
		}
		out->uninspected = r->uninspected;
		out->err = r->err;
		bool last = r->flags & PS_SCAN_LAST;
		ps_message_close_fds(&m);
		if (last)
			break;
	}
}

void t_scan_result_free(struct t_scan_result *r)
{
	for (size_t i = 0; i < r->count; i++)
		if (r->pidfds[i] >= 0)
			close(r->pidfds[i]);
	free(r->entries);
	free(r->pidfds);
	memset(r, 0, sizeof(*r));
}

pid_t t_spawn(const char *exe, const char *const *argv, const char *root_dir)
{
	int ready[2];
	/* The stub writes "ready" to the write end once it listens (tests/stub/firecracker.c). */
	CHECK(pipe2(ready, O_CLOEXEC) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		/* A failing test exits without cleanup; its stubs must not outlive it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		int devnull = open("/dev/null", O_RDWR);
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		char fd_text[16];
		snprintf(fd_text, sizeof(fd_text), "%d", ready[1]);
		if (fcntl(ready[1], F_SETFD, 0) < 0 || setenv("STUB_READY_FD", fd_text, 1) < 0)
			_exit(125);
		if (root_dir && (chroot(root_dir) < 0 || chdir("/") < 0))
			_exit(126);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	close(ready[1]);
	char line[8] = {0};
	struct pollfd p = {.fd = ready[0], .events = POLLIN};
	CHECK(poll(&p, 1, 5000) == 1, "stub %s (pid %d) not ready within 5 s", exe, (int)pid);
	ssize_t n = read(ready[0], line, sizeof(line) - 1);
	close(ready[0]);
	int status;
	CHECK(n == 6 && strcmp(line, "ready\n") == 0 && waitpid(pid, &status, WNOHANG) == 0,
	      "stub %s (pid %d) did not start", exe, (int)pid);
	return pid;
}

void t_kill_and_reap(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

uint64_t t_start_time(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open %s", path);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	CHECK(n > 0, "read %s", path);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	CHECK(p, "parse %s", path);
	unsigned long long v = 0;
	int field = 2;
	for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "))
		if (++field == 22) {
			v = strtoull(tok, NULL, 10);
			break;
		}
	return v;
}

int t_count_unreadable_processes(void)
{
	DIR *d = opendir("/proc");
	int n = 0;
	CHECK(d, "opendir /proc");
	for (struct dirent *e; (e = readdir(d));) {
		char path[300], target[4096];
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/exe", e->d_name);
		if (readlink(path, target, sizeof(target)) >= 0 ||
		    (errno != EACCES && errno != EPERM))
			continue;
		/* Counted by the helper only if its comm could be a firecracker's. */
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		FILE *f = fopen(path, "re");
		if (!f || !fgets(target, sizeof(target), f) ||
		    strncmp(target, "firecracker", 11) == 0)
			n++;
		if (f)
			fclose(f);
	}
	closedir(d);
	return n;
}

int t_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	CHECK(d, "opendir /proc/self/fd");
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", "..", and the dir's own fd */
}
