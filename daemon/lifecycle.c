/*
 * bangerd once it runs, and its end: SIGTERM, or a helper that died or got
 * stuck. bangerd never waits on its helper without a deadline
 * (helper_client.c). A stuck helper is replaced in split mode (a new
 * connection starts a fresh one); in spawn mode bangerd, unprivileged,
 * cannot start one, so it answers the calls in flight and exits for the
 * service manager to restart both. Start-up is startup.c's.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "api.h"
#include "cache.h"
#include "daemon.h"
#include "event_util.h"
#include "exit_status.h"
#include "helper_client.h"
#include "lifecycle.h"
#include "log.h"
#include "reconcile.h"
#include "service.h"
#include "startup.h"
#include "store.h"
#include "store_writer.h"
#include "varlink.h"

#define SHUTDOWN_DRAIN_TIMEOUT_MS 10000
#define SHUTDOWN_DRAIN_POLL_MS	  20

/* A reaped helper's end, waited for at most this long once its socket has closed. */
#define HELPER_REAP_WAIT_MS 500

void daemon_stop(struct daemon *d, int status)
{
	if (d->exit_status == 0)
		d->exit_status = status;
	d->stop_requested = true;
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
	struct helper_client *hc = helper_client_new(d->base, sock, 0, d->cfg.helper_timeout_ms,
						     daemon_on_helper_failed, d);
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
void daemon_on_helper_failed(struct helper_client *hc, enum helper_failure how, const char *why,
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
		/* Never wait for it: it may never come back (see daemon_shutdown). */
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

/* The replacement's reconcile is over: it is on trial no more. */
static void on_replacement_reconciled(struct daemon *d, int err, const char *why,
				      const struct reconcile_report *report, void *userdata)
{
	char detail[640];
	(void)report;
	(void)userdata;
	if (d->helper_state != HELPER_STATE_OK)
		return; /* it failed too: daemon_on_helper_failed ends bangerd */
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
		return; /* daemon_on_helper_failed reports it */
	if (!startup_hello_agrees(d, reply)) {
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
	char why[512];
	if (r < 0)
		on_replacement_reconciled(d, r, service_helper_failure(d, r, why, sizeof(why)),
					  NULL, NULL);
}

int daemon_watch_signals(struct daemon *d)
{
	d->ev_sigterm = evsignal_new(d->base, SIGTERM, on_terminate, d);
	d->ev_sigint = evsignal_new(d->base, SIGINT, on_terminate, d);
	d->ev_sigchld = evsignal_new(d->base, SIGCHLD, on_sigchld, d);
	d->ev_drain = evtimer_new(d->base, on_drain_tick, d);
	if (!d->ev_sigterm || !d->ev_sigint || !d->ev_sigchld || !d->ev_drain ||
	    evsignal_add(d->ev_sigterm, NULL) < 0 || evsignal_add(d->ev_sigint, NULL) < 0 ||
	    evsignal_add(d->ev_sigchld, NULL) < 0)
		return -ENOMEM;
	return 0;
}

int daemon_shutdown(struct daemon *d)
{
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
	helper_client_free(d->helper);
	d->helper = NULL;
	/* Writes still queued are made and answered while the calls they answer exist. */
	service_flush_writes(d);
	api_end_watchers(d);
	varlink_server_free(d->server);
	cache_free_all(&d->cache);
	store_close(&d->store);
	event_freep(&d->ev_persist_retry);
	event_free(d->ev_drain);
	int status;
	if (d->helper_pid > 0 &&
	    !helper_reap(d, d->helper_state == HELPER_STATE_STUCK ? 0 : SHUTDOWN_DRAIN_TIMEOUT_MS,
			 &status))
		log_warnx("banger-privhelper pid %d has not exited; bangerd cannot end it",
			  (int)d->helper_pid);
	event_free(d->ev_sigterm);
	event_free(d->ev_sigint);
	event_free(d->ev_sigchld);
	event_base_free(d->base);
	log_info("exiting with status %d", d->exit_status);
	return d->exit_status;
}
