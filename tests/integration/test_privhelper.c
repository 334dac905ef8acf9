/*
 * banger-privhelper against real processes: PROBE and SCAN answers for
 * stub firecrackers (plain and jailed in a chroot), and the helper's
 * reaction to hostile input on its socket. One case per run, named by
 * argv[1], so that meson counts and reports each acceptance item alone.
 * Needs root: the helper runs as it does in production.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "path.h"
#include "policy.h"
#include "procfs.h"
#include "testlib.h"

/* Where firecracker binds when it is given no --api-sock. */
#define FIRECRACKER_DEFAULT_API_SOCK "/run/firecracker.socket"

struct fixture {
	char *dir; /* temp root of everything below */
	char api_root[512];
	char loop_root[512];
	struct t_helper helper;
};

static void fixture_setup(struct fixture *f, const char *tag, bool hello)
{
	t_require_root();
	f->dir = t_make_temp_dir(tag);
	t_pathf(f->api_root, sizeof(f->api_root), "%s/vms", f->dir);
	t_pathf(f->loop_root, sizeof(f->loop_root), "%s/images", f->dir);
	CHECK(mkdir(f->api_root, 0755) == 0, "mkdir");
	CHECK(mkdir(f->loop_root, 0755) == 0, "mkdir");
	/* The directories the stubs bind their api sockets in. */
	for (int i = 1; i <= 2; i++) {
		char vm[600];
		t_pathf(vm, sizeof(vm), "%s/vm%d", f->api_root, i);
		CHECK(mkdir(vm, 0755) == 0, "mkdir %s", vm);
	}
	t_helper_start_default(&f->helper, f->api_root, f->loop_root);
	if (hello)
		t_helper_hello(&f->helper);
}

static void fixture_teardown(struct fixture *f)
{
	t_helper_stop(&f->helper);
	close(f->helper.stderr_fd);
	t_cleanup_dir(f->dir);
	free(f->dir);
}

static pid_t spawn_firecracker(const char *const *argv)
{
	return t_spawn(t_env_path("BANGER_STUB_FIRECRACKER"), argv, NULL);
}

static void expect_probe(struct fixture *f, pid_t pid, int pidfd, uint64_t start_time,
			 const char *sock, int status, int reason)
{
	struct ps_probe_reply rep;
	int got_fd;
	t_probe(&f->helper, pid, pidfd, start_time, sock, &rep, &got_fd);
	CHECK(rep.status == status && rep.reason == reason,
	      "probe pid %d %s: got %s/%s (err %d), want %s/%s", (int)pid, sock,
	      ps_probe_status_name(rep.status), ps_reason_name(rep.reason), rep.err,
	      ps_probe_status_name(status), ps_reason_name(reason));
	CHECK((got_fd >= 0) == (status == PS_PROBE_RUNNING), "pidfd only with running");
	if (got_fd >= 0)
		close(got_fd);
}

/* --- PROBE ---------------------------------------------------------------- */

static void probe_running(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-running", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = spawn_firecracker(
	    (const char *[]){"firecracker", "--id", "vm1", "--api-sock", sock, NULL});
	struct ps_probe_reply rep;
	int pidfd;
	t_probe(&f.helper, pid, -1, t_start_time(pid), sock, &rep, &pidfd);
	CHECK(rep.status == PS_PROBE_RUNNING, "status %s reason %s",
	      ps_probe_status_name(rep.status), ps_reason_name(rep.reason));
	CHECK(rep.pid == pid && rep.start_time == t_start_time(pid), "pid/start time echoed");
	/* The pidfd is usable: it names the stub, and it reports the stub's death. */
	CHECK(pidfd >= 0 && pidfd_get_pid(pidfd) == pid, "pidfd names pid %d", (int)pid);
	CHECK(syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0, "pidfd_send_signal 0");
	CHECK(!pidfd_has_exited(pidfd), "alive");
	kill(pid, SIGKILL);
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	CHECK(poll(&p, 1, 5000) == 1, "pidfd readable after kill");
	waitpid(pid, NULL, 0);
	close(pidfd);
	/* --api-sock=PATH is the same element in its other spelling. */
	pid = spawn_firecracker((const char *[]){"firecracker", "--api-sock=/dev/null/x", NULL});
	t_kill_and_reap(pid);
	char eq[700];
	t_pathf(eq, sizeof(eq), "--api-sock=%s", sock);
	pid = spawn_firecracker((const char *[]){"firecracker", eq, NULL});
	expect_probe(&f, pid, -1, 0, sock, PS_PROBE_RUNNING, PS_REASON_NONE);
	t_kill_and_reap(pid);
	fixture_teardown(&f);
}

static void probe_dead_pid(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-dead", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = spawn_firecracker((const char *[]){"firecracker", "--api-sock", sock, NULL});
	t_kill_and_reap(pid);
	expect_probe(&f, pid, -1, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NO_PROCESS);
	fixture_teardown(&f);
}

static void probe_argv_substring(void)
{
	struct fixture f;
	char sock[600], longer[700], eq[700], prefix[700];
	fixture_setup(&f, "probe-substring", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	t_pathf(longer, sizeof(longer), "%s.old", sock);
	t_pathf(eq, sizeof(eq), "--api-sock=%s2", sock);
	t_pathf(prefix, sizeof(prefix), "x%s", sock);
	const char *const *argvs[] = {
	    (const char *[]){"firecracker", "--api-sock", longer, NULL},
	    (const char *[]){"firecracker", eq, NULL},
	    (const char *[]){"firecracker", "--api-sock", prefix, NULL},
	    (const char *[]){"firecracker", "--api-sockets", sock, NULL},
	};
	for (size_t i = 0; i < ELEMENTSOF(argvs); i++) {
		pid_t pid = spawn_firecracker(argvs[i]);
		expect_probe(&f, pid, -1, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NO_LISTENER);
		t_kill_and_reap(pid);
	}
	fixture_teardown(&f);
}

static void probe_argv_position(void)
{
	struct fixture f;
	char sock[600], other[600];
	fixture_setup(&f, "probe-position", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	t_pathf(other, sizeof(other), "%s/vm2/api.sock", f.api_root);
	char eq[700];
	t_pathf(eq, sizeof(eq), "--api-sock=%s", sock);
	/* The real one listens first: every impostor below fails to bind and only carries argv. */
	pid_t real = spawn_firecracker((const char *[]){"firecracker", "--api-sock", sock, NULL});
	const char *const *argvs[] = {
	    /* exactly the real one's argv, in both spellings: still not the socket's holder */
	    (const char *[]){"firecracker", "--api-sock", sock, NULL},
	    (const char *[]){"firecracker", eq, NULL},
	    /* the path is there, but not as the value of --api-sock */
	    (const char *[]){"firecracker", sock, "--api-sock", other, NULL},
	    (const char *[]){"firecracker", "--id", sock, NULL},
	    (const char *[]){"firecracker", "--api-sock", other, sock, NULL},
	    (const char *[]){"firecracker", sock, "--api-sock", NULL},
	    /* two --api-sock elements: ambiguous, never a match */
	    (const char *[]){"firecracker", "--api-sock", sock, "--api-sock", other, NULL},
	};
	for (size_t i = 0; i < ELEMENTSOF(argvs); i++) {
		pid_t pid = spawn_firecracker(argvs[i]);
		expect_probe(&f, pid, -1, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NO_LISTENER);
		t_kill_and_reap(pid);
	}
	/* Holding a socket is not enough: one connected to the real listener is not it. */
	pid_t client = spawn_firecracker(
	    (const char *[]){"firecracker", "--api-sock", sock, "--connect-to", sock, NULL});
	expect_probe(&f, client, -1, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NO_LISTENER);
	t_kill_and_reap(client);
	expect_probe(&f, real, -1, 0, sock, PS_PROBE_RUNNING, PS_REASON_NONE);
	t_kill_and_reap(real);
	fixture_teardown(&f);
}

static void probe_not_firecracker(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-notfc", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = t_spawn(t_env_path("BANGER_STUB_OTHER"),
			    (const char *[]){"firecracker", "--api-sock", sock, NULL}, NULL);
	expect_probe(&f, pid, -1, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NOT_FIRECRACKER);
	t_kill_and_reap(pid);
	fixture_teardown(&f);
}

static void probe_start_time(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-start", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = spawn_firecracker((const char *[]){"firecracker", "--api-sock", sock, NULL});
	uint64_t start = t_start_time(pid);
	/* Same pid and argv, other start time: what PID reuse looks like. */
	expect_probe(&f, pid, -1, start + 1, sock, PS_PROBE_NOT_RUNNING,
		     PS_REASON_START_TIME_MISMATCH);
	expect_probe(&f, pid, -1, start, sock, PS_PROBE_RUNNING, PS_REASON_NONE);
	t_kill_and_reap(pid);
	fixture_teardown(&f);
}

static void probe_outside_roots(void)
{
	struct fixture f;
	char inside[600], dotdot[600], outside[600];
	fixture_setup(&f, "probe-outside", true);
	t_pathf(inside, sizeof(inside), "%s/vm1/api.sock", f.api_root);
	t_pathf(dotdot, sizeof(dotdot), "%s/../elsewhere/api.sock", f.api_root);
	t_pathf(outside, sizeof(outside), "%s/elsewhere/api.sock", f.dir);
	const char *socks[] = {outside, dotdot, "relative/api.sock", f.api_root};
	for (size_t i = 0; i < ELEMENTSOF(socks); i++) {
		pid_t pid = spawn_firecracker(
		    (const char *[]){"firecracker", "--api-sock", socks[i], NULL});
		expect_probe(&f, pid, -1, 0, socks[i], PS_PROBE_REFUSED, PS_REASON_OUTSIDE_ROOTS);
		t_kill_and_reap(pid);
	}
	char *out = t_helper_output(&f.helper);
	CHECK(strstr(out, "result=refused reason=outside-roots"),
	      "audit line names the refusal:\n%s", out);
	free(out);
	fixture_teardown(&f);
}

static void probe_with_pidfd(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-pidfd", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = spawn_firecracker((const char *[]){"firecracker", "--api-sock", sock, NULL});
	int pidfd = pidfd_open_pid(pid);
	CHECK(pidfd >= 0, "pidfd_open");
	/* The pid in the payload is a lie; the pidfd decides which process is probed. */
	struct ps_probe_reply rep;
	int got;
	t_probe(&f.helper, 1, pidfd, 0, sock, &rep, &got);
	CHECK(rep.status == PS_PROBE_RUNNING && rep.pid == pid, "probed via pidfd: %s pid %d",
	      ps_probe_status_name(rep.status), rep.pid);
	close(got);
	t_kill_and_reap(pid);
	expect_probe(&f, 1, pidfd, 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_NO_PROCESS);
	close(pidfd);
	/* An fd that is not a pidfd names no process. */
	int p[2];
	CHECK(pipe(p) == 0, "pipe");
	expect_probe(&f, 1, p[0], 0, sock, PS_PROBE_NOT_RUNNING, PS_REASON_PIDFD_INVALID);
	close(p[0]);
	close(p[1]);
	fixture_teardown(&f);
}

/* Make root_dir a jail with the stub at /firecracker, as the jailer lays it out. */
static void make_jail(const char *root_dir)
{
	char path[1024];
	t_pathf(path, sizeof(path), "%s", root_dir);
	for (char *s = path + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			mkdir(path, 0755);
			*s = '/';
		}
	mkdir(path, 0755);
	t_pathf(path, sizeof(path), "%s/run", root_dir);
	mkdir(path, 0755);
	t_pathf(path, sizeof(path), "%s/firecracker", root_dir);
	CHECK(link(t_env_path("BANGER_STUB_FIRECRACKER"), path) == 0 ||
		  symlink("/nonexistent", path) == 0,
	      "link stub into jail");
}

static pid_t spawn_jailed(const char *root_dir, const char *argv_sock)
{
	if (argv_sock)
		return t_spawn(
		    "/firecracker",
		    (const char *[]){"firecracker", "--id", "j", "--api-sock", argv_sock, NULL},
		    root_dir);
	return t_spawn("/firecracker", (const char *[]){"firecracker", "--id", "j", NULL},
		       root_dir);
}

static void probe_jailed(void)
{
	struct fixture f;
	char jail[600], host_default[700], host_given[700];
	fixture_setup(&f, "probe-jailed", true);
	t_pathf(jail, sizeof(jail), "%s/jailer/firecracker/vm1/root", f.api_root);
	make_jail(jail);
	t_pathf(host_default, sizeof(host_default), "%s%s", jail, FIRECRACKER_DEFAULT_API_SOCK);
	t_pathf(host_given, sizeof(host_given), "%s/run/api.sock", jail);

	pid_t pid = spawn_jailed(jail, NULL);
	expect_probe(&f, pid, -1, 0, host_default, PS_PROBE_RUNNING, PS_REASON_NONE);
	/* The path inside the jail is not the host's name for the socket. */
	expect_probe(&f, pid, -1, 0, host_given, PS_PROBE_NOT_RUNNING, PS_REASON_NO_LISTENER);
	t_kill_and_reap(pid);

	pid = spawn_jailed(jail, "/run/api.sock");
	expect_probe(&f, pid, -1, 0, host_given, PS_PROBE_RUNNING, PS_REASON_NONE);
	t_kill_and_reap(pid);
	fixture_teardown(&f);
}

static void probe_audit_line(void)
{
	struct fixture f;
	char sock[600];
	fixture_setup(&f, "probe-audit", true);
	t_pathf(sock, sizeof(sock), "%s/vm1/api.sock", f.api_root);
	pid_t pid = spawn_firecracker((const char *[]){"firecracker", "--api-sock", sock, NULL});
	expect_probe(&f, pid, -1, 0, sock, PS_PROBE_RUNNING, PS_REASON_NONE);
	t_kill_and_reap(pid);
	t_helper_stop(&f.helper);
	char *out = t_helper_output(&f.helper);
	char want[800];
	t_pathf(
	    want, sizeof(want),
	    "req=2 caller_uid=0 caller_gid=0 caller_pid=0 call=test vm=vm1 "
	    "op=probe pid=%d pidfd=no start_time=0 api_sock=\"%s\" result=running errno=0 dur_us=",
	    (int)pid, sock);
	CHECK(strstr(out, want), "audit line\n  %s\nnot in\n%s", want, out);
	free(out);
	fixture_teardown(&f);
}

/* --- SCAN ----------------------------------------------------------------- */

#define SCAN_SOCKETS   1000
#define SCAN_LIVE      500
#define SCAN_JAILED    40 /* of the live ones */
#define SCAN_ORPHANS   5
#define SCAN_IMPOSTORS 3 /* right argv, wrong executable */
#define SCAN_OUTSIDE   2 /* firecracker, socket outside the roots */

static void scan_batch(void)
{
	struct fixture f;
	static char socks[SCAN_SOCKETS][PS_SOCK_PATH_MAX];
	const char *sock_ptrs[SCAN_SOCKETS];
	static pid_t live[SCAN_SOCKETS];
	pid_t orphans[SCAN_ORPHANS], others[SCAN_IMPOSTORS + SCAN_OUTSIDE];
	size_t n_others = 0;

	fixture_setup(&f, "scan", true);
	/* Even sockets are live: jailed for the first SCAN_JAILED of them, plain otherwise. */
	for (size_t i = 0; i < (size_t)SCAN_SOCKETS; i++) {
		sock_ptrs[i] = socks[i];
		live[i] = 0;
		bool is_live = i % 2 == 0;
		bool jailed = is_live && i / 2 < SCAN_JAILED;
		if (jailed) {
			char jail[400];
			t_pathf(jail, sizeof(jail), "%s/j/%zu/root", f.api_root, i);
			make_jail(jail);
			/* half of the jailed ones rely on firecracker's default socket */
			bool dflt = (i / 2) % 2 == 0;
			t_pathf(socks[i], PS_SOCK_PATH_MAX, "%s%s", jail,
				dflt ? FIRECRACKER_DEFAULT_API_SOCK : "/run/fc.sock");
			live[i] = spawn_jailed(jail, dflt ? NULL : "/run/fc.sock");
			continue;
		}
		t_pathf(socks[i], PS_SOCK_PATH_MAX, "%s/vm-%zu", f.api_root, i);
		CHECK(mkdir(socks[i], 0755) == 0, "mkdir %s", socks[i]);
		t_pathf(socks[i], PS_SOCK_PATH_MAX, "%s/vm-%zu/api.sock", f.api_root, i);
		if (is_live)
			live[i] = spawn_firecracker(
			    (const char *[]){"firecracker", "--api-sock", socks[i], NULL});
	}
	for (size_t i = 0; i < (size_t)SCAN_ORPHANS; i++) {
		char s[600];
		t_pathf(s, sizeof(s), "%s/orphan-%zu", f.api_root, i);
		CHECK(mkdir(s, 0755) == 0, "mkdir %s", s);
		t_pathf(s, sizeof(s), "%s/orphan-%zu/api.sock", f.api_root, i);
		orphans[i] =
		    spawn_firecracker((const char *[]){"firecracker", "--api-sock", s, NULL});
	}
	for (size_t i = 0; i < (size_t)SCAN_IMPOSTORS; i++)
		others[n_others++] = t_spawn(
		    t_env_path("BANGER_STUB_OTHER"),
		    (const char *[]){"firecracker", "--api-sock", socks[2 * i + 1], NULL}, NULL);
	for (size_t i = 0; i < (size_t)SCAN_OUTSIDE; i++) {
		char s[600];
		t_pathf(s, sizeof(s), "%s/outside-%zu", f.dir, i);
		CHECK(mkdir(s, 0755) == 0, "mkdir %s", s);
		t_pathf(s, sizeof(s), "%s/outside-%zu/api.sock", f.dir, i);
		others[n_others++] =
		    spawn_firecracker((const char *[]){"firecracker", "--api-sock", s, NULL});
	}

	struct t_scan_result res;
	t_scan(&f.helper, sock_ptrs, SCAN_SOCKETS, &res);
	int unreadable = t_count_unreadable_processes();
	CHECK(res.err == 0 && res.uninspected == (uint32_t)unreadable,
	      "err %d, uninspected %u, want %d", res.err, res.uninspected, unreadable);
	size_t matched = 0, orphan_count = 0;
	static bool seen[SCAN_SOCKETS];
	for (size_t i = 0; i < res.count; i++) {
		const struct ps_scan_entry *e = &res.entries[i];
		if (e->kind == PS_SCAN_MATCH) {
			CHECK(e->index < SCAN_SOCKETS && !seen[e->index], "index %u", e->index);
			seen[e->index] = true;
			CHECK(live[e->index] == e->pid, "socket %u matched pid %d, want %d",
			      e->index, e->pid, (int)live[e->index]);
			CHECK(e->start_time == t_start_time(e->pid), "start time of %d", e->pid);
			CHECK(res.pidfds[i] >= 0 && pidfd_get_pid(res.pidfds[i]) == e->pid,
			      "pidfd of match %u", e->index);
			matched++;
		} else {
			bool planted = false;
			for (size_t k = 0; k < (size_t)SCAN_ORPHANS; k++)
				planted |= orphans[k] == e->pid;
			CHECK(planted, "unexpected orphan pid %d %s", e->pid, e->api_sock);
			CHECK(res.pidfds[i] < 0, "orphans carry no pidfd");
			orphan_count++;
		}
	}
	CHECK(matched == SCAN_LIVE, "matched %zu, want %d", matched, SCAN_LIVE);
	CHECK(orphan_count == SCAN_ORPHANS, "orphans %zu, want %d", orphan_count, SCAN_ORPHANS);
	printf("scan: %zu sockets, %zu matched (%d jailed), %zu orphans, impostors and outsiders "
	       "ignored\n",
	       (size_t)SCAN_SOCKETS, matched, SCAN_JAILED, orphan_count);
	t_scan_result_free(&res);

	for (size_t i = 0; i < (size_t)SCAN_SOCKETS; i++)
		t_kill_and_reap(live[i]);
	for (size_t i = 0; i < (size_t)SCAN_ORPHANS; i++)
		t_kill_and_reap(orphans[i]);
	for (size_t i = 0; i < n_others; i++)
		t_kill_and_reap(others[i]);
	fixture_teardown(&f);
}

/*
 * Identity is the listener held, whatever argv says: an impostor with the
 * VM's exact argv that started first is no match, and two processes that
 * hold one listener (passed over SCM_RIGHTS) are ambiguous, with no pidfd.
 */
static void scan_identity(void)
{
	struct fixture f;
	char a[600], b[600], dir_a[600], rendezvous[600];
	fixture_setup(&f, "scan-identity", true);
	t_pathf(dir_a, sizeof(dir_a), "%s/late", f.api_root);
	t_pathf(a, sizeof(a), "%s/api.sock", dir_a);
	t_pathf(b, sizeof(b), "%s/vm2/api.sock", f.api_root);
	t_pathf(rendezvous, sizeof(rendezvous), "%s/rendezvous.sock", f.dir);

	/* The impostor first: its directory does not exist yet, so it cannot bind. */
	pid_t impostor = spawn_firecracker((const char *[]){"firecracker", "--api-sock", a, NULL});
	CHECK(mkdir(dir_a, 0755) == 0, "mkdir");
	pid_t real_a = spawn_firecracker((const char *[]){"firecracker", "--api-sock", a, NULL});
	CHECK(impostor < real_a || impostor > real_a, "two processes");
	pid_t receiver = spawn_firecracker(
	    (const char *[]){"firecracker", "--api-sock", b, "--recv-listener", rendezvous, NULL});
	pid_t real_b = spawn_firecracker(
	    (const char *[]){"firecracker", "--api-sock", b, "--send-listener", rendezvous, NULL});

	const char *socks[] = {a, b};
	struct t_scan_result res;
	t_scan(&f.helper, socks, 2, &res);
	CHECK(res.err == 0, "scan err %d", res.err);
	bool match_a = false, amb_real = false, amb_recv = false;
	for (size_t i = 0; i < res.count; i++) {
		const struct ps_scan_entry *e = &res.entries[i];
		CHECK(e->pid != impostor, "the impostor is reported (kind %u)", e->kind);
		if (e->kind == PS_SCAN_MATCH) {
			CHECK(e->index == 0 && e->pid == real_a && res.pidfds[i] >= 0,
			      "match index %u pid %d", e->index, e->pid);
			match_a = true;
		} else if (e->kind == PS_SCAN_AMBIGUOUS) {
			CHECK(e->index == 1 && res.pidfds[i] < 0, "ambiguous index %u", e->index);
			amb_real |= e->pid == real_b;
			amb_recv |= e->pid == receiver;
		} else {
			CHECK(false, "unexpected entry kind %u pid %d", e->kind, e->pid);
		}
	}
	CHECK(match_a && amb_real && amb_recv, "real a %d, ambiguous b: real %d receiver %d",
	      match_a, amb_real, amb_recv);
	t_scan_result_free(&res);

	/* A node the request names twice adopts nobody either: both entries ambiguous. */
	const char *twice[] = {a, a};
	size_t named = 0;
	t_scan(&f.helper, twice, 2, &res);
	CHECK(res.err == 0, "scan of a twice: err %d", res.err);
	for (size_t i = 0; i < res.count; i++) {
		const struct ps_scan_entry *e = &res.entries[i];
		if (e->kind == PS_SCAN_ORPHAN) /* b's two holders: b is not asked about */
			continue;
		CHECK(e->kind == PS_SCAN_AMBIGUOUS && e->pid == real_a && res.pidfds[i] < 0 &&
			  e->index == named++,
		      "a twice, entry %zu: kind %u pid %d index %u", i, e->kind, e->pid, e->index);
	}
	CHECK(named == 2, "a twice: %zu entries for it", named);
	t_scan_result_free(&res);
	t_helper_stop(&f.helper);
	char *out = t_helper_output(&f.helper);
	char want[64];
	t_pathf(want, sizeof(want), "conflict=1:");
	CHECK(strstr(out, want), "the audit line names the ambiguity:\n%s", out);
	free(out);

	/* PROBE says the same: argv is nothing, the listener everything. */
	t_helper_start_default(&f.helper, f.api_root, f.loop_root);
	t_helper_hello(&f.helper);
	expect_probe(&f, impostor, -1, 0, a, PS_PROBE_NOT_RUNNING, PS_REASON_NO_LISTENER);
	expect_probe(&f, real_a, -1, 0, a, PS_PROBE_RUNNING, PS_REASON_NONE);
	pid_t pids[] = {impostor, real_a, receiver, real_b};
	for (size_t i = 0; i < ELEMENTSOF(pids); i++)
		t_kill_and_reap(pids[i]);
	fixture_teardown(&f);
}

/* --- lifecycle ------------------------------------------------------------ */

static void exits_on_eof(void)
{
	struct fixture f;
	fixture_setup(&f, "eof", true);
	close(f.helper.sock);
	f.helper.sock = -1;
	int status = t_helper_wait(&f.helper, 5000);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x", status);
	fixture_teardown(&f);
}

/* --- hostile input -------------------------------------------------------- */

static unsigned char hostile_buf[PS_MAX_MESSAGE_BYTES + 4096];

/* A valid PROBE datagram for the fixture's root; cases damage it. */
static size_t hostile_probe(struct fixture *f)
{
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	 PS_PROBE,
			      50,	sizeof(struct ps_probe), 0};
	struct ps_probe q;
	memset(&q, 0, sizeof(q));
	strcpy(q.caller.call, "test");
	q.pid = getpid();
	t_pathf(q.api_sock, sizeof(q.api_sock), "%s/vm1/api.sock", f->api_root);
	memcpy(hostile_buf, &h, sizeof(h));
	memcpy(hostile_buf + sizeof(h), &q, sizeof(q));
	return sizeof(h) + sizeof(q);
}

static struct ps_header *hostile_header(void)
{
	return (struct ps_header *)hostile_buf;
}

static struct ps_probe *hostile_payload(void)
{
	return (struct ps_probe *)(hostile_buf + sizeof(struct ps_header));
}

/*
 * Send one damaged datagram (with nfds copies of a pipe's write end) and
 * check: the helper exits 1, its audit trail names the violation, it
 * probed nothing, and no copy of the fd we sent survives anywhere.
 */
static void expect_fatal(struct fixture *f, size_t len, size_t nfds, const char *needle)
{
	int p[2];
	int fds[4];
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
	for (size_t i = 0; i < nfds; i++)
		fds[i] = p[1];
	int sz = 1 << 20;
	setsockopt(f->helper.sock, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	CHECK(t_send_raw(f->helper.sock, hostile_buf, len, nfds ? fds : NULL, nfds) == 0, "send");
	close(p[1]);
	int status = t_helper_wait(&f->helper, 5000);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "helper exit status 0x%x", status);
	char *out = t_helper_output(&f->helper);
	CHECK(strstr(out, "op=violation result=fatal"), "no violation audit line:\n%s", out);
	CHECK(strstr(out, needle), "violation does not name '%s':\n%s", needle, out);
	CHECK(!strstr(out, "op=probe"), "helper acted on a hostile message:\n%s", out);
	free(out);
	char c;
	CHECK(read(p[0], &c, 1) == 0, "a copy of the fd we sent is still open somewhere");
	close(p[0]);
	fixture_teardown(f);
}

static size_t damage_wrong_magic(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->magic = 0x41414141;
	return len;
}

static size_t damage_wrong_version(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->version = PS_PROTOCOL_VERSION + 1;
	return len;
}

static size_t damage_unknown_type(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->type = 200;
	return len;
}

static size_t damage_length_mismatch(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->payload_len -= 8;
	return len;
}

static size_t damage_short_payload(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->payload_len -= 8;
	return len - 8;
}

static size_t damage_unterminated_string(struct fixture *f)
{
	size_t len = hostile_probe(f);
	memset(hostile_payload()->api_sock, 'a', PS_SOCK_PATH_MAX);
	return len;
}

static size_t damage_embedded_nul(struct fixture *f)
{
	size_t len = hostile_probe(f);
	char *s = hostile_payload()->api_sock;
	s[strlen(s) + 1] = 'X'; /* "...api.sock\0X": a second string hidden after the first */
	return len;
}

static size_t damage_count_over_max(struct fixture *f)
{
	(void)f;
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	PS_SCAN,
			      51,	sizeof(struct ps_scan), 0};
	struct ps_scan *q = (struct ps_scan *)(hostile_buf + sizeof(h));
	memcpy(hostile_buf, &h, sizeof(h));
	memset(q, 0, sizeof(*q));
	q->nparts = 1;
	q->budget_ms = 1000;
	q->count = PS_SCAN_PART_MAX + 1;
	return sizeof(h) + sizeof(*q);
}

static size_t damage_oversize(struct fixture *f)
{
	(void)f;
	hostile_probe(f);
	hostile_header()->payload_len = sizeof(hostile_buf) - sizeof(struct ps_header);
	return sizeof(hostile_buf);
}

static size_t damage_fd_on_fdless_type(struct fixture *f)
{
	(void)f;
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	PS_SCAN,
			      52,	sizeof(struct ps_scan), 1};
	struct ps_scan *q = (struct ps_scan *)(hostile_buf + sizeof(h));
	memcpy(hostile_buf, &h, sizeof(h));
	memset(q, 0, sizeof(*q));
	q->nparts = 1;
	q->budget_ms = 1000;
	return sizeof(h) + sizeof(*q);
}

static size_t damage_too_many_fds(struct fixture *f)
{
	size_t len = hostile_probe(f);
	hostile_header()->nfds = 3;
	hostile_payload()->flags = PS_PROBE_HAS_PIDFD;
	return len;
}

static size_t damage_wrong_direction(struct fixture *f)
{
	(void)f;
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	       PS_PROBE_REPLY,
			      53,	sizeof(struct ps_probe_reply), 0};
	memcpy(hostile_buf, &h, sizeof(h));
	memset(hostile_buf + sizeof(h), 0, sizeof(struct ps_probe_reply));
	return sizeof(h) + sizeof(struct ps_probe_reply);
}

static size_t damage_before_hello(struct fixture *f)
{
	return hostile_probe(f);
}

static size_t damage_second_hello(struct fixture *f)
{
	(void)f;
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	 PS_HELLO,
			      54,	sizeof(struct ps_hello), 0};
	struct ps_hello q;
	memset(&q, 0, sizeof(q));
	q.protocol_version = PS_PROTOCOL_VERSION;
	memcpy(hostile_buf, &h, sizeof(h));
	memcpy(hostile_buf + sizeof(h), &q, sizeof(q));
	return sizeof(h) + sizeof(q);
}

static size_t damage_scan_interrupted(struct fixture *f)
{
	static struct ps_scan q;
	memset(&q, 0, sizeof(q));
	q.nparts = 2;
	q.budget_ms = 1000;
	/* Every part but the last is full. */
	q.count = PS_SCAN_PART_MAX;
	for (size_t i = 0; i < PS_SCAN_PART_MAX; i++)
		t_pathf(q.sockets[i], sizeof(q.sockets[i]), "%s/vm%zu.sock", f->api_root, i);
	CHECK(ps_send(f->helper.sock, PS_SCAN, 55, &q, sizeof(q), NULL, 0) == 0, "part 0");
	size_t len = hostile_probe(f);
	return len;
}

/* Each hostile case: how to damage a message, what it may carry, what the audit line must say. */
struct hostile_case {
	const char *name;
	size_t (*damage)(struct fixture *f);
	size_t nfds;
	const char *violation;
	bool before_hello;
};

static const struct hostile_case hostile_cases[] = {
    {"hostile-wrong-magic", damage_wrong_magic, 0, "wrong magic 0x41414141", false},
    {"hostile-wrong-version", damage_wrong_version, 0, "wrong protocol version", false},
    {"hostile-unknown-type", damage_unknown_type, 0, "unknown message type 200", false},
    {"hostile-length-mismatch", damage_length_mismatch, 0, "header says", false},
    {"hostile-short-payload", damage_short_payload, 0, "must be", false},
    {"hostile-unterminated-string", damage_unterminated_string, 0,
     "probe.api_sock: unterminated string or embedded NUL", false},
    {"hostile-embedded-nul", damage_embedded_nul, 0,
     "probe.api_sock: unterminated string or embedded NUL", false},
    {"hostile-count-over-max", damage_count_over_max, 0,
     "scan.sockets: count 129 over the maximum 128", false},
    {"hostile-oversize", damage_oversize, 0, "oversize message", false},
    {"hostile-fd-on-fdless-type", damage_fd_on_fdless_type, 1,
     "scan: carries 1 fds, at most 0 allowed", false},
    {"hostile-too-many-fds", damage_too_many_fds, 3, "MSG_CTRUNC", false},
    {"hostile-wrong-direction", damage_wrong_direction, 0, "wrong direction", false},
    {"hostile-before-hello", damage_before_hello, 0, "probe before hello", true},
    {"hostile-second-hello", damage_second_hello, 0, "second hello", false},
    {"hostile-scan-interrupted", damage_scan_interrupted, 0,
     "probe in the middle of a multi-part scan", false},
};

static void run_hostile(const struct hostile_case *c)
{
	struct fixture f;
	fixture_setup(&f, "hostile", !c->before_hello);
	size_t len = c->damage(&f);
	expect_fatal(&f, len, c->nfds, c->violation);
}

static const struct t_case cases[] = {
    {"probe-running", probe_running},
    {"probe-dead-pid", probe_dead_pid},
    {"probe-argv-substring", probe_argv_substring},
    {"probe-argv-position", probe_argv_position},
    {"probe-not-firecracker", probe_not_firecracker},
    {"probe-start-time", probe_start_time},
    {"probe-outside-roots", probe_outside_roots},
    {"probe-with-pidfd", probe_with_pidfd},
    {"probe-jailed", probe_jailed},
    {"probe-audit-line", probe_audit_line},
    {"scan-identity", scan_identity},
    {"scan-1000-sockets", scan_batch},
    {"exits-on-eof", exits_on_eof},
};

int main(int argc, char **argv)
{
	if (t_run_case(cases, ELEMENTSOF(cases), argc, argv))
		return 0;
	for (size_t i = 0; i < ELEMENTSOF(hostile_cases); i++)
		if (strcmp(hostile_cases[i].name, argv[1]) == 0) {
			run_hostile(&hostile_cases[i]);
			return 0;
		}
	CHECK(false, "unknown case %s", argv[1]);
}
