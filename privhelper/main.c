/*
 * banger-privhelper: the root half of banger. Started by bangerd (spawn
 * mode) with a connected SOCK_SEQPACKET socket on fd 3 and its policy on
 * the command line. Before it reads a single byte from the daemon it closes
 * every fd it did not need, keeps exactly four capabilities, clears the
 * bounding set, locks securebits and sets no_new_privs; if any of that
 * fails while root, it exits. It then answers one request at a time until
 * EOF. It trusts nothing the daemon says: a malformed request means the
 * unprivileged side is compromised, so the helper writes an audit line
 * and exits (OpenSSH's rule).
 */
#include <cap-ng.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"
#include "log.h"
#include "privs.h"

#ifndef CLOSE_RANGE_CLOEXEC
#include <linux/close_range.h>
#endif

#define EXIT_USAGE 2

static const int HELPER_CAPS[] = {CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE,
				  CAP_DAC_READ_SEARCH};

/* The helper's own flags; the policy's come from policy_flags[] (proto/policy.h). */
enum { OPT_AUDIT = POLICY_N_FLAGS, OPT_LOG, OPT_DAEMON_USER, OPT_HELP };

static const struct option helper_options[] = {
    {"audit-log", required_argument, NULL, OPT_AUDIT},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"daemon-user", required_argument, NULL, OPT_DAEMON_USER},
    {"help", no_argument, NULL, OPT_HELP},
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: banger-privhelper POLICY [--audit-log FILE] [--log-level LEVEL]\n"
		"                         [--daemon-user NAME]\n\n"
		"Privileged helper of bangerd. Not for interactive use: bangerd starts it with\n"
		"a connected SOCK_SEQPACKET socket on fd 3, or systemd hands it one accepted\n"
		"connection (LISTEN_FDS=1) from bangerd, which must run as --daemon-user.\n"
		"See banger-privhelper(8). POLICY:\n");
	for (size_t i = 0; i < POLICY_N_FLAGS; i++)
		fprintf(out, "  %-18s %-7s %s\n", policy_flags[i].flag, policy_flags[i].meta,
			policy_flags[i].help);
}

static void parse_args(int argc, char **argv, struct ps_policy *policy, const char **audit_log,
		       const char **daemon_user)
{
	struct option options[POLICY_N_FLAGS + ELEMENTSOF(helper_options) + 1] = {{0}};
	char why[256];
	int c;

	for (size_t i = 0; i < POLICY_N_FLAGS; i++)
		options[i] =
		    (struct option){policy_flags[i].flag + 2, required_argument, NULL, (int)i};
	memcpy(options + POLICY_N_FLAGS, helper_options, sizeof(helper_options));
	policy_init(policy);
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		int r = 0;
		if (c >= 0 && c < POLICY_N_FLAGS)
			r = policy_flag_set(&policy_flags[c], policy, optarg);
		else if (c == OPT_AUDIT)
			*audit_log = optarg;
		else if (c == OPT_DAEMON_USER)
			*daemon_user = optarg;
		else if (c == OPT_LOG && (r = log_level_from_string(optarg)) >= 0)
			log_set_level((enum log_level)r);
		else if (c == OPT_HELP || c == 'h')
			usage(stdout), exit(0);
		else if (c != OPT_LOG)
			usage(stderr), exit(EXIT_USAGE);
		if (r < 0)
			fatalx(EXIT_USAGE, "--%s %s: %s", options[c].name, optarg, strerror(-r));
	}
	if (optind != argc)
		fatalx(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (policy_finish(policy, why, sizeof(why)) < 0)
		fatalx(EXIT_USAGE, "%s", why);
}

/* fd 3 must be the daemon's end of a SOCK_SEQPACKET socket; all else but 0-2 is closed. */
static void setup_fds(void)
{
	struct stat st;
	int type = 0;
	socklen_t len = sizeof(type);

	if (fstat(HELPER_SOCKET_FD, &st) < 0 || !S_ISSOCK(st.st_mode))
		fatalx(1, "fd %d is not a socket: start me from bangerd", HELPER_SOCKET_FD);
	if (getsockopt(HELPER_SOCKET_FD, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET)
		fatalx(1, "fd %d is not a SOCK_SEQPACKET socket", HELPER_SOCKET_FD);
	if (close_range(HELPER_SOCKET_FD + 1, ~0U, 0) < 0)
		fatal(1, "close_range");
	if (fcntl(HELPER_SOCKET_FD, F_SETFD, FD_CLOEXEC) < 0)
		fatal(1, "fcntl(FD_CLOEXEC)");
	/* Nothing is ever read from stdin; make sure it is not something that could be. */
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0)
		fatal(1, "/dev/null");
	if (devnull != STDIN_FILENO)
		close(devnull);
}

/*
 * Keep exactly the four capabilities, in the effective, permitted and
 * bounding sets; nothing inheritable or ambient. Then read the result back
 * from the kernel: a helper that holds more than planned must not run.
 */
static void drop_privileges(struct helper *h)
{
	struct privs_status st;

	if (geteuid() != 0) {
		log_warnx("not started as root: running with no capabilities; capability and "
			  "bounding-set setup skipped, privileged requests will fail with EPERM");
		capng_clear(CAPNG_SELECT_CAPS);
		if (capng_apply(CAPNG_SELECT_CAPS) < 0)
			fatalx(1, "dropping capabilities failed");
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			fatal(1, "PR_SET_NO_NEW_PRIVS");
		h->privileged = false;
		return;
	}

	/*
	 * Securebits and the bounding set need CAP_SETPCAP. Spawned by bangerd we
	 * hold it, so we lock them now; under banger-privhelper@.service the unit
	 * has set the bounding set (CapabilityBoundingSet=) and left us without
	 * it, and NoNewPrivileges= keeps an exec from gaining anything. Either
	 * way the read-back below checks the outcome.
	 */
	capng_get_caps_process();
	bool setpcap = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP);
	if (setpcap && capng_lock() < 0)
		fatalx(1, "capng_lock (securebits) failed");
	capng_clear(CAPNG_SELECT_ALL);
	for (size_t i = 0; i < ELEMENTSOF(HELPER_CAPS); i++)
		if (capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET,
				 (unsigned)HELPER_CAPS[i]) < 0)
			fatalx(1, "capng_update failed");
	if (capng_apply(setpcap ? CAPNG_SELECT_ALL : (CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT)) <
	    0)
		fatalx(1, "applying the capability sets failed");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal(1, "PR_SET_NO_NEW_PRIVS");

	if (privs_read_self(&st) < 0)
		fatalx(1, "cannot read back /proc/self/status");
	uint64_t want = 0;
	for (size_t i = 0; i < ELEMENTSOF(HELPER_CAPS); i++)
		want |= UINT64_C(1) << HELPER_CAPS[i];
	if (st.cap_eff != want || st.cap_prm != want || st.cap_bnd != want || st.cap_inh != 0 ||
	    st.cap_amb != 0 || !st.no_new_privs)
		fatalx(1,
		       "capabilities are not as planned (eff %llx prm %llx bnd %llx inh %llx amb "
		       "%llx nnp %d, want %llx)",
		       (unsigned long long)st.cap_eff, (unsigned long long)st.cap_prm,
		       (unsigned long long)st.cap_bnd, (unsigned long long)st.cap_inh,
		       (unsigned long long)st.cap_amb, st.no_new_privs, (unsigned long long)want);
	h->privileged = true;
}

static int open_audit_log(const char *path)
{
	int fd =
	    open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0)
		fatal(1, "audit log %s", path);
	return fd;
}

/* Started by systemd (split mode): fd 3 is one accepted connection, handed over with LISTEN_FDS. */
static bool socket_activated(void)
{
	const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
	bool activated = fds && pid && strcmp(fds, "1") == 0 && atol(pid) == (long)getpid();
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	return activated;
}

/*
 * In split mode anyone in the socket's group could connect: only the
 * daemon user may speak to us. Refused peers get an audit line and we exit.
 */
static void check_peer(struct helper *h, const char *daemon_user)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (!daemon_user)
		fatalx(EXIT_USAGE,
		       "socket-activated without --daemon-user: refusing to serve anyone");
	struct passwd *pw = getpwnam(daemon_user);
	if (!pw)
		fatalx(EXIT_USAGE, "--daemon-user %s: no such user", daemon_user);
	if (getsockopt(HELPER_SOCKET_FD, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		fatal(1, "SO_PEERCRED");
	if (cred.uid != pw->pw_uid) {
		char why[160];
		snprintf(why, sizeof(why), "peer uid %u pid %d is not the daemon user %s (uid %u)",
			 (unsigned)cred.uid, (int)cred.pid, daemon_user, (unsigned)pw->pw_uid);
		audit_violation(h, why);
		exit(1);
	}
}

/* Has bangerd closed its end? Datagrams it sent before that are still queued for us. */
static bool peer_gone(int sock)
{
	struct pollfd p = {.fd = sock, .events = POLLRDHUP};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP));
}

/* Answer requests one at a time until EOF; returns the exit status. */
static int serve(struct helper *h)
{
	char why[512];
	for (;;) {
		struct ps_message m;
		int r = asroot_recv(h->sock, &m, why, sizeof(why));
		if (r > 0 && peer_gone(h->sock)) {
			/*
			 * A request bangerd gave up on (it found us stuck and left): its names
			 * may belong to someone else by now. Carry nothing out.
			 */
			log_info("bangerd closed the socket; a %s it sent is not carried out",
				 asroot_op_name(m.header.type));
			ps_message_close_fds(&m);
			return 0;
		}
		if (r > 0) {
			r = helper_dispatch(h, &m, why, sizeof(why));
			ps_message_close_fds(&m);
			if (r == 0)
				continue;
		} else if (r == 0) {
			log_info("bangerd closed the socket; exiting");
			return 0;
		}
		if (r == -EBADMSG) {
			audit_violation(h, why);
			return 1;
		}
		fatalx(1, "talking to bangerd: %s", strerror(-r));
	}
}

int main(int argc, char **argv)
{
	struct helper h;
	const char *audit_log = NULL, *daemon_user = NULL;

	helper_init(&h);
	log_init("banger-privhelper", LOG_LEVEL_INFO);
	parse_args(argc, argv, &h.policy, &audit_log, &daemon_user);
	bool split = socket_activated();
	setup_fds();
	/* Only now: the journal's socket, opened on the first entry, is closed by nothing. */
	log_open_journal();
	/* Spawned by bangerd: we must not outlive it, even mid-request. EOF covers the rest. */
	if (!split && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		fatal(1, "PR_SET_PDEATHSIG");
	if (audit_log)
		h.audit_fd = open_audit_log(audit_log);
	/* Where to come back to after asking another network namespace about its sockets. */
	int r = netns_home_open(&h.netns);
	if (r < 0)
		fatalx(1, "cannot open /proc/self/ns/net: %s", strerror(-r));
	r = unixsock_available(&h.netns);
	if (r < 0)
		fatalx(1,
		       "the kernel does not say which unix socket listens where (sock_diag for "
		       "AF_UNIX: CONFIG_UNIX_DIAG, module unix_diag): %s; without it no "
		       "firecracker can be identified",
		       strerror(-r));
	if (split)
		check_peer(&h, daemon_user);
	drop_privileges(&h);
	log_info("ready (pid %d, uid %d, %s)", getpid(), geteuid(),
		 h.privileged ? "four capabilities" : "unprivileged");
	return serve(&h);
}
