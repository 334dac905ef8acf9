/*
 * TEARDOWN against real kernel objects: taps, veths, bridges and loop
 * devices made for the test, then removed or refused by the real helper
 * with its default test policy (tap prefix "bgt", DM prefix "bangertest-",
 * loops under the fixture's images dir). One case per run, named by
 * argv[1]. Needs root. Every object a case creates is tracked and removed
 * by an atexit handler, so a failed CHECK leaves nothing behind; names
 * carry the pid, so parallel runs do not collide.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "path.h"
#include "testlib.h"

#define MAX_TRACKED 16

/* What this process created, for the atexit cleanup. */
static struct {
	char links[MAX_TRACKED][IF_NAMESIZE];
	size_t n_links;
	char dm[MAX_TRACKED][PS_DM_NAME_MAX];
	size_t n_dm;
	struct {
		char dev[32];
		char file[PATH_MAX];
	} loops[MAX_TRACKED];
	size_t n_loops;
	pid_t holders[MAX_TRACKED];
	size_t n_holders;
	pid_t ns_keepers[MAX_TRACKED]; /* each keeps a mount namespace alive */
	size_t n_ns_keepers;
	char mount[PATH_MAX]; /* a bind mount to undo, or "" */
	char *dir;
} tracked;

struct fixture {
	char api_root[512];
	char loop_root[512];
	char outside[512]; /* a dir outside every root */
	struct t_helper helper;
};

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	CHECK(n > 0 && (size_t)n < sizeof(cmd), "command too long");
	int status = system(cmd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The backing file the kernel names for dev ("" when it is not bound). */
static void loop_backing(const char *dev, char *buf, size_t size)
{
	char path[128];
	buf[0] = '\0';
	t_pathf(path, sizeof(path), "/sys/block/%s/loop/backing_file", path_basename(dev));
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(buf, (int)size, f))
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

static bool loop_bound_to(const char *dev, const char *file)
{
	char backing[PATH_MAX];
	loop_backing(dev, backing, sizeof(backing));
	return strcmp(backing, file) == 0;
}

/* Bound to file, or to file since deleted (the kernel then appends " (deleted)"). */
static bool loop_bound_to_either(const char *dev, const char *file)
{
	char deleted[PATH_MAX + 16];
	t_pathf(deleted, sizeof(deleted), "%s (deleted)", file);
	return loop_bound_to(dev, file) || loop_bound_to(dev, deleted);
}

static void cleanup_all(void)
{
	for (size_t i = 0; i < tracked.n_holders; i++)
		t_kill_and_reap(tracked.holders[i]);
	if (tracked.mount[0])
		umount2(tracked.mount, MNT_DETACH);
	for (size_t i = 0; i < tracked.n_dm; i++)
		sh("dmsetup remove --retry '%s' >/dev/null 2>&1", tracked.dm[i]);
	/* Only a loop still bound to our file: its number may serve another test by now. */
	for (size_t i = 0; i < tracked.n_loops; i++)
		if (loop_bound_to_either(tracked.loops[i].dev, tracked.loops[i].file))
			sh("losetup -d '%s'", tracked.loops[i].dev);
	/* Only now: a loop attached in another namespace is named by it only while it lives. */
	for (size_t i = 0; i < tracked.n_ns_keepers; i++)
		t_kill_and_reap(tracked.ns_keepers[i]);
	for (size_t i = 0; i < tracked.n_links; i++)
		if (if_nametoindex(tracked.links[i]) != 0)
			sh("ip link del '%s'", tracked.links[i]);
	if (tracked.dir)
		t_cleanup_dir(tracked.dir);
}

static void fixture_setup(struct fixture *f, const char *tag)
{
	t_require_root();
	tracked.dir = t_make_temp_dir(tag);
	atexit(cleanup_all);
	t_pathf(f->api_root, sizeof(f->api_root), "%s/vms", tracked.dir);
	t_pathf(f->loop_root, sizeof(f->loop_root), "%s/images", tracked.dir);
	t_pathf(f->outside, sizeof(f->outside), "%s/outside", tracked.dir);
	CHECK(mkdir(f->api_root, 0755) == 0, "mkdir");
	CHECK(mkdir(f->loop_root, 0755) == 0, "mkdir");
	CHECK(mkdir(f->outside, 0755) == 0, "mkdir");
	t_helper_start_default(&f->helper, f->api_root, f->loop_root);
	t_helper_hello(&f->helper);
}

/* Stop the helper and return all it wrote (its audit lines). Caller frees. */
static char *fixture_stop(struct fixture *f)
{
	t_helper_stop(&f->helper);
	char *out = t_helper_output(&f->helper);
	close(f->helper.stderr_fd);
	fputs(out, stdout); /* meson keeps it in the test log */
	return out;
}

static void track_link(const char *name)
{
	CHECK(tracked.n_links < MAX_TRACKED, "too many links");
	snprintf(tracked.links[tracked.n_links++], IF_NAMESIZE, "%s", name);
}

/* Create a link with `ip`, name first tracked so that cleanup runs whatever happens. */
static void make_link(const char *name, const char *peer, const char *how)
{
	track_link(name);
	if (peer)
		track_link(peer);
	int r = peer ? sh("ip link add %s type veth peer name %s", name, peer) : sh("ip %s", how);
	CHECK(r == 0, "creating link %s failed", name);
	CHECK(if_nametoindex(name) != 0, "link %s does not exist", name);
}

static void make_tap(const char *name, const char *mode)
{
	char how[128];
	t_pathf(how, sizeof(how), "tuntap add dev %s mode %s", name, mode);
	make_link(name, NULL, how);
}

/* A 1 MiB file. */
static void make_image(const char *file)
{
	int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "creating %s: %s", file, strerror(errno));
	close(fd);
}

/* Track dev for cleanup as bound to the backing file the kernel names (kernel_name). */
static void track_loop(const char *dev, const char *kernel_name)
{
	CHECK(strncmp(dev, "/dev/loop", 9) == 0, "losetup gave '%s'", dev);
	CHECK(tracked.n_loops < MAX_TRACKED, "too many loops");
	t_pathf(tracked.loops[tracked.n_loops].dev, sizeof(tracked.loops[0].dev), "%s", dev);
	t_pathf(tracked.loops[tracked.n_loops].file, sizeof(tracked.loops[0].file), "%s",
		kernel_name);
	tracked.n_loops++;
	CHECK(loop_bound_to(dev, kernel_name), "%s is not bound to %s", dev, kernel_name);
}

/* Attach file (opened by that name) to a fresh loop device; the kernel names it kernel_name. */
static void attach_loop(const char *file, const char *kernel_name, char *dev, size_t dev_size)
{
	char cmd[PATH_MAX + 64];
	t_pathf(cmd, sizeof(cmd), "losetup -f --show '%s'", file);
	FILE *p = popen(cmd, "r");
	CHECK(p && fgets(dev, (int)dev_size, p), "losetup -f --show %s", file);
	dev[strcspn(dev, "\n")] = '\0';
	CHECK(pclose(p) == 0, "losetup -f --show %s", file);
	track_loop(dev, kernel_name);
}

/* A 1 MiB file dir/name attached to a fresh loop device; dev gets /dev/loopN. */
static void make_loop(const char *dir, const char *name, char *file, size_t file_size, char *dev,
		      size_t dev_size)
{
	t_pathf(file, file_size, "%s/%s", dir, name);
	make_image(file);
	attach_loop(file, file, dev, dev_size);
}

/*
 * The child of make_loop_elsewhere(): in a mount namespace of its own,
 * bind-mount over on at, attach file and print the device to out; then
 * live on, because the kernel's name for the file is only as good as the
 * namespace that gave it (once that is gone, the name is "/x.img").
 */
static _noreturn_ void attach_elsewhere(const char *over, const char *at, const char *file, int out)
{
	char cmd[PATH_MAX + 64];
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Not a copy of the helper's socket: the helper must see EOF when we close ours. */
	close_range(3, (unsigned)out - 1, 0);
	close_range((unsigned)out + 1, ~0U, 0);
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(over, at, NULL, MS_BIND, NULL) < 0 || dup2(out, STDOUT_FILENO) < 0)
		_exit(1);
	snprintf(cmd, sizeof(cmd), "losetup -f --show '%s'", file);
	if (system(cmd) != 0)
		_exit(1);
	close(STDOUT_FILENO);
	close(out);
	for (;;)
		pause();
}

/*
 * A loop attached from another mount namespace, one in which the directory
 * over is bind-mounted on at: the kernel names its backing file at/name,
 * while in ours, and the helper's, that path leads nowhere or elsewhere;
 * the file really is over/name. This is how a loop someone else made (a
 * container, another service) looks to the helper.
 */
static void make_loop_elsewhere(const char *over, const char *at, const char *name, char *file,
				size_t file_size, char *dev, size_t dev_size)
{
	int out[2];
	t_pathf(file, file_size, "%s/%s", at, name);
	CHECK(tracked.n_ns_keepers < MAX_TRACKED, "too many namespaces");
	CHECK(pipe2(out, O_CLOEXEC) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0)
		attach_elsewhere(over, at, file, out[1]);
	close(out[1]);
	tracked.ns_keepers[tracked.n_ns_keepers++] = pid;
	FILE *p = fdopen(out[0], "r");
	CHECK(p, "fdopen");
	bool got = fgets(dev, (int)dev_size, p) != NULL;
	fclose(p);
	CHECK(got, "attaching %s from another mount namespace failed", file);
	dev[strcspn(dev, "\n")] = '\0';
	track_loop(dev, file);
}

#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/*
 * Answer ENOSYS to openat2 in this process and all it starts, the helper
 * included, as systemd's RestrictSUIDSGID= does in the helper's unit: the
 * helper must then walk beneath a loop root by hand, just as strictly.
 */
static void hide_openat2(void)
{
#ifdef NATIVE_AUDIT_ARCH
	struct sock_filter code[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = ELEMENTSOF(code), .filter = code};
	t_require_root();
	CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0, "seccomp: %s",
	      strerror(errno));
	CHECK(syscall(SYS_openat2, AT_FDCWD, "/", NULL, 0) < 0 && errno == ENOSYS,
	      "openat2 is not hidden");
#else
	SKIP("no seccomp filter for this architecture in this test");
#endif
}

/*
 * Run this case, and the helper it starts, in a mount namespace of its
 * own, so that no mount it makes can outlive it in the host's.
 */
static void private_mount_namespace(void)
{
	t_require_root();
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		SKIP("no private mount namespace here: %s", strerror(errno));
}

/* A child that holds dev open until it is killed; returns once the device is open. */
static pid_t hold_open(const char *dev)
{
	int ready[2];
	char c;
	CHECK(pipe2(ready, O_CLOEXEC) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		/* Not a copy of the helper's socket: the helper must see EOF when we close ours. */
		close_range(3, (unsigned)ready[1] - 1, 0);
		close_range((unsigned)ready[1] + 1, ~0U, 0);
		int fd = open(dev, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	CHECK(read(ready[0], &c, 1) == 1, "holder of %s did not open it", dev);
	close(ready[0]);
	CHECK(tracked.n_holders < MAX_TRACKED, "too many holders");
	tracked.holders[tracked.n_holders++] = pid;
	return pid;
}

static void release(pid_t pid)
{
	t_kill_and_reap(pid);
	for (size_t i = 0; i < tracked.n_holders; i++)
		if (tracked.holders[i] == pid)
			tracked.holders[i] = tracked.holders[--tracked.n_holders];
}

struct request {
	const char *dm[PS_TEARDOWN_MAX_DM];
	const char *loops[PS_TEARDOWN_MAX_LOOPS];
	uint64_t loop_diskseq[PS_TEARDOWN_MAX_LOOPS];
	const char *tap;
	uint32_t tap_ifindex;
};

static void teardown(struct fixture *f, const struct request *rq, struct ps_teardown_reply *out)
{
	static struct ps_teardown q;
	struct ps_message m;
	char why[512];
	uint64_t id = f->helper.next_id++;

	memset(&q, 0, sizeof(q));
	strcpy(q.caller.call, "test");
	for (; q.n_dm < PS_TEARDOWN_MAX_DM && rq->dm[q.n_dm]; q.n_dm++)
		CHECK(field_set(q.dm[q.n_dm], PS_DM_NAME_MAX, rq->dm[q.n_dm]) == 0, "dm name");
	for (; q.n_loops < PS_TEARDOWN_MAX_LOOPS && rq->loops[q.n_loops]; q.n_loops++) {
		CHECK(field_set(q.loops[q.n_loops], PS_PATH_MAX, rq->loops[q.n_loops]) == 0,
		      "loop name");
		q.loop_diskseq[q.n_loops] = rq->loop_diskseq[q.n_loops];
	}
	CHECK(field_set(q.tap, sizeof(q.tap), rq->tap ? rq->tap : "") == 0, "tap name");
	q.tap_ifindex = rq->tap_ifindex;
	CHECK(ps_send(f->helper.sock, PS_TEARDOWN, id, &q, sizeof(q), NULL, 0) == 0, "send");
	struct pollfd p = {.fd = f->helper.sock, .events = POLLIN};
	CHECK(poll(&p, 1, 60000) == 1, "no teardown reply within 60 s");
	int r = ps_recv_reply(f->helper.sock, false, &m, why, sizeof(why));
	CHECK(r == 1, "receiving the reply: %d %s", r, r == -EBADMSG ? why : strerror(-r));
	CHECK(m.header.type == PS_TEARDOWN_REPLY && m.header.request_id == id, "reply type/id");
	*out = m.payload.teardown_reply;
	CHECK(out->err == 0, "whole request failed: %s", strerror(-out->err));
	size_t want = q.n_dm + q.n_loops + (rq->tap ? 1 : 0);
	CHECK(out->count == want, "%u results for %zu items", out->count, want);
}

static void expect(const struct ps_teardown_reply *rep, size_t i, int kind, const char *name,
		   int status, int reason)
{
	const struct ps_teardown_result *r = &rep->results[i];
	CHECK(r->kind == (uint32_t)kind && strcmp(r->name, name) == 0,
	      "result %zu is %s %s, want %s %s", i, ps_resource_kind_name((int)r->kind), r->name,
	      ps_resource_kind_name(kind), name);
	CHECK(r->status == (uint32_t)status && r->reason == reason,
	      "%s %s: got %s/%s (err %d), want %s/%s", ps_resource_kind_name(kind), name,
	      ps_teardown_status_name((int)r->status), ps_reason_name(r->reason), r->err,
	      ps_teardown_status_name(status), ps_reason_name(reason));
	bool done_or_refused = status == PS_TEARDOWN_REMOVED || status == PS_TEARDOWN_ABSENT ||
			       status == PS_TEARDOWN_REFUSED || reason == PS_REASON_DEPENDENCY_BUSY;
	CHECK(done_or_refused ? r->err == 0 : r->err < 0, "%s: err %d with status %s", name, r->err,
	      ps_teardown_status_name(status));
}

/*
 * A second teardown of a device that was removed finds it absent, or, when
 * a test running in parallel got the free number meanwhile, bound to a file
 * outside our roots, which the helper must then refuse.
 */
static void expect_gone(const struct ps_teardown_reply *rep, size_t i, const char *dev,
			const char *file)
{
	const struct ps_teardown_result *r = &rep->results[i];
	if (r->status == PS_TEARDOWN_REFUSED && r->reason == PS_REASON_OUTSIDE_ROOTS &&
	    !loop_bound_to(dev, file))
		return;
	if (r->status == PS_TEARDOWN_REMOVED && strcmp(r->name, dev) == 0)
		return; /* the kernel's autoclear had not finished yet; now it is detached */
	expect(rep, i, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
}

static void expect_in_audit(const char *out, const char *needle)
{
	CHECK(strstr(out, needle), "audit does not contain '%s':\n%s", needle, out);
}

/* Exactly n audit lines for teardown requests. */
static void expect_teardown_lines(const char *out, int n)
{
	int count = 0;
	for (const char *s = out; (s = strstr(s, " op=teardown ")); s++)
		count++;
	CHECK(count == n, "%d teardown audit lines, want %d:\n%s", count, n, out);
}

/* --- taps ------------------------------------------------------------------ */

static void tap_removed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char tap[IF_NAMESIZE], needle[64];
	fixture_setup(&f, "td-tap");
	t_pathf(tap, sizeof(tap), "bgta%d", (int)getpid());
	make_tap(tap, "tap");
	struct request rq = {.tap = tap};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_TAP, tap, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(if_nametoindex(tap) == 0, "%s still exists", tap);
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_TAP, tap, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle), "tap=\"%s:removed\" result=ok", tap);
	expect_in_audit(out, needle);
	t_pathf(needle, sizeof(needle), "tap=\"%s:absent\" result=ok", tap);
	expect_in_audit(out, needle);
	expect_teardown_lines(out, 2);
	free(out);
}

/*
 * A stale record (or a compromised bangerd) names a live tap by the name it
 * had, with the ifindex of a link that is gone: the tap was deleted and a
 * new one made under the same name, another VM's. The helper reports it
 * absent (ifindex-changed) and leaves it, with the same ifindex, in place;
 * the audit names both numbers. With its own ifindex it is deleted.
 */
static void tap_ifindex_changed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char tap[IF_NAMESIZE], needle[128];
	fixture_setup(&f, "td-tap-ifindex");
	t_pathf(tap, sizeof(tap), "bgtifx%d", (int)getpid());
	make_tap(tap, "tap");
	unsigned old = if_nametoindex(tap);
	CHECK(sh("ip link del %s", tap) == 0, "deleting %s", tap);
	make_tap(tap, "tap");
	unsigned now = if_nametoindex(tap);
	CHECK(now != 0 && now != old, "%s re-created with ifindex %u (was %u)", tap, now, old);

	struct request stale = {.tap = tap, .tap_ifindex = old};
	teardown(&f, &stale, &rep);
	expect(&rep, 0, PS_RESOURCE_TAP, tap, PS_TEARDOWN_ABSENT, PS_REASON_IFINDEX_CHANGED);
	CHECK(rep.results[0].ifindex == old && rep.results[0].ifindex_found == now,
	      "the result names ifindex %u recorded, %u found: got %u, %u", old, now,
	      rep.results[0].ifindex, rep.results[0].ifindex_found);
	CHECK(if_nametoindex(tap) == now, "%s was touched for another link's ifindex", tap);

	struct request own = {.tap = tap, .tap_ifindex = now};
	teardown(&f, &own, &rep);
	expect(&rep, 0, PS_RESOURCE_TAP, tap, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(if_nametoindex(tap) == 0, "%s still exists", tap);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle), "tap=\"%s:absent(ifindex %u != recorded %u)\" result=ok",
		tap, now, old);
	expect_in_audit(out, needle);
	t_pathf(needle, sizeof(needle), "tap=\"%s:removed\" result=ok", tap);
	expect_in_audit(out, needle);
	expect_teardown_lines(out, 2);
	free(out);
}

/* A link that must be refused: still there afterwards, and the audit line says why. */
static void expect_tap_refused(struct fixture *f, const char *name, int reason)
{
	struct ps_teardown_reply rep;
	char needle[128];
	struct request rq = {.tap = name};
	teardown(f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_TAP, name, PS_TEARDOWN_REFUSED, reason);
	CHECK(if_nametoindex(name) != 0, "refused link %s was deleted", name);
	char *out = fixture_stop(f);
	t_pathf(needle, sizeof(needle), "tap=\"%s:refused(%s)\" result=partial", name,
		ps_reason_name(reason));
	expect_in_audit(out, needle);
	expect_teardown_lines(out, 1);
	free(out);
}

static void tap_refused_no_prefix(void)
{
	struct fixture f;
	char tap[IF_NAMESIZE];
	fixture_setup(&f, "td-noprefix");
	t_pathf(tap, sizeof(tap), "xb%d", (int)getpid());
	make_tap(tap, "tap");
	expect_tap_refused(&f, tap, PS_REASON_MISSING_PREFIX);
}

static void tap_refused_veth(void)
{
	struct fixture f;
	char veth[IF_NAMESIZE], peer[IF_NAMESIZE];
	fixture_setup(&f, "td-veth");
	t_pathf(veth, sizeof(veth), "bgtv%d", (int)getpid());
	t_pathf(peer, sizeof(peer), "xp%d", (int)getpid());
	make_link(veth, peer, NULL);
	expect_tap_refused(&f, veth, PS_REASON_WRONG_LINK_KIND);
	CHECK(if_nametoindex(peer) != 0, "the veth peer went away");
}

static void tap_refused_bridge(void)
{
	struct fixture f;
	char br[IF_NAMESIZE], how[64];
	fixture_setup(&f, "td-bridge");
	t_pathf(br, sizeof(br), "bgtb%d", (int)getpid());
	t_pathf(how, sizeof(how), "link add %s type bridge", br);
	make_link(br, NULL, how);
	expect_tap_refused(&f, br, PS_REASON_WRONG_LINK_KIND);
}

static void tap_refused_tun_mode(void)
{
	struct fixture f;
	char tun[IF_NAMESIZE];
	fixture_setup(&f, "td-tun");
	t_pathf(tun, sizeof(tun), "bgtn%d", (int)getpid());
	make_tap(tun, "tun");
	expect_tap_refused(&f, tun, PS_REASON_WRONG_LINK_KIND);
}

/* --- loops ----------------------------------------------------------------- */

static void loop_removed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file1[PATH_MAX], dev1[32], file2[PATH_MAX], dev2[32], needle[PATH_MAX + 128];
	fixture_setup(&f, "td-loop");
	make_loop(f.loop_root, "a.img", file1, sizeof(file1), dev1, sizeof(dev1));
	make_loop(f.loop_root, "b.img", file2, sizeof(file2), dev2, sizeof(dev2));
	struct request rq = {.loops = {dev1, file2}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev1, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_LOOP, file2, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(!loop_bound_to(dev1, file1), "%s still bound to %s", dev1, file1);
	CHECK(!loop_bound_to(dev2, file2), "%s still bound to %s", dev2, file2);
	CHECK(sh("losetup -j '%s' | grep -q .", file1) != 0, "losetup -j still lists %s", file1);
	CHECK(sh("losetup -j '%s' | grep -q .", file2) != 0, "losetup -j still lists %s", file2);
	teardown(&f, &rq, &rep);
	expect_gone(&rep, 0, dev1, file1);
	expect(&rep, 1, PS_RESOURCE_LOOP, file2, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle), "loops=\"%s:removed,%s:removed\"", dev1, file2);
	expect_in_audit(out, needle);
	t_pathf(needle, sizeof(needle), ",%s:absent\"", file2);
	expect_in_audit(out, needle);
	free(out);
}

static void loop_refused_outside_roots(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32];
	fixture_setup(&f, "td-outside");
	make_loop(f.outside, "x.img", file, sizeof(file), dev, sizeof(dev));
	struct request rq = {.loops = {dev, file}};
	teardown(&f, &rq, &rep);
	/* By device: the kernel's backing file decides; by file: the name alone does. */
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	expect(&rep, 1, PS_RESOURCE_LOOP, file, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	CHECK(loop_bound_to(dev, file), "refused %s was detached", dev);
	char *out = fixture_stop(&f);
	expect_in_audit(out, ":refused(outside-roots)\" tap=\"\" result=partial");
	free(out);
}

static void loop_refused_bad_name(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32], slash[48], doubled[48], dotdot[PATH_MAX], twice[PATH_MAX];
	fixture_setup(&f, "td-badname");
	make_loop(f.loop_root, "x.img", file, sizeof(file), dev, sizeof(dev));
	/* Spellings that lead to the real loop or its file, and ones that lead elsewhere. */
	t_pathf(slash, sizeof(slash), "%s/", dev);
	t_pathf(doubled, sizeof(doubled), "/dev//%s", path_basename(dev));
	t_pathf(dotdot, sizeof(dotdot), "%s/../images/x.img", f.loop_root);
	t_pathf(twice, sizeof(twice), "%s//x.img", f.loop_root);
	struct request rq = {.loops = {"/dev/loop1/../sda", "/dev/loopX", "/dev/sda",
				       "relative.img", slash, doubled, dotdot, twice}};
	teardown(&f, &rq, &rep);
	for (size_t i = 0; i < PS_TEARDOWN_MAX_LOOPS; i++)
		expect(&rep, i, PS_RESOURCE_LOOP, rq.loops[i], PS_TEARDOWN_REFUSED,
		       PS_REASON_BAD_NAME);
	CHECK(loop_bound_to(dev, file), "%s was detached", dev);
	char *out = fixture_stop(&f);
	expect_in_audit(out, "loops=\"/dev/loop1/../sda:refused(bad-name),/dev/loopX:refused");
	expect_in_audit(out, "result=partial");
	free(out);
}

/*
 * The longest TEARDOWN (a compromised bangerd's, or an honest one with long backing paths):
 * eight loop files of 250 bytes with the list's separators in them, DM names that try to
 * forge results, a real tap. The audit line stays whole (result, errno and duration after
 * every list) and each name is one item: its separators come out escaped.
 */
static void audit_whole(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char tap[IF_NAMESIZE], needle[128];
	static char files[PS_TEARDOWN_MAX_LOOPS][PS_PATH_MAX];
	fixture_setup(&f, "td-audit");
	t_pathf(tap, sizeof(tap), "bgtw%d", (int)getpid());
	make_tap(tap, "tap");
	struct request rq = {
	    .tap = tap, .dm = {"bangertest-vm1:removed,bangertest-x", "bangertest-y(ok),z:absent"}};
	for (size_t i = 0; i < PS_TEARDOWN_MAX_LOOPS; i++) {
		size_t n =
		    (size_t)snprintf(files[i], sizeof(files[i]), "%s/(x),y:%zu-", f.loop_root, i);
		memset(files[i] + n, 'a', 250 - n);
		files[i][250] = '\0';
		rq.loops[i] = files[i];
	}
	teardown(&f, &rq, &rep);
	CHECK(if_nametoindex(tap) == 0, "%s still exists", tap);
	char *out = fixture_stop(&f);
	const char *line = strstr(out, "op=teardown");
	CHECK(line, "no teardown audit line:\n%s", out);
	const char *end = strchr(line, '\n');
	size_t len = end ? (size_t)(end - line) : strlen(line);
	CHECK(len > 2200 && !memmem(line, len, "...", 3), "the audit line was cut (%zu bytes)",
	      len);
	t_pathf(needle, sizeof(needle), "tap=\"%s:removed\" result=", tap);
	CHECK(memmem(line, len, needle, strlen(needle)), "no '%s' on the line:\n%.*s", needle,
	      (int)len, line);
	CHECK(memmem(line, len, " errno=", 7) && memmem(line, len, " dur_us=", 8),
	      "errno and duration lost:\n%.*s", (int)len, line);
	expect_in_audit(out, "dm=\"bangertest-vm1\\\\x3aremoved\\\\x2cbangertest-x:");
	expect_in_audit(out, ",bangertest-y\\\\x28ok\\\\x29\\\\x2cz\\\\x3aabsent:");
	expect_in_audit(out, "/\\\\x28x\\\\x29\\\\x2cy\\\\x3a7-aaaa");
	free(out);
}

static void loop_deleted_backing(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file1[PATH_MAX], dev1[32], file2[PATH_MAX], dev2[32];
	fixture_setup(&f, "td-deleted");
	make_loop(f.loop_root, "a.img", file1, sizeof(file1), dev1, sizeof(dev1));
	make_loop(f.loop_root, "b.img", file2, sizeof(file2), dev2, sizeof(dev2));
	/* An image deleted while its loop lives: the kernel names it "PATH (deleted)". */
	CHECK(unlink(file1) == 0 && unlink(file2) == 0, "unlink");
	struct request rq = {.loops = {dev1, file2}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev1, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_LOOP, file2, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	char backing[PATH_MAX];
	loop_backing(dev1, backing, sizeof(backing));
	CHECK(!strstr(backing, file1), "%s still bound to %s", dev1, backing);
	loop_backing(dev2, backing, sizeof(backing));
	CHECK(!strstr(backing, file2), "%s still bound to %s", dev2, backing);
	free(fixture_stop(&f));
}

/*
 * The kernel's path for a backing file can lead somewhere else by the time
 * it is read: here a bind mount covers the images dir with a decoy of the
 * same name. The file there is not the loop's file, so nothing is detached.
 */
static void loop_backing_changed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32], decoy_dir[600], decoy[PATH_MAX];
	fixture_setup(&f, "td-changed");
	make_loop(f.loop_root, "a.img", file, sizeof(file), dev, sizeof(dev));
	t_pathf(decoy_dir, sizeof(decoy_dir), "%s/decoy", f.outside);
	t_pathf(decoy, sizeof(decoy), "%s/a.img", decoy_dir);
	CHECK(mkdir(decoy_dir, 0755) == 0, "mkdir");
	int fd = open(decoy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "creating %s", decoy);
	close(fd);
	if (mount(decoy_dir, f.loop_root, NULL, MS_BIND, NULL) < 0)
		SKIP("bind mount not permitted here: %s", strerror(errno));
	t_pathf(tracked.mount, sizeof(tracked.mount), "%s", f.loop_root);
	struct request rq = {.loops = {dev}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED);
	CHECK(loop_bound_to(dev, file), "%s was detached", dev);
	CHECK(umount2(f.loop_root, MNT_DETACH) == 0, "umount %s", f.loop_root);
	tracked.mount[0] = '\0';
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	char *out = fixture_stop(&f);
	expect_in_audit(out, ":refused(backing-changed)\"");
	free(out);
}

/*
 * The kernel's name for a backing file is only true in the mount namespace
 * that opened it. Here a bind mount, in this namespace only, hides the
 * images dir as the helper's PrivateTmp= or ProtectHome= would: the name
 * leads nowhere, which proves nothing, so nothing is detached until the
 * file can be seen again.
 */
static void loop_refused_hidden(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char vm_dir[600], file[PATH_MAX], dev[32], empty[600], needle[2 * PATH_MAX + 64];
	private_mount_namespace();
	fixture_setup(&f, "td-hidden");
	/* Two levels down, so that the open that finally finds it crosses a directory. */
	t_pathf(vm_dir, sizeof(vm_dir), "%s/vm", f.loop_root);
	CHECK(mkdir(vm_dir, 0755) == 0, "mkdir");
	make_loop(vm_dir, "x.img", file, sizeof(file), dev, sizeof(dev));
	t_pathf(empty, sizeof(empty), "%s/empty", f.outside);
	CHECK(mkdir(empty, 0755) == 0, "mkdir");
	CHECK(mount(empty, f.loop_root, NULL, MS_BIND, NULL) == 0, "bind mount: %s",
	      strerror(errno));
	t_pathf(tracked.mount, sizeof(tracked.mount), "%s", f.loop_root);
	CHECK(access(file, F_OK) < 0 && errno == ENOENT, "%s is not hidden", file);
	struct request rq = {.loops = {dev, file}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED);
	expect(&rep, 1, PS_RESOURCE_LOOP, file, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED);
	CHECK(loop_bound_to(dev, file), "%s was detached", dev);
	CHECK(umount2(f.loop_root, MNT_DETACH) == 0, "umount %s", f.loop_root);
	tracked.mount[0] = '\0';
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_LOOP, file, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle),
		"loops=\"%s:refused(backing-changed),%s:refused(backing-changed)\" tap=\"\" "
		"result=partial",
		dev, file);
	expect_in_audit(out, needle);
	free(out);
}

/*
 * The attack: a loop made in another mount namespace, where a directory
 * outside every root was bind-mounted on the images dir. The kernel names
 * its file as under the root; the file is not, and the name leads nowhere
 * here. By device or by that name, it is refused and stays bound.
 */
static void loop_refused_other_namespace(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char real[PATH_MAX], file[PATH_MAX], dev[32], needle[2 * PATH_MAX + 64];
	private_mount_namespace();
	fixture_setup(&f, "td-otherns");
	t_pathf(real, sizeof(real), "%s/x.img", f.outside);
	make_image(real);
	make_loop_elsewhere(f.outside, f.loop_root, "x.img", file, sizeof(file), dev, sizeof(dev));
	CHECK(access(file, F_OK) < 0 && errno == ENOENT, "%s exists here", file);
	struct request rq = {.loops = {dev, file}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED);
	expect(&rep, 1, PS_RESOURCE_LOOP, file, PS_TEARDOWN_REFUSED, PS_REASON_BACKING_CHANGED);
	CHECK(loop_bound_to(dev, file), "%s was detached", dev);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle),
		"loops=\"%s:refused(backing-changed),%s:refused(backing-changed)\" tap=\"\" "
		"result=partial",
		dev, file);
	expect_in_audit(out, needle);
	free(out);
}

/*
 * Symlinks in a root never count as "under" it. A loop attached through
 * ROOT/link -> outside is named by the kernel where its file really is,
 * outside. Two loops attached in another namespace are named
 * ROOT/sub/x.img and ROOT/y.img; here ROOT/sub and ROOT/y.img are
 * symlinks to those very files (the directory, the file). Following them,
 * as stat() did, finds the loops' own files; the names do not open
 * beneath the root, so all three are refused and stay bound.
 */
static void loop_refused_symlink(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char real_dir[600], link[600], via_link[PATH_MAX], real[PATH_MAX], dev1[32];
	char other[600], path[PATH_MAX], sub_file[PATH_MAX], dev2[32], y_file[PATH_MAX], dev3[32];
	private_mount_namespace();
	fixture_setup(&f, "td-symlink");

	t_pathf(real_dir, sizeof(real_dir), "%s/real", f.outside);
	t_pathf(link, sizeof(link), "%s/link", f.loop_root);
	t_pathf(via_link, sizeof(via_link), "%s/x.img", link);
	t_pathf(real, sizeof(real), "%s/x.img", real_dir);
	CHECK(mkdir(real_dir, 0755) == 0 && symlink(real_dir, link) == 0, "mkdir/symlink");
	make_image(real);
	attach_loop(via_link, real, dev1, sizeof(dev1));

	t_pathf(other, sizeof(other), "%s/other", f.outside);
	t_pathf(path, sizeof(path), "%s/sub", other);
	CHECK(mkdir(other, 0755) == 0 && mkdir(path, 0755) == 0, "mkdir");
	t_pathf(path, sizeof(path), "%s/sub/x.img", other);
	make_image(path);
	t_pathf(path, sizeof(path), "%s/y.img", other);
	make_image(path);
	make_loop_elsewhere(other, f.loop_root, "sub/x.img", sub_file, sizeof(sub_file), dev2,
			    sizeof(dev2));
	make_loop_elsewhere(other, f.loop_root, "y.img", y_file, sizeof(y_file), dev3,
			    sizeof(dev3));
	t_pathf(path, sizeof(path), "%s/sub", other);
	t_pathf(link, sizeof(link), "%s/sub", f.loop_root);
	CHECK(symlink(path, link) == 0, "symlink %s", link);
	t_pathf(path, sizeof(path), "%s/y.img", other);
	t_pathf(link, sizeof(link), "%s/y.img", f.loop_root);
	CHECK(symlink(path, link) == 0, "symlink %s", link);

	struct request rq = {.loops = {dev1, via_link, dev2, sub_file, dev3, y_file}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev1, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	/* No loop has that name in the kernel's words: nothing to do, and nothing opened. */
	expect(&rep, 1, PS_RESOURCE_LOOP, via_link, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	for (size_t i = 2; i < 6; i++)
		expect(&rep, i, PS_RESOURCE_LOOP, rq.loops[i], PS_TEARDOWN_REFUSED,
		       PS_REASON_BACKING_CHANGED);
	CHECK(loop_bound_to(dev1, real), "%s was detached", dev1);
	CHECK(loop_bound_to(dev2, sub_file), "%s was detached", dev2);
	CHECK(loop_bound_to(dev3, y_file), "%s was detached", dev3);
	char *out = fixture_stop(&f);
	expect_in_audit(out, ":refused(outside-roots),");
	expect_in_audit(out, "/x.img:absent,");
	expect_in_audit(out, "/y.img:refused(backing-changed)\" tap=\"\" result=partial");
	free(out);
}

/*
 * The kernel's " (deleted)" mark: a file whose name merely ends so is
 * detached like any file under the root; a deleted file outside every
 * root is refused on its name without the mark.
 */
static void loop_deleted_name(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file1[PATH_MAX], dev1[32], file2[PATH_MAX], dev2[32], gone[PATH_MAX + 16];
	fixture_setup(&f, "td-delname");
	make_loop(f.loop_root, "a.img (deleted)", file1, sizeof(file1), dev1, sizeof(dev1));
	make_loop(f.outside, "b.img", file2, sizeof(file2), dev2, sizeof(dev2));
	CHECK(unlink(file2) == 0, "unlink");
	t_pathf(gone, sizeof(gone), "%s (deleted)", file2);
	CHECK(loop_bound_to(dev2, gone), "%s is not named as deleted", dev2);
	struct request rq = {.loops = {dev1, dev2}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev1, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_LOOP, dev2, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	CHECK(!loop_bound_to(dev1, file1), "%s still bound to %s", dev1, file1);
	CHECK(loop_bound_to(dev2, gone), "%s was detached", dev2);
	free(fixture_stop(&f));
}

/* The same cases with openat2 hidden: the helper walks beneath the root by hand. */
static void loop_refused_hidden_walk(void)
{
	hide_openat2();
	loop_refused_hidden();
}

static void loop_refused_other_namespace_walk(void)
{
	hide_openat2();
	loop_refused_other_namespace();
}

static void loop_refused_symlink_walk(void)
{
	hide_openat2();
	loop_refused_symlink();
}

/* The kernel's disk sequence number of dev, read through the device as the helper does. */
static uint64_t diskseq_of(const char *dev)
{
	uint64_t seq = 0;
	_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && ioctl(fd, BLKGETDISKSEQ, &seq) == 0 && seq > 0, "diskseq of %s: %s", dev,
	      strerror(errno));
	return seq;
}

/*
 * A compromised bangerd (or a record of an attach long gone) names a live
 * loop under the roots, with a diskseq that is not its attach's: an earlier
 * attach of the number, a later one, and by its backing file. The loop is
 * absent for each, and stays bound; the audit names both numbers. With its
 * own diskseq the same request detaches it.
 */
static void loop_diskseq_changed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32], needle[PATH_MAX + 128];
	fixture_setup(&f, "td-diskseq");
	make_loop(f.loop_root, "a.img", file, sizeof(file), dev, sizeof(dev));
	uint64_t seq = diskseq_of(dev);
	struct request rq = {.loops = {dev, dev, file},
			     .loop_diskseq = {seq - 1, seq + 7, seq - 1}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_ABSENT, PS_REASON_DISKSEQ_CHANGED);
	expect(&rep, 1, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_ABSENT, PS_REASON_DISKSEQ_CHANGED);
	expect(&rep, 2, PS_RESOURCE_LOOP, file, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	CHECK(rep.results[0].diskseq == seq - 1 && rep.results[0].diskseq_found == seq &&
		  rep.results[1].diskseq == seq + 7 && rep.results[1].diskseq_found == seq,
	      "results name the recorded and found diskseqs");
	CHECK(loop_bound_to(dev, file), "%s was detached for another attach's diskseq", dev);
	CHECK(diskseq_of(dev) == seq, "%s was touched (diskseq %llu, was %llu)", dev,
	      (unsigned long long)diskseq_of(dev), (unsigned long long)seq);

	struct request own = {.loops = {dev}, .loop_diskseq = {seq}};
	teardown(&f, &own, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(!loop_bound_to(dev, file), "%s still bound to %s", dev, file);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle),
		"loops=\"%s:absent(diskseq %llu != recorded %llu),%s:absent(diskseq %llu != "
		"recorded %llu),%s:absent\" tap=\"\" result=ok",
		dev, (unsigned long long)seq, (unsigned long long)(seq - 1), dev,
		(unsigned long long)seq, (unsigned long long)(seq + 7), file);
	expect_in_audit(out, needle);
	t_pathf(needle, sizeof(needle), "loops=\"%s:removed\"", dev);
	expect_in_audit(out, needle);
	free(out);
}

static void loop_busy(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32];
	fixture_setup(&f, "td-busy");
	make_loop(f.loop_root, "x.img", file, sizeof(file), dev, sizeof(dev));
	pid_t holder = hold_open(dev);
	struct request rq = {.loops = {dev}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_BUSY, PS_REASON_NONE);
	CHECK(rep.results[0].err == -EBUSY, "err %d, want -EBUSY", rep.results[0].err);
	CHECK(loop_bound_to(dev, file), "busy %s was detached under its holder", dev);
	release(holder);
	teardown(&f, &rq, &rep);
	/* The deferred detach (autoclear) has most likely finished it when the holder closed. */
	expect_gone(&rep, 0, dev, file);
	CHECK(!loop_bound_to(dev, file), "%s still bound", dev);
	char *out = fixture_stop(&f);
	char needle[128];
	t_pathf(needle, sizeof(needle), "loops=\"%s:busy(EBUSY)\"", dev);
	expect_in_audit(out, needle);
	free(out);
}

/* --- device mapper --------------------------------------------------------- */

static void dm_policy(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char longest[PS_DM_NAME_MAX];
	fixture_setup(&f, "td-dm");
	/* 127 bytes, the longest name DM allows: valid, and nowhere to be found. */
	memset(longest, 'x', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	memcpy(longest, "bangertest-", strlen("bangertest-"));
	struct request rq = {.dm = {"other-vm1", "bangertest-a/b", "BANGERTEST-vm1", longest,
				    "bangertest-never-created"}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_DM, "other-vm1", PS_TEARDOWN_REFUSED, PS_REASON_MISSING_PREFIX);
	expect(&rep, 1, PS_RESOURCE_DM, "bangertest-a/b", PS_TEARDOWN_REFUSED, PS_REASON_BAD_NAME);
	expect(&rep, 2, PS_RESOURCE_DM, "BANGERTEST-vm1", PS_TEARDOWN_REFUSED,
	       PS_REASON_MISSING_PREFIX);
	expect(&rep, 3, PS_RESOURCE_DM, longest, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	expect(&rep, 4, PS_RESOURCE_DM, "bangertest-never-created", PS_TEARDOWN_ABSENT,
	       PS_REASON_NONE);

	/*
	 * Over-long (128 bytes and more) cannot even be spelled on the wire:
	 * the field has no room for its terminator, and the helper treats
	 * that as the protocol violation it is: it exits, having done nothing.
	 */
	static unsigned char buf[sizeof(struct ps_header) + sizeof(struct ps_teardown)];
	struct ps_header h = {PS_MAGIC, PS_PROTOCOL_VERSION,	    PS_TEARDOWN,
			      77,	sizeof(struct ps_teardown), 0};
	struct ps_teardown *q = (struct ps_teardown *)(buf + sizeof(h));
	memcpy(buf, &h, sizeof(h));
	strcpy(q->caller.call, "test");
	q->n_dm = 1;
	memset(q->dm[0], 'x', PS_DM_NAME_MAX);
	memcpy(q->dm[0], "bangertest-", strlen("bangertest-"));
	CHECK(t_send_raw(f.helper.sock, buf, sizeof(buf), NULL, 0) == 0, "send");
	int status = t_helper_wait(&f.helper, 5000);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "helper exit status 0x%x", status);
	char *out = fixture_stop(&f);
	expect_in_audit(out, "dm=\"other-vm1:refused(missing-prefix),bangertest-a/b:refused(bad-");
	expect_in_audit(out, "violation=\"teardown.dm[0]: unterminated string");
	expect_teardown_lines(out, 1);
	free(out);
}

static bool dm_exists(const char *name)
{
	return sh("dmsetup info '%s' >/dev/null 2>&1", name) == 0;
}

static void dm_create(const char *name, const char *uuid, const char *dev)
{
	CHECK(tracked.n_dm < MAX_TRACKED, "too many dm devices");
	t_pathf(tracked.dm[tracked.n_dm++], PS_DM_NAME_MAX, "%s", name);
	CHECK(sh("dmsetup create '%s' --uuid '%s' --table '0 2048 linear %s 0'", name, uuid, dev) ==
		  0,
	      "dmsetup create %s", name);
}

/*
 * Whether this kernel has device-mapper: its misc device is registered once
 * dm-mod is in, and /proc/misc lists every registered one by name. A fact
 * about the kernel, where a failed open of /dev/mapper/control would be any
 * failure at all (a missing node, a denied open) taken for one.
 */
static bool kernel_has_device_mapper(void)
{
	char line[128], name[64];
	bool found = false;
	FILE *misc = fopen("/proc/misc", "re");
	CHECK(misc, "/proc/misc: %s", strerror(errno));
	while (fgets(line, sizeof(line), misc))
		if (sscanf(line, "%*u %63s", name) == 1 && strcmp(name, "device-mapper") == 0)
			found = true;
	fclose(misc);
	return found;
}

static void dm_real(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32], good[64], bad[64], uuid[64], bad_uuid[64];
	if (!kernel_has_device_mapper())
		SKIP("no device-mapper in this kernel (/proc/misc names none); real DM removal is "
		     "proven in the VM tier");
	int control = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	CHECK(control >= 0, "the kernel has device-mapper, but /dev/mapper/control: %s",
	      strerror(errno));
	close(control);
	fixture_setup(&f, "td-dmreal");
	make_loop(f.loop_root, "dm.img", file, sizeof(file), dev, sizeof(dev));
	t_pathf(good, sizeof(good), "bangertest-%d", (int)getpid());
	t_pathf(uuid, sizeof(uuid), "BANGERT-%d", (int)getpid());
	t_pathf(bad, sizeof(bad), "bangertest-%d-b", (int)getpid());
	t_pathf(bad_uuid, sizeof(bad_uuid), "OTHER-%d", (int)getpid());
	dm_create(good, uuid, dev);
	dm_create(bad, bad_uuid, dev);
	struct request rq = {.dm = {good, bad}};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_DM, good, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_DM, bad, PS_TEARDOWN_REFUSED, PS_REASON_MISSING_UUID_PREFIX);
	CHECK(!dm_exists(good), "%s still exists", good);
	CHECK(dm_exists(bad), "%s (foreign uuid) was removed", bad);
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_DM, good, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	free(fixture_stop(&f));
}

/* --- the chain and whole requests ------------------------------------------ */

static void chain(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file[PATH_MAX], dev[32], tap[IF_NAMESIZE], needle[128];
	fixture_setup(&f, "td-chain");
	make_loop(f.loop_root, "x.img", file, sizeof(file), dev, sizeof(dev));
	t_pathf(tap, sizeof(tap), "bgtc%d", (int)getpid());
	make_tap(tap, "tap");
	pid_t holder = hold_open(dev);
	struct request rq = {.loops = {dev}, .tap = tap};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_LOOP, dev, PS_TEARDOWN_BUSY, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_TAP, tap, PS_TEARDOWN_BUSY, PS_REASON_DEPENDENCY_BUSY);
	CHECK(if_nametoindex(tap) != 0, "tap %s removed although its loop was busy", tap);
	release(holder);
	teardown(&f, &rq, &rep);
	expect_gone(&rep, 0, dev, file);
	expect(&rep, 1, PS_RESOURCE_TAP, tap, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(if_nametoindex(tap) == 0, "%s still exists", tap);
	char *out = fixture_stop(&f);
	t_pathf(needle, sizeof(needle), "tap=\"%s:busy(dependency-busy)\" result=partial", tap);
	expect_in_audit(out, needle);
	free(out);
}

static void mixed(void)
{
	struct fixture f;
	struct ps_teardown_reply rep;
	char file1[PATH_MAX], dev1[32], file2[PATH_MAX], dev2[32], out_file[PATH_MAX], out_dev[32];
	char tap[IF_NAMESIZE], dm[64];
	fixture_setup(&f, "td-mixed");
	make_loop(f.loop_root, "a.img", file1, sizeof(file1), dev1, sizeof(dev1));
	make_loop(f.loop_root, "b.img", file2, sizeof(file2), dev2, sizeof(dev2));
	make_loop(f.outside, "c.img", out_file, sizeof(out_file), out_dev, sizeof(out_dev));
	t_pathf(tap, sizeof(tap), "bgtm%d", (int)getpid());
	make_tap(tap, "tap");
	t_pathf(dm, sizeof(dm), "bangertest-%d", (int)getpid());
	struct request rq = {.dm = {dm, "foreign-vm"}, .loops = {dev1, out_dev, file2}, .tap = tap};
	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_DM, dm, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_DM, "foreign-vm", PS_TEARDOWN_REFUSED,
	       PS_REASON_MISSING_PREFIX);
	expect(&rep, 2, PS_RESOURCE_LOOP, dev1, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 3, PS_RESOURCE_LOOP, out_dev, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	expect(&rep, 4, PS_RESOURCE_LOOP, file2, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	expect(&rep, 5, PS_RESOURCE_TAP, tap, PS_TEARDOWN_REMOVED, PS_REASON_NONE);
	CHECK(loop_bound_to(out_dev, out_file), "refused %s was detached", out_dev);
	CHECK(!loop_bound_to(dev1, file1) && !loop_bound_to(dev2, file2), "loops still bound");
	CHECK(if_nametoindex(tap) == 0, "%s still exists", tap);

	teardown(&f, &rq, &rep);
	expect(&rep, 0, PS_RESOURCE_DM, dm, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	expect(&rep, 1, PS_RESOURCE_DM, "foreign-vm", PS_TEARDOWN_REFUSED,
	       PS_REASON_MISSING_PREFIX);
	expect_gone(&rep, 2, dev1, file1);
	expect(&rep, 3, PS_RESOURCE_LOOP, out_dev, PS_TEARDOWN_REFUSED, PS_REASON_OUTSIDE_ROOTS);
	expect(&rep, 4, PS_RESOURCE_LOOP, file2, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	expect(&rep, 5, PS_RESOURCE_TAP, tap, PS_TEARDOWN_ABSENT, PS_REASON_NONE);
	CHECK(loop_bound_to(out_dev, out_file), "refused %s was detached", out_dev);
	char *out = fixture_stop(&f);
	expect_teardown_lines(out, 2);
	free(out);
}

static const struct t_case cases[] = {
    {"tap-removed", tap_removed},
    {"tap-ifindex-changed", tap_ifindex_changed},
    {"tap-refused-no-prefix", tap_refused_no_prefix},
    {"tap-refused-veth", tap_refused_veth},
    {"tap-refused-bridge", tap_refused_bridge},
    {"tap-refused-tun-mode", tap_refused_tun_mode},
    {"loop-removed", loop_removed},
    {"loop-refused-outside-roots", loop_refused_outside_roots},
    {"loop-refused-bad-name", loop_refused_bad_name},
    {"audit-whole", audit_whole},
    {"loop-deleted-backing", loop_deleted_backing},
    {"loop-backing-changed", loop_backing_changed},
    {"loop-refused-hidden", loop_refused_hidden},
    {"loop-refused-other-namespace", loop_refused_other_namespace},
    {"loop-refused-symlink", loop_refused_symlink},
    {"loop-deleted-name", loop_deleted_name},
    {"loop-refused-hidden-walk", loop_refused_hidden_walk},
    {"loop-refused-other-namespace-walk", loop_refused_other_namespace_walk},
    {"loop-refused-symlink-walk", loop_refused_symlink_walk},
    {"loop-busy", loop_busy},
    {"loop-diskseq-changed", loop_diskseq_changed},
    {"dm-policy", dm_policy},
    {"dm-real", dm_real},
    {"chain", chain},
    {"mixed", mixed},
};

int main(int argc, char **argv)
{
	if (t_run_case(cases, ELEMENTSOF(cases), argc, argv))
		return 0;
	CHECK(false, "unknown case %s", argv[1]);
}
