/*
 * bangerd start-up, in the order of DESIGN §1 and nothing else while root:
 * configuration, state dir, spawn the helper, drop privileges for good,
 * then the HELLO handshake, the records, one SCAN that re-adopts the VMs
 * still running, the control socket and READY=1. Any failure before the
 * drop is fatal: no process goes on with more privilege than planned.
 *
 * And the end: SIGTERM, or a helper that died or got stuck. bangerd never
 * waits on its helper without a deadline (helper_client.c). A stuck helper
 * is replaced in split mode (a new connection starts a fresh one); in spawn
 * mode bangerd, unprivileged, cannot start one, so it answers the calls in
 * flight and exits for the service manager to restart both.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "api.h"
#include "build_config.h"
#include "cache.h"
#include "config.h"
#include "daemon.h"
#include "helper_client.h"
#include "log.h"
#include "path.h"
#include "policy.h"
#include "privdrop.h"
#include "reconcile.h"
#include "service.h"
#include "store.h"
#include "store_writer.h"
#include "varlink.h"

#define SHUTDOWN_DRAIN_TIMEOUT_MS 10000
#define SHUTDOWN_DRAIN_POLL_MS	  20

/* bangerd's exit statuses: bangerd(8), EXIT STATUS, says the same. */
enum {
	EXIT_STOPPED = 0,      /* SIGTERM or SIGINT; --help, --version */
	EXIT_STARTUP = 1,      /* state dir, privilege drop, records, control socket */
	EXIT_CONFIG = 2,       /* the configuration is invalid */
	EXIT_HELPER = 3,       /* the helper could not be started or reached, disagreed, or died */
	EXIT_HELPER_STUCK = 4, /* the helper passed a deadline and could not be replaced */
};

/* A reaped helper's end, waited for at most this long once its socket has closed. */
#define HELPER_REAP_WAIT_MS 500

static void daemon_stop(struct daemon *d, int status)
{
	if (d->exit_status == 0)
		d->exit_status = status;
	event_base_loopexit(d->base, NULL);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg);

/*
 * Stop taking work and exit once the calls in flight are answered and the
 * replies flushed (bounded): SIGTERM, and a helper that cannot go on.
 * Before READY there is nothing to drain.
 */
static void daemon_drain(struct daemon *d, int status)
{
	if (d->drain_status == 0)
		d->drain_status = status;
	if (d->stopping)
		return;
	d->stopping = true;
	sd_notify(0, "STOPPING=1");
	if (!d->server) {
		daemon_stop(d, status);
		return;
	}
	varlink_server_stop_accepting(d->server);
	api_end_watchers(d);
	varlink_server_close_idle(d->server);
	clock_gettime(CLOCK_MONOTONIC, &d->stop_deadline);
	d->stop_deadline.tv_sec += SHUTDOWN_DRAIN_TIMEOUT_MS / 1000;
	on_drain_tick(-1, 0, d);
}

static void on_drain_soon(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	(void)fd;
	(void)what;
	daemon_drain(d, d->drain_status);
}

/*
 * The same, from the next turn of the loop: the helper's failure is known
 * first, then its waiters are answered (their events reach the watchers),
 * and only then do the watchers' streams end.
 */
static void daemon_drain_soon(struct daemon *d, int status)
{
	if (d->drain_status == 0)
		d->drain_status = status;
	/* Before READY nothing is served: stop now, with this status and no other. */
	if (d->stopping || !d->server ||
	    event_base_once(d->base, -1, EV_TIMEOUT, on_drain_soon, d, NULL) < 0)
		daemon_drain(d, status);
}

/* Reap the spawned helper, waiting at most timeout_ms; false when it has not ended. */
static bool helper_reap(struct daemon *d, int timeout_ms, int *status)
{
	if (d->helper_pid <= 0)
		return false;
	int pidfd = (int)syscall(SYS_pidfd_open, d->helper_pid, 0);
	if (pidfd >= 0) {
		struct pollfd p = {.fd = pidfd, .events = POLLIN};
		(void)poll(&p, 1, timeout_ms);
		close(pidfd);
	}
	if (waitpid(d->helper_pid, status, WNOHANG) != d->helper_pid)
		return false;
	d->helper_pid = 0;
	return true;
}

static void on_helper_failed(struct helper_client *hc, enum helper_failure how, const char *why,
			     void *userdata);
static void on_replacement_hello(struct helper_client *hc, struct helper_reply *reply,
				 void *userdata);

static void helper_free_later(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	helper_client_free(arg);
}

/*
 * Split mode: drop the stuck helper's connection and connect again; systemd
 * starts a fresh helper for it. The new one is on trial until it has
 * answered HELLO and a reconcile (which finishes whatever the stuck one left
 * half done: teardown is idempotent). Returns false when it cannot even
 * connect.
 */
static bool helper_replace(struct daemon *d, struct helper_client *stuck)
{
	struct ps_caller caller = {
	    .uid = (uint32_t)d->uid, .gid = (uint32_t)d->gid, .call = "helper-replacement"};
	int sock = helper_connect(d->cfg.helper_socket);
	if (sock < 0) {
		log_errx("cannot connect to the helper at %s again: %s", d->cfg.helper_socket,
			 strerror(-sock));
		return false;
	}
	struct helper_client *hc =
	    helper_client_new(d->base, sock, 0, d->cfg.helper_timeout_ms, on_helper_failed, d);
	if (!hc) {
		close(sock);
		return false;
	}
	/* The stuck one's waiters are answered after this returns; it is freed after that. */
	if (event_base_once(d->base, -1, EV_TIMEOUT, helper_free_later, stuck, NULL) < 0) {
		helper_client_free(hc);
		return false;
	}
	d->helper = hc;
	d->helper_replacing = true;
	d->helper_replacements++;
	int r = helper_hello(hc, &caller, on_replacement_hello, d);
	if (r < 0)
		helper_client_declare_dead(hc, "HELLO could not be sent");
	return true;
}

/*
 * The helper takes no more requests. Called before its waiters are
 * answered, so each answer goes out with the daemon already knowing.
 */
static void on_helper_failed(struct helper_client *hc, enum helper_failure how, const char *why,
			     void *userdata)
{
	struct daemon *d = userdata;
	bool stuck = how == HELPER_STUCK;
	bool split = d->cfg.helper_socket[0] != '\0';
	char ended[128] = "state unknown";
	int status;
	(void)hc;

	d->helper_state = stuck ? HELPER_STATE_STUCK : HELPER_STATE_GONE;
	snprintf(d->helper_problem, sizeof(d->helper_problem), "%s", why);
	service_emit(d, stuck ? "helper_stuck" : "helper_gone", NULL, d->helper_said_pid, why);
	if (d->helper_replacing) {
		log_errx(
		    "the replacement banger-privhelper failed too (%s); exiting with status %d "
		    "so that the service manager restarts bangerd",
		    why, EXIT_HELPER_STUCK);
		daemon_drain_soon(d, EXIT_HELPER_STUCK);
		return;
	}
	if (stuck && split && d->ready && !d->stopping) {
		log_errx(
		    "banger-privhelper is stuck (%s): dropping its connection and asking for a "
		    "new one",
		    why);
		if (!helper_replace(d, hc))
			daemon_drain_soon(d, EXIT_HELPER_STUCK);
		return;
	}
	if (stuck) {
		/* Never wait for it: it may never come back (see the end of main). */
		if (!d->ready)
			log_errx("banger-privhelper is stuck (%s); exiting with status %d before "
				 "READY, nothing torn down",
				 why, EXIT_HELPER_STUCK);
		else if (split)
			log_errx("banger-privhelper is stuck (%s) while bangerd stops", why);
		else
			log_errx("banger-privhelper is stuck (%s); bangerd cannot start another "
				 "without privilege: answering the calls in flight, then exiting "
				 "with status %d so that the service manager restarts both",
				 why, EXIT_HELPER_STUCK);
		daemon_drain_soon(d, EXIT_HELPER_STUCK);
		return;
	}
	if (helper_reap(d, HELPER_REAP_WAIT_MS, &status))
		describe_wait_status(status, ended, sizeof(ended));
	log_errx("banger-privhelper is gone (%s; %s); bangerd cannot restart it without "
		 "privilege and exits so that the service manager restarts both",
		 why, ended);
	daemon_drain_soon(d, EXIT_HELPER);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	int status;
	(void)sig;
	(void)what;

	if (d->helper_pid <= 0 || waitpid(d->helper_pid, &status, WNOHANG) != d->helper_pid)
		return;
	char how[128], why[160];
	describe_wait_status(status, how, sizeof(how));
	snprintf(why, sizeof(why), "pid %d %s", (int)d->helper_pid, how);
	d->helper_pid = 0;
	helper_client_declare_dead(d->helper, why);
}

static bool drained(struct daemon *d)
{
	struct varlink_stats st;
	varlink_server_stats(d->server, &st);
	return st.calls_in_flight == 0 && varlink_server_pending_output(d->server) == 0 &&
	       helper_client_pending(d->helper) == 0 && store_writer_pending(d->store.writer) == 0;
}

/* Shutdown waits for in-flight calls and unsent replies, bounded by a deadline. */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct timespec now;
	(void)fd;
	(void)what;
	clock_gettime(CLOCK_MONOTONIC, &now);
	bool late =
	    now.tv_sec > d->stop_deadline.tv_sec ||
	    (now.tv_sec == d->stop_deadline.tv_sec && now.tv_nsec >= d->stop_deadline.tv_nsec);
	if (!drained(d) && !late) {
		struct timeval tv = {0, SHUTDOWN_DRAIN_POLL_MS * 1000};
		evtimer_add(d->ev_drain, &tv);
		return;
	}
	if (late)
		log_warnx("shutdown: calls still in flight after %d ms; exiting anyway",
			  SHUTDOWN_DRAIN_TIMEOUT_MS);
	service_flush_pending(d);
	daemon_stop(d, d->drain_status);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	(void)what;
	if (d->stopping)
		return;
	log_info("received SIG%s: no new connections, finishing calls in flight",
		 sigabbrev_np((int)sig));
	daemon_drain(d, EXIT_STOPPED);
}

/* The control socket: from systemd (socket activation) or bound here as the daemon user. */
static int control_socket(struct daemon *d)
{
	int n = sd_listen_fds(1);
	if (n < 0)
		return n;
	if (n > 1) {
		log_errx("systemd passed %d sockets; bangerd takes exactly one", n);
		return -EINVAL;
	}
	if (n == 1) {
		int fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			log_errx(
			    "the socket systemd passed is not a listening AF_UNIX stream socket");
			return -EINVAL;
		}
		fcntl(fd, F_SETFL, O_NONBLOCK);
		log_info("control socket from systemd (socket activation)");
		return fd;
	}

	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (field_set(sa.sun_path, sizeof(sa.sun_path), d->cfg.listen) < 0) {
		log_errx("--listen %s: longer than a socket path may be", d->cfg.listen);
		return -ENAMETOOLONG;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	struct stat st;
	if (lstat(d->cfg.listen, &st) == 0) {
		/* A socket left by a dead bangerd is replaced; a live one, or any other file, is
		 * not. */
		if (!S_ISSOCK(st.st_mode)) {
			log_errx("--listen %s exists and is not a socket", d->cfg.listen);
			close(fd);
			return -EEXIST;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN) {
			log_errx("--listen %s: another bangerd answers there", d->cfg.listen);
			close(fd);
			return -EADDRINUSE;
		}
		close(fd);
		unlink(d->cfg.listen);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return negative_errno();
	}
	mode_t old = umask(0117);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(d->cfg.listen, 0660) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = negative_errno();
		log_errno(LOG_LEVEL_ERR, -r, "--listen %s", d->cfg.listen);
		close(fd);
		return r;
	}
	log_info("control socket %s", d->cfg.listen);
	return fd;
}

static void on_startup_reconciled(struct daemon *d, int err, const char *why, yajl_gen report,
				  void *userdata)
{
	(void)userdata;
	if (report)
		yajl_gen_free(report);
	if (err < 0) {
		/* Nothing was torn down on unknown; the next start finishes the job. */
		log_errx("reconcile could not finish: %s", why ? why : strerror(-err));
		daemon_stop(d, EXIT_HELPER);
		return;
	}
	static const struct varlink_server_info info = {
	    .vendor = "banger",
	    .product = "bangerd",
	    .version = BANGER_VERSION,
	    .url = "https://banger.invalid/",
	};
	api_attach(d);
	d->server = varlink_server_new(d->base, &info, d);
	if (d->server)
		varlink_server_set_limits(d->server, &d->cfg.limits, api_may_mutate, d);
	int fd = control_socket(d);
	if (!d->server || fd < 0 ||
	    varlink_server_add_interface(d->server, &banger_handles_interface) < 0 ||
	    varlink_server_listen_fd(d->server, fd) < 0) {
		log_errx("cannot serve the control socket");
		daemon_stop(d, EXIT_STARTUP);
		return;
	}
	d->ready = true;
	log_info("ready: running as uid %u gid %u, state dir %s, %zu VMs, helper pid %d (%s)",
		 (unsigned)getuid(), (unsigned)getgid(), d->cfg.state_dir, cache_count(&d->cache),
		 d->helper_said_pid,
		 d->helper_privileged ? "root with four capabilities"
				      : "unprivileged: privileged requests will fail with EPERM");
	sd_notifyf(0, "READY=1\nSTATUS=ready, %zu VMs", cache_count(&d->cache));
}

/* The helper's HELLO: same protocol, same policy. Takes its pid and privilege when it agrees. */
static bool hello_agrees(struct daemon *d, const struct helper_reply *reply)
{
	const struct ps_hello_reply *r = &reply->msg->payload.hello_reply;
	if (r->protocol_version != PS_PROTOCOL_VERSION) {
		log_errx("banger-privhelper speaks protocol %u, bangerd %d", r->protocol_version,
			 PS_PROTOCOL_VERSION);
		return false;
	}
	if (!policy_equal(&r->policy, &d->cfg.policy)) {
		log_errx("banger-privhelper echoed a policy other than the one it was given");
		return false;
	}
	d->helper_privileged = r->flags & PS_HELLO_PRIVILEGED;
	d->helper_said_pid = r->helper_pid;
	return true;
}

/* The replacement's reconcile is over: it is on trial no more. */
static void on_replacement_reconciled(struct daemon *d, int err, const char *why, yajl_gen report,
				      void *userdata)
{
	char detail[640];
	(void)userdata;
	if (report)
		yajl_gen_free(report);
	if (d->helper_state != HELPER_STATE_OK)
		return; /* it failed too: on_helper_failed ends bangerd */
	d->helper_replacing = false;
	snprintf(detail, sizeof(detail), "helper pid %d serves; reconcile %s%s", d->helper_said_pid,
		 err < 0 ? "failed: " : "finished", err < 0 ? (why ? why : strerror(-err)) : "");
	log_notice("%s", detail);
	service_emit(d, "helper_replaced", NULL, d->helper_said_pid, detail);
}

static void on_replacement_hello(struct helper_client *hc, struct helper_reply *reply,
				 void *userdata)
{
	struct daemon *d = userdata;
	if (reply->err < 0)
		return; /* on_helper_failed reports it */
	if (!hello_agrees(d, reply)) {
		helper_client_declare_dead(hc, "the new helper disagrees on protocol or policy");
		return;
	}
	d->helper_state = HELPER_STATE_OK;
	d->helper_problem[0] = '\0';
	log_notice("new banger-privhelper pid %d answered HELLO; reconciling what the stuck one "
		   "may have left half done",
		   d->helper_said_pid);
	struct ps_caller caller = {
	    .uid = (uint32_t)d->uid, .gid = (uint32_t)d->gid, .call = "helper-replaced"};
	int r = reconcile_start(d, &caller, on_replacement_reconciled, NULL);
	if (r < 0)
		on_replacement_reconciled(d, r, service_helper_failure(d, r), NULL, NULL);
}

static void on_hello(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct daemon *d = userdata;
	(void)hc;

	if (reply->err < 0)
		return; /* on_helper_failed reports it */
	if (!hello_agrees(d, reply)) {
		daemon_stop(d, EXIT_HELPER);
		return;
	}

	char why[512];
	if (store_open(&d->store, d->cfg.state_dir, why, sizeof(why)) < 0) {
		log_errx("%s", why);
		daemon_stop(d, EXIT_STARTUP);
		return;
	}
	/* Durable writes run on the store's writer thread from now on: reads never wait on them. */
	if (store_start_writer(&d->store, d->base) < 0)
		log_warnx("no store writer: durable writes run on the event loop");
	struct ps_caller caller = {
	    .uid = (uint32_t)d->uid, .gid = (uint32_t)d->gid, .call = "startup-reconcile"};
	int err = service_load(d);
	if (err < 0) {
		log_errx("cannot load the VM records: %s", strerror(-err));
		daemon_stop(d, EXIT_STARTUP);
		return;
	}
	err = reconcile_start(d, &caller, on_startup_reconciled, NULL);
	if (err < 0) {
		log_errx("cannot start reconcile: %s", strerror(-err));
		daemon_stop(d, EXIT_HELPER);
	}
}

static int read_boot_id(char *buf, size_t size)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (!f || !fgets(buf, (int)size, f))
		return -EIO;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* Steps 1-4 of DESIGN §1. Exits on any failure. */
static void startup_as_root_or_user(struct daemon *d, int argc, char **argv)
{
	char why[512];
	int r;

	config_init(&d->cfg);
	r = config_parse_args(&d->cfg, argc, argv, why, sizeof(why));
	if (r == 1)
		exit(0);
	if (r < 0 || config_finish(&d->cfg, why, sizeof(why)) < 0)
		fatalx(EXIT_CONFIG, "configuration: %s", why);
	log_set_level((enum log_level)d->cfg.log_level);

	bool root = geteuid() == 0;
	d->uid = geteuid();
	d->gid = getegid();
	if (d->cfg.user[0] != '\0') {
		uid_t uid;
		gid_t gid;
		if (privdrop_lookup(d->cfg.user, &uid, &gid, why, sizeof(why)) < 0)
			fatalx(EXIT_CONFIG, "configuration: %s", why);
		if (!root && uid != d->uid)
			fatalx(EXIT_CONFIG,
			       "configuration: user '%s' asked for, but not started as root",
			       d->cfg.user);
		d->uid = uid;
		d->gid = gid;
	} else if (root) {
		fatalx(EXIT_CONFIG, "configuration: started as root without --user: bangerd must "
				    "not keep running as root");
	}

	if (store_prepare_dir(d->cfg.state_dir, d->uid, d->gid, why, sizeof(why)) < 0)
		fatalx(EXIT_STARTUP, "%s", why);
	if (read_boot_id(d->boot_id, sizeof(d->boot_id)) < 0)
		fatalx(EXIT_STARTUP, "cannot read /proc/sys/kernel/random/boot_id");
	if (d->cfg.admin_group[0]) {
		struct group *gr = getgrnam(d->cfg.admin_group);
		if (!gr)
			fatalx(EXIT_CONFIG, "configuration: admin group '%s' not found",
			       d->cfg.admin_group);
		d->has_admin_group = true;
		d->admin_gid = gr->gr_gid;
	}
	/* One fd per client: lift the soft limit to the hard one while we may. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Spawn mode forks the helper while still root; split mode has nothing to spawn. */
	pid_t pid = 0;
	int sock = -1;
	bool split = d->cfg.helper_socket[0] != '\0';
	if (!split) {
		sock = helper_spawn(d->cfg.helper, &d->cfg.policy, d->cfg.audit_log,
				    d->cfg.log_level, &pid);
		if (sock < 0)
			fatalx(EXIT_HELPER, "cannot start %s: %s", d->cfg.helper, strerror(-sock));
		d->helper_pid = pid;
	}

	if (root)
		r = privdrop_to(d->uid, d->gid, why, sizeof(why));
	else
		r = privdrop_unprivileged(why, sizeof(why));
	if (r < 0) {
		if (pid > 0)
			kill(pid, SIGKILL);
		fatalx(EXIT_STARTUP, "dropping privileges failed: %s", why);
	}
	if (split) {
		/* As the daemon user: the helper checks that it is us at the other end. */
		sock = helper_connect(d->cfg.helper_socket);
		if (sock < 0)
			fatalx(EXIT_HELPER, "cannot connect to the helper at %s: %s",
			       d->cfg.helper_socket, strerror(-sock));
	}

	/*
	 * After 16 callbacks of the lower priorities, look for new events again: an admin's
	 * call that arrives during a pass over many readers waits for 16 of them, not all.
	 */
	struct event_config *evcfg = event_config_new();
	if (evcfg)
		event_config_set_max_dispatch_interval(evcfg, NULL, 16, 1);
	d->base = evcfg ? event_base_new_with_config(evcfg) : NULL;
	if (evcfg)
		event_config_free(evcfg);
	/*
	 * Three priorities: whatever a reader's connection asks waits behind the rest (VM exits,
	 * the helper's replies, admins' calls, accepting), so a flood of readers cannot starve
	 * them (varlink.h). Everything not set otherwise runs at the middle one.
	 */
	if (!d->base || event_base_priority_init(d->base, VARLINK_PRIORITIES) < 0)
		fatalx(EXIT_STARTUP, "event_base_new failed");
	d->helper =
	    helper_client_new(d->base, sock, pid, d->cfg.helper_timeout_ms, on_helper_failed, d);
	if (!d->helper)
		fatalx(EXIT_STARTUP, "helper client setup failed");
}

int main(int argc, char **argv)
{
	struct daemon d = {0};
	struct ps_caller startup = {.call = "startup"};

	log_init("bangerd", LOG_LEVEL_INFO);
	log_open_journal();
	/* The helper's death is noticed by SIGCHLD and EOF; a write to it must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	clock_gettime(CLOCK_MONOTONIC, &d.started);
	startup_as_root_or_user(&d, argc, argv);

	d.ev_sigterm = evsignal_new(d.base, SIGTERM, on_terminate, &d);
	d.ev_sigint = evsignal_new(d.base, SIGINT, on_terminate, &d);
	d.ev_sigchld = evsignal_new(d.base, SIGCHLD, on_sigchld, &d);
	d.ev_drain = evtimer_new(d.base, on_drain_tick, &d);
	TAILQ_INIT(&d.watchers);
	if (!d.ev_sigterm || !d.ev_sigint || !d.ev_sigchld || !d.ev_drain ||
	    evsignal_add(d.ev_sigterm, NULL) < 0 || evsignal_add(d.ev_sigint, NULL) < 0 ||
	    evsignal_add(d.ev_sigchld, NULL) < 0)
		fatalx(EXIT_STARTUP, "event setup failed");

	startup.uid = (uint32_t)getuid();
	startup.gid = (uint32_t)getgid();
	int r = helper_hello(d.helper, &startup, on_hello, &d);
	if (r < 0)
		fatalx(EXIT_HELPER, "sending HELLO to the helper: %s", strerror(-r));

	event_base_dispatch(d.base);

	/*
	 * First the helper: requests still pending (a drain that timed out) are
	 * failed now, while the calls, cache and store their callbacks touch
	 * still exist. Closing our end makes the helper exit on EOF; reap it so
	 * it is not left a zombie. A stuck one may never read the EOF, and we
	 * cannot end it: it is root, and its PR_SET_PDEATHSIG is not delivered
	 * once we have dropped to another uid (the kernel checks kill
	 * permission). It is not waited for; the service manager's clean-up of
	 * the unit ends it.
	 */
	helper_client_free(d.helper);
	d.helper = NULL;
	/* Writes still queued are made and answered while the calls they answer exist. */
	service_flush_writes(&d);
	api_end_watchers(&d);
	varlink_server_free(d.server);
	cache_free_all(&d.cache);
	store_close(&d.store);
	if (d.ev_persist_retry)
		event_free(d.ev_persist_retry);
	event_free(d.ev_drain);
	int status;
	if (d.helper_pid > 0 &&
	    !helper_reap(&d, d.helper_state == HELPER_STATE_STUCK ? 0 : SHUTDOWN_DRAIN_TIMEOUT_MS,
			 &status))
		log_warnx("banger-privhelper pid %d has not exited; bangerd cannot end it",
			  (int)d.helper_pid);
	event_free(d.ev_sigterm);
	event_free(d.ev_sigint);
	event_free(d.ev_sigchld);
	event_base_free(d.base);
	log_info("exiting with status %d", d.exit_status);
	return d.exit_status;
}
