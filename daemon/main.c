/*
 * bangerd start-up, in the order of DESIGN §1 and nothing else while root:
 * configuration, state dir, spawn the helper, drop privileges for good,
 * then the HELLO handshake, the records, one SCAN that re-adopts the VMs
 * still running, the control socket and READY=1. Any failure before the
 * drop is fatal: no process goes on with more privilege than planned.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "build_config.h"
#include "daemon.h"
#include "log.h"
#include "path.h"
#include "privdrop.h"
#include "store.h"

#define EXIT_CONFIG 2
#define EXIT_HELPER 3

static void daemon_stop(struct daemon *d, int status)
{
	if (d->exit_status == 0)
		d->exit_status = status;
	event_base_loopexit(d->base, NULL);
}

/* The helper cannot be restarted without privilege: exit and let systemd restart both. */
static void on_helper_dead(struct helper_client *hc, const char *why, void *userdata)
{
	struct daemon *d = userdata;
	char how[128] = "state unknown";
	int status;
	(void)hc;

	if (d->helper_pid > 0 && waitpid(d->helper_pid, &status, 0) == d->helper_pid) {
		describe_wait_status(status, how, sizeof(how));
		d->helper_pid = 0;
	}
	log_errx("banger-privhelper is gone (%s; %s); bangerd cannot restart it without "
		 "privilege and exits so that the service manager restarts both",
		 why, how);
	daemon_stop(d, EXIT_HELPER);
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
	d->helper_pid = 0;
	snprintf(why, sizeof(why), "pid %d %s", (int)helper_client_pid(d->helper), how);
	on_helper_dead(d->helper, why, d);
}

static bool drained(struct daemon *d)
{
	struct varlink_stats st;
	varlink_server_stats(d->server, &st);
	return st.calls_in_flight == 0 && varlink_server_pending_output(d->server) == 0 &&
	       helper_client_pending(d->helper) == 0;
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
	daemon_stop(d, 0);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	(void)what;
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("received SIG%s: no new connections, finishing calls in flight",
		 sigabbrev_np((int)sig));
	sd_notify(0, "STOPPING=1");
	if (!d->server) {
		daemon_stop(d, 0);
		return;
	}
	varlink_server_stop_accepting(d->server);
	api_end_watchers(d);
	varlink_server_close_idle(d->server);
	clock_gettime(CLOCK_MONOTONIC, &d->stop_deadline);
	d->stop_deadline.tv_sec += SHUTDOWN_DRAIN_TIMEOUT_MS / 1000;
	on_drain_tick(-1, 0, d);
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

static void on_startup_reconciled(struct daemon *d, int err, yajl_gen report, void *userdata)
{
	(void)userdata;
	if (report)
		yajl_gen_free(report);
	if (err < 0) {
		/* Nothing was torn down on unknown; the next start finishes the job. */
		log_errx("reconcile could not finish: %s", strerror(-err));
		daemon_stop(d, EXIT_HELPER);
		return;
	}
	static const struct varlink_server_info info = {
	    .vendor = "banger",
	    .product = "bangerd",
	    .version = BANGER_VERSION,
	    .url = "https://banger.invalid/",
	};
	d->server = varlink_server_new(d->base, &info, d);
	if (d->server)
		varlink_server_set_limits(d->server, &d->cfg.limits, api_may_mutate, d);
	int fd = control_socket(d);
	if (!d->server || fd < 0 ||
	    varlink_server_add_interface(d->server, &banger_handles_interface) < 0 ||
	    varlink_server_listen_fd(d->server, fd) < 0) {
		log_errx("cannot serve the control socket");
		daemon_stop(d, 1);
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

static void on_hello_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	log_errx("banger-privhelper did not answer HELLO within %d ms", HELPER_HELLO_TIMEOUT_MS);
	daemon_stop(arg, EXIT_HELPER);
}

static void on_hello(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct daemon *d = userdata;
	(void)hc;

	event_del(d->ev_hello_timeout);
	if (reply->err < 0)
		return; /* on_helper_dead reports it */
	const struct ps_hello_reply *r = &reply->msg->payload.hello_reply;
	if (r->protocol_version != PS_PROTOCOL_VERSION) {
		log_errx("banger-privhelper speaks protocol %u, bangerd %d", r->protocol_version,
			 PS_PROTOCOL_VERSION);
		daemon_stop(d, EXIT_HELPER);
		return;
	}
	if (!policy_equal(&r->policy, &d->cfg.policy)) {
		log_errx("banger-privhelper echoed a policy other than the one it was given");
		daemon_stop(d, EXIT_HELPER);
		return;
	}
	d->helper_privileged = r->flags & PS_HELLO_PRIVILEGED;
	d->helper_said_pid = r->helper_pid;

	char why[512];
	if (store_open(&d->store, d->cfg.state_dir, why, sizeof(why)) < 0) {
		log_errx("%s", why);
		daemon_stop(d, 1);
		return;
	}
	struct ps_caller caller = {
	    .uid = (uint32_t)d->uid, .gid = (uint32_t)d->gid, .what = "startup-reconcile"};
	int err = service_load(d);
	if (err < 0) {
		log_errx("cannot load the VM records: %s", strerror(-err));
		daemon_stop(d, 1);
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
		fatalx(1, "%s", why);
	if (read_boot_id(d->boot_id, sizeof(d->boot_id)) < 0)
		fatalx(1, "cannot read /proc/sys/kernel/random/boot_id");
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
		fatalx(1, "dropping privileges failed: %s", why);
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
		fatalx(1, "event_base_new failed");
	d->helper = helper_client_new(d->base, sock, pid, on_helper_dead, d);
	if (!d->helper)
		fatalx(1, "helper client setup failed");
}

int main(int argc, char **argv)
{
	struct daemon d = {0};
	struct ps_caller startup = {.what = "startup"};

	log_init("bangerd", LOG_LEVEL_INFO);
	/* The helper's death is noticed by SIGCHLD and EOF; a write to it must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	clock_gettime(CLOCK_MONOTONIC, &d.started);
	startup_as_root_or_user(&d, argc, argv);

	d.ev_sigterm = evsignal_new(d.base, SIGTERM, on_terminate, &d);
	d.ev_sigint = evsignal_new(d.base, SIGINT, on_terminate, &d);
	d.ev_sigchld = evsignal_new(d.base, SIGCHLD, on_sigchld, &d);
	d.ev_hello_timeout = evtimer_new(d.base, on_hello_timeout, &d);
	d.ev_drain = evtimer_new(d.base, on_drain_tick, &d);
	TAILQ_INIT(&d.watchers);
	struct timeval hello_tv = {HELPER_HELLO_TIMEOUT_MS / 1000,
				   (HELPER_HELLO_TIMEOUT_MS % 1000) * 1000};
	if (!d.ev_sigterm || !d.ev_sigint || !d.ev_sigchld || !d.ev_hello_timeout || !d.ev_drain ||
	    evsignal_add(d.ev_sigterm, NULL) < 0 || evsignal_add(d.ev_sigint, NULL) < 0 ||
	    evsignal_add(d.ev_sigchld, NULL) < 0 || evtimer_add(d.ev_hello_timeout, &hello_tv) < 0)
		fatalx(1, "event setup failed");

	startup.uid = (uint32_t)getuid();
	startup.gid = (uint32_t)getgid();
	int r = helper_hello(d.helper, &startup, on_hello, &d);
	if (r < 0)
		fatalx(EXIT_HELPER, "sending HELLO to the helper: %s", strerror(-r));

	event_base_dispatch(d.base);

	api_end_watchers(&d);
	varlink_server_free(d.server);
	cache_free_all(&d.cache);
	store_close(&d.store);
	if (d.ev_persist_retry)
		event_free(d.ev_persist_retry);
	event_free(d.ev_drain);
	/* Closing our end makes the helper exit on EOF; reap it so it is not left a zombie. */
	pid_t helper_pid = d.helper_pid;
	d.helper_pid = 0;
	helper_client_free(d.helper);
	if (helper_pid > 0)
		waitpid(helper_pid, NULL, 0);
	event_free(d.ev_sigterm);
	event_free(d.ev_sigint);
	event_free(d.ev_sigchld);
	event_free(d.ev_hello_timeout);
	event_base_free(d.base);
	log_info("exiting with status %d", d.exit_status);
	return d.exit_status;
}
