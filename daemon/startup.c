/*
 * bangerd's start-up, one step per line in the order of DESIGN §1, and
 * nothing else while root: the configuration, the state dir, the helper
 * spawned (spawn mode), the privilege drop for good, the helper reached
 * (split mode), then HELLO, the records, one reconcile that re-adopts the
 * VMs still running, the control socket and READY=1.
 *
 * Any failure before the event loop exits at once with its status from the
 * one table (exit_status.h): no process goes on with more privilege than
 * planned. From HELLO on, the steps that wait for the helper run the event
 * loop until they are answered, so the helper's failure and SIGTERM are
 * handled there as at any other time (lifecycle.c); start-up then stops
 * with the status they gave.
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
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "api.h"
#include "build_config.h"
#include "cache.h"
#include "config.h"
#include "daemon.h"
#include "exit_status.h"
#include "helper_client.h"
#include "lifecycle.h"
#include "log.h"
#include "path.h"
#include "policy.h"
#include "privdrop.h"
#include "reconcile.h"
#include "service.h"
#include "startup.h"
#include "store.h"
#include "varlink.h"

/* --- before the event loop: any failure exits -------------------------------- */

/* 1. Flags over the config file; refuse to start on any error. */
static void read_config(struct daemon *d, int argc, char **argv)
{
	char why[512];
	config_init(&d->cfg);
	int r = config_parse_args(&d->cfg, argc, argv, why, sizeof(why));
	if (r == 1)
		exit(EXIT_STOPPED); /* --help or --version answered */
	if (r < 0 || config_finish(&d->cfg, why, sizeof(why)) < 0)
		fatalx(EXIT_CONFIG, "configuration: %s", why);
	log_set_level((enum log_level)d->cfg.log_level);
}

/* Who bangerd runs as: --user when started as root (never root itself), else whoever we are. */
static void choose_daemon_user(struct daemon *d)
{
	char why[512];
	bool root = geteuid() == 0;
	d->uid = geteuid();
	d->gid = getegid();
	if (d->cfg.user[0] == '\0') {
		if (root)
			fatalx(EXIT_CONFIG, "configuration: started as root without --user: "
					    "bangerd must not keep running as root");
		return;
	}
	uid_t uid;
	gid_t gid;
	if (privdrop_lookup(d->cfg.user, &uid, &gid, why, sizeof(why)) < 0)
		fatalx(EXIT_CONFIG, "configuration: %s", why);
	if (!root && uid != d->uid)
		fatalx(EXIT_CONFIG, "configuration: user '%s' asked for, but not started as root",
		       d->cfg.user);
	d->uid = uid;
	d->gid = gid;
}

/* 2. The state dir, the daemon user's, 0700. */
static void prepare_state_dir(struct daemon *d)
{
	char why[512];
	if (store_prepare_dir(d->cfg.state_dir, d->uid, d->gid, why, sizeof(why)) < 0)
		fatalx(EXIT_STARTUP, "%s", why);
}

static int read_boot_id(char *buf, size_t size)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (!f || !fgets(buf, (int)size, f))
		return -EIO;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* What the host says and the daemon user may not be able to read later. */
static void read_host_facts(struct daemon *d)
{
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
}

static bool split_mode(const struct daemon *d)
{
	return d->cfg.helper_socket[0] != '\0';
}

/* 3. Spawn mode: socketpair, fork, exec the helper, while still root. Its socket, or -1 (split). */
static int spawn_helper(struct daemon *d)
{
	if (split_mode(d))
		return -1; /* a socket-activated unit of its own: nothing to spawn */
	pid_t pid = 0;
	int sock =
	    helper_spawn(d->cfg.helper, &d->cfg.policy, d->cfg.audit_log, d->cfg.log_level, &pid);
	if (sock < 0)
		fatalx(EXIT_HELPER, "cannot start %s: %s", d->cfg.helper, strerror(-sock));
	d->helper_pid = pid;
	return sock;
}

/* 4. The daemon user for good: no capabilities, no_new_privs, root not to be regained. */
static void drop_privileges(struct daemon *d)
{
	char why[512];
	int r = geteuid() == 0 ? privdrop_to(d->uid, d->gid, why, sizeof(why))
			       : privdrop_unprivileged(why, sizeof(why));
	if (r < 0) {
		if (d->helper_pid > 0)
			kill(d->helper_pid, SIGKILL);
		fatalx(EXIT_STARTUP, "dropping privileges failed: %s", why);
	}
}

/* Split mode: connect as the daemon user (the helper checks that it is us at the other end). */
static int connect_helper(struct daemon *d, int spawned)
{
	if (!split_mode(d))
		return spawned;
	int sock = helper_connect(d->cfg.helper_socket);
	if (sock < 0)
		fatalx(EXIT_HELPER, "cannot connect to the helper at %s: %s", d->cfg.helper_socket,
		       strerror(-sock));
	return sock;
}

/* The event loop, the helper's client on sock, and the signals. */
static void open_event_loop(struct daemon *d, int sock)
{
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
	d->helper = helper_client_new(d->base, sock, d->helper_pid, d->cfg.helper_timeout_ms,
				      daemon_on_helper_failed, d);
	if (!d->helper)
		fatalx(EXIT_STARTUP, "helper client setup failed");
	TAILQ_INIT(&d->watchers);
	if (daemon_watch_signals(d) < 0)
		fatalx(EXIT_STARTUP, "event setup failed");
}

/* --- on the event loop: a failure stops bangerd with its status ------------ */

/*
 * Run the loop until *done, or until bangerd is told to stop meanwhile (a
 * signal, the helper's failure). True when done and not stopping.
 */
static bool run_until(struct daemon *d, const bool *done)
{
	while (!*done && !d->stop_requested)
		if (event_base_loop(d->base, EVLOOP_ONCE) != 0)
			break;
	if (!*done && !d->stop_requested) {
		log_errx("the event loop failed during start-up");
		daemon_stop(d, EXIT_STARTUP);
	}
	return *done && !d->stop_requested;
}

/* Whose requests start-up sends: the helper's audit line names them. */
static struct ps_caller startup_caller(uid_t uid, gid_t gid, const char *call)
{
	struct ps_caller caller = {.uid = (uint32_t)uid, .gid = (uint32_t)gid};
	field_set(caller.call, sizeof(caller.call), call);
	return caller;
}

bool startup_hello_agrees(struct daemon *d, const struct helper_reply *reply)
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

/* A reply start-up waits for. */
struct startup_wait {
	struct daemon *d;
	bool done;
	int err;
	char why[640];
};

static void on_hello(struct helper_client *hc, struct helper_reply *reply, void *userdata)
{
	struct startup_wait *w = userdata;
	(void)hc;
	w->done = true;
	w->err = reply->err; /* < 0: daemon_on_helper_failed reports it and stops bangerd */
	if (w->err == 0 && !startup_hello_agrees(w->d, reply))
		w->err = -EPROTO;
}

/* 5. HELLO: the same protocol, the same policy. */
static bool helper_handshake(struct daemon *d)
{
	struct startup_wait w = {.d = d};
	struct ps_caller caller = startup_caller(getuid(), getgid(), "startup");
	int r = helper_hello(d->helper, &caller, on_hello, &w);
	if (r < 0)
		fatalx(EXIT_HELPER, "sending HELLO to the helper: %s", strerror(-r));
	if (!run_until(d, &w.done))
		return false;
	if (w.err < 0)
		daemon_stop(d, EXIT_HELPER);
	return w.err == 0;
}

/* The store, its writer thread, and every record into the cache. */
static bool load_records(struct daemon *d)
{
	char why[512];
	if (store_open(&d->store, d->cfg.state_dir, why, sizeof(why)) < 0) {
		log_errx("%s", why);
		daemon_stop(d, EXIT_STARTUP);
		return false;
	}
	/* Durable writes run on the store's writer thread from now on: reads never wait on them. */
	if (store_start_writer(&d->store, d->base) < 0)
		log_warnx("no store writer: durable writes run on the event loop");
	int err = service_load(d);
	if (err < 0) {
		log_errx("cannot load the VM records: %s", strerror(-err));
		daemon_stop(d, EXIT_STARTUP);
		return false;
	}
	return true;
}

static void on_startup_reconciled(struct daemon *d, int err, const char *why,
				  const struct reconcile_report *report, void *userdata)
{
	struct startup_wait *w = userdata;
	(void)d;
	(void)report;
	w->done = true;
	w->err = err;
	if (err < 0)
		snprintf(w->why, sizeof(w->why), "%s", why ? why : strerror(-err));
}

/* DESIGN §3 before anything is served: nothing is torn down on unknown. */
static bool reconcile_records(struct daemon *d)
{
	struct startup_wait w = {.d = d};
	struct ps_caller caller = startup_caller(d->uid, d->gid, "startup-reconcile");
	int err = reconcile_start(d, &caller, on_startup_reconciled, &w);
	if (err < 0) {
		log_errx("cannot start reconcile: %s", strerror(-err));
		daemon_stop(d, EXIT_HELPER);
		return false;
	}
	bool finished = run_until(d, &w.done);
	if (w.done && w.err < 0) {
		/* The next start finishes the job. */
		log_errx("reconcile could not finish: %s", w.why);
		daemon_stop(d, EXIT_HELPER);
		return false;
	}
	return finished;
}

/* The socket systemd passed (socket activation): a listening AF_UNIX stream socket. */
static int activated_socket(void)
{
	int fd = SD_LISTEN_FDS_START;
	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
		log_errx("the socket systemd passed is not a listening AF_UNIX stream socket");
		return -EINVAL;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	log_info("control socket from systemd (socket activation)");
	return fd;
}

/*
 * A socket left at path by a dead bangerd is removed; a live one, or any
 * other file, is not. Returns 0 (nothing there, or removed) or -errno.
 */
static int remove_stale_socket(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		log_errx("--listen %s exists and is not a socket", path);
		return -EEXIST;
	}
	_cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return negative_errno();
	if (connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN) {
		log_errx("--listen %s: another bangerd answers there", path);
		return -EADDRINUSE;
	}
	unlink(path);
	return 0;
}

/* --listen, bound here as the daemon user: root:banger 0660 as the unit would make it. */
static int bound_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (field_set(sa.sun_path, sizeof(sa.sun_path), path) < 0) {
		log_errx("--listen %s: longer than a socket path may be", path);
		return -ENAMETOOLONG;
	}
	int r = remove_stale_socket(path, &sa);
	if (r < 0)
		return r;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	mode_t old = umask(0117);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(path, 0660) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = negative_errno();
		log_errno(LOG_LEVEL_ERR, -r, "--listen %s", path);
		close(fd);
		return r;
	}
	log_info("control socket %s", path);
	return fd;
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
	return n == 1 ? activated_socket() : bound_socket(d->cfg.listen);
}

/* io.banger.Handles on the control socket. */
static bool serve(struct daemon *d)
{
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
		return false;
	}
	return true;
}

/* READY=1: the service manager, and whoever reads the log, know bangerd serves. */
static void announce_ready(struct daemon *d)
{
	d->ready = true;
	log_info("ready: running as uid %u gid %u, state dir %s, %zu VMs, helper pid %d (%s)",
		 (unsigned)getuid(), (unsigned)getgid(), d->cfg.state_dir, cache_count(&d->cache),
		 d->helper_said_pid,
		 d->helper_privileged ? "root with four capabilities"
				      : "unprivileged: privileged requests will fail with EPERM");
	sd_notifyf(0, "READY=1\nSTATUS=ready, %zu VMs", cache_count(&d->cache));
}

bool startup(struct daemon *d, int argc, char **argv)
{
	read_config(d, argc, argv);	  /* 1. flags and the config file */
	choose_daemon_user(d);		  /*    --user, or whoever started us */
	prepare_state_dir(d);		  /* 2. the daemon user's, 0700 */
	read_host_facts(d);		  /*    boot id, admin group, fd limit */
	int sock = spawn_helper(d);	  /* 3. spawn mode: socketpair, fork, exec, as root */
	drop_privileges(d);		  /* 4. the daemon user, for good */
	sock = connect_helper(d, sock);	  /*    split mode: the helper's socket, as that user */
	open_event_loop(d, sock);	  /*    the loop, the helper's client, the signals */
	bool up = helper_handshake(d) &&  /* 5. HELLO: the same protocol, the same policy */
		  load_records(d) &&	  /*    the store and every record */
		  reconcile_records(d) && /*    DESIGN §3, before anything is served */
		  serve(d);		  /*    io.banger.Handles on the control socket */
	if (up)
		announce_ready(d); /*    READY=1 */
	return up;
}
