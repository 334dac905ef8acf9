/*
 * Why banger's helper finds firecrackers with one batched SCAN: the Go
 * daemon ran `pgrep -f <api socket>` once per VM, so a reconcile read every
 * process's cmdline once per VM (O(VMs x processes) plus a fork/exec per
 * VM). This benchmark measures both on the same machine, in the same run,
 * against the same live stubs: a SCAN request naming N sockets, half of
 * them held by a live stub firecracker and half dead (as after a restart),
 * against N pgrep runs. It reports the ratio; it never asserts one, since
 * the machine it runs on is shared and noisy. Every measured SCAN is also
 * checked for exactly the right matches, and every pgrep for the right
 * answer, so a fast but wrong helper cannot look good.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

extern char **environ;

#define NS_PER_MS 1000000.0
#define NS_PER_S  1000000000ull

/* Repeat SCAN until the runs add up to this, so one scheduler hiccup cannot set the median. */
#define HELPER_MIN_TOTAL_NS (NS_PER_S / 2)
#define HELPER_MIN_RUNS	    5
#define HELPER_MAX_RUNS	    100000

/*
 * pgrep batches are slow (seconds at N=1000): aim for this many, but start no
 * new one once the batches of this N have taken the budget; always at least one.
 */
#define PGREP_RUNS	3
#define PGREP_BUDGET_NS (30 * NS_PER_S)

#define MAX_SIZES 16

static const size_t DEFAULT_SIZES[] = {100, 500, 1000};

/* One measured N: the temp roots, the N socket paths, the stubs holding half of them. */
struct bench_run {
	char *api_root;
	char *loop_root;
	size_t count;
	size_t live;
	char **sockets;
	pid_t *stubs; /* stubs[i] holds sockets[i]; 0 for a dead socket */
	struct t_helper helper;
	bool helper_started;
};

struct bench_figures {
	size_t count, live;
	long host_processes;
	uint64_t helper_ns, pgrep_ns;
	size_t helper_runs, pgrep_runs;
	uint32_t uninspected; /* most processes any one scan could not inspect */
};

/*
 * CHECK and SKIP leave through exit(), and SIGTERM (meson's timeout) or ^C
 * may arrive at any time: the run under way is reachable from here so that
 * an atexit handler can kill its stubs and remove its directories.
 */
static struct bench_run *run_in_progress;
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

static void exit_if_stopped(void)
{
	if (stop_signal) {
		fprintf(stderr, "bench_scan: stopped by signal %d\n", (int)stop_signal);
		exit(1);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Sorts samples in place. */
static uint64_t median_ns(uint64_t *samples, size_t n)
{
	qsort(samples, n, sizeof(*samples), compare_u64);
	return n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
}

static bool is_live_index(size_t i)
{
	return i % 2 == 1; /* interleaved, so live and dead sockets spread over the hash table */
}

static long count_host_processes(void)
{
	long n = 0;
	DIR *d = opendir("/proc");
	CHECK(d, "opendir /proc: %s", strerror(errno));
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
			n++;
	closedir(d);
	return n;
}

/* The pgrep the Go daemon would have run, or NULL: found on PATH like exec.LookPath. */
static char *find_pgrep(void)
{
	const char *path = getenv("PATH");
	char *copy = strdup(path && path[0] ? path : "/usr/local/bin:/usr/bin:/bin");
	char *found = NULL, *save = NULL;

	CHECK(copy, "strdup");
	for (char *dir = strtok_r(copy, ":", &save); dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		char *candidate;
		CHECK(asprintf(&candidate, "%s/pgrep", dir) > 0, "asprintf");
		if (access(candidate, X_OK) == 0)
			found = candidate;
		else
			free(candidate);
	}
	free(copy);
	return found;
}

/* A SCAN reply holds one pidfd per live stub, and the helper holds as many before it replies. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit: %s", strerror(errno));
	rl.rlim_cur = rl.rlim_max;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
}

static void install_stop_handlers(void)
{
	/* No SA_RESTART: a blocked waitpid or read returns EINTR and the loop notices. */
	struct sigaction sa = {.sa_handler = on_stop_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static void run_teardown(struct bench_run *run)
{
	for (size_t i = 0; run->stubs && i < run->count; i++)
		t_kill_and_reap(run->stubs[i]);
	if (run->helper_started)
		t_helper_stop(&run->helper);
	if (run->api_root)
		t_cleanup_dir(run->api_root);
	if (run->loop_root)
		t_cleanup_dir(run->loop_root);
	for (size_t i = 0; run->sockets && i < run->count; i++)
		free(run->sockets[i]);
	free(run->sockets);
	free(run->stubs);
	free(run->api_root);
	free(run->loop_root);
	memset(run, 0, sizeof(*run));
}

static void teardown_run_in_progress(void)
{
	if (run_in_progress)
		run_teardown(run_in_progress);
	run_in_progress = NULL;
}

static void run_setup(struct bench_run *run, size_t count)
{
	const char *stub = t_env_path("BANGER_STUB_FIRECRACKER");

	memset(run, 0, sizeof(*run));
	run_in_progress = run;
	run->count = count;
	run->api_root = t_make_temp_dir("bench-api");
	run->loop_root = t_make_temp_dir("bench-loop");
	run->sockets = calloc(count, sizeof(*run->sockets));
	run->stubs = calloc(count, sizeof(*run->stubs));
	CHECK(run->sockets && run->stubs, "calloc");

	/* Each live stub listens on its socket (pgrep goes by its argv, the helper by the socket).
	 */
	for (size_t i = 0; i < count; i++) {
		CHECK(asprintf(&run->sockets[i], "%s/vm-%zu", run->api_root, i) > 0, "asprintf");
		CHECK(mkdir(run->sockets[i], 0755) == 0, "mkdir %s", run->sockets[i]);
		free(run->sockets[i]);
		CHECK(asprintf(&run->sockets[i], "%s/vm-%zu/api.sock", run->api_root, i) > 0,
		      "asprintf");
		CHECK(strlen(run->sockets[i]) < PS_SOCK_PATH_MAX, "socket path too long: %s",
		      run->sockets[i]);
	}
	for (size_t i = 0; i < count; i++) {
		exit_if_stopped();
		if (!is_live_index(i))
			continue;
		const char *argv[] = {"firecracker", "--api-sock", run->sockets[i], NULL};
		run->stubs[i] = t_spawn(stub, argv, NULL);
		run->live++;
	}

	t_helper_start_default(&run->helper, run->api_root, run->loop_root);
	run->helper_started = true;
	t_helper_hello(&run->helper);
}

/*
 * The helper writes an audit line per request to a pipe we hold; unread,
 * the pipe fills after a few hundred scans and the helper would block.
 */
static void drain_helper_output(struct bench_run *run)
{
	free(t_helper_output(&run->helper));
}

/*
 * Exactly one match per live stub, naming the right socket and pid, and
 * nothing else. uninspected is not required to be 0: even the helper's
 * CAP_SYS_PTRACE cannot read a process that holds capabilities it lacks
 * (a container's init, say), and our stubs are never such a process.
 */
static void check_scan_result(const struct bench_run *run, const struct t_scan_result *res)
{
	bool *seen = calloc(run->count, sizeof(*seen));
	CHECK(seen, "calloc");

	CHECK(res->err == 0, "scan failed: %s", strerror(-res->err));
	CHECK(res->count == run->live, "scan returned %zu entries, want %zu matches", res->count,
	      run->live);
	for (size_t i = 0; i < res->count; i++) {
		const struct ps_scan_entry *e = &res->entries[i];
		CHECK(e->kind == PS_SCAN_MATCH, "entry %zu: kind %u (pid %d, %s), want a match", i,
		      e->kind, e->pid, e->api_sock);
		CHECK(e->index < run->count, "entry %zu: index %u out of range", i, e->index);
		CHECK(is_live_index(e->index), "entry %zu: matched dead socket %s (pid %d)", i,
		      run->sockets[e->index], e->pid);
		CHECK(!seen[e->index], "entry %zu: socket %s matched twice", i,
		      run->sockets[e->index]);
		CHECK(e->pid == run->stubs[e->index], "entry %zu: %s matched pid %d, want stub %d",
		      i, run->sockets[e->index], e->pid, (int)run->stubs[e->index]);
		CHECK(e->has_pidfd && res->pidfds[i] >= 0, "entry %zu: match without a pidfd", i);
		seen[e->index] = true;
	}
	free(seen);
}

/* Times the whole round trip bangerd would see: all request parts out, all reply parts in. */
static uint64_t bench_helper_scan(struct bench_run *run, size_t *runs_out, uint32_t *uninspected)
{
	uint64_t *samples = calloc(HELPER_MAX_RUNS, sizeof(*samples));
	uint64_t total = 0;
	size_t runs = 0;

	CHECK(samples, "calloc");
	while (runs < HELPER_MAX_RUNS && (runs < HELPER_MIN_RUNS || total < HELPER_MIN_TOTAL_NS)) {
		struct t_scan_result res;
		exit_if_stopped();
		uint64_t start = now_ns();
		t_scan(&run->helper, (const char *const *)run->sockets, run->count, &res);
		samples[runs] = now_ns() - start;
		total += samples[runs++];
		check_scan_result(run, &res);
		if (res.uninspected > *uninspected)
			*uninspected = res.uninspected;
		t_scan_result_free(&res);
		drain_helper_output(run);
	}
	uint64_t median = median_ns(samples, runs);
	free(samples);
	*runs_out = runs;
	return median;
}

/* What pgrep said about one socket: its exit status, and the pids it printed. */
struct pgrep_answer {
	int exit_code;
	size_t npids;
	pid_t first_pid;
};

static void read_pgrep_output(int fd, struct pgrep_answer *answer)
{
	char buf[4096];
	size_t len = 0;

	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR) {
			exit_if_stopped();
			continue;
		}
		CHECK(n >= 0, "reading pgrep output: %s", strerror(errno));
		if (n == 0 || (len += (size_t)n) == sizeof(buf) - 1)
			break;
	}
	buf[len] = '\0';
	for (char *line = buf, *end; *line; line = end) {
		long pid = strtol(line, &end, 10);
		CHECK(end != line && (*end == '\n' || *end == '\0'), "pgrep printed \"%s\"", buf);
		if (answer->npids++ == 0)
			answer->first_pid = (pid_t)pid;
		end += *end == '\n';
	}
}

/* One `pgrep -f -- PATH`, its stdout read through a pipe as Go's exec.Output does. */
static void pgrep_one(const char *pgrep, const char *socket, struct pgrep_answer *answer)
{
	const char *argv[] = {"pgrep", "-f", "--", socket, NULL};
	posix_spawn_file_actions_t actions;
	int out[2], status;
	pid_t pid;

	memset(answer, 0, sizeof(*answer));
	CHECK(pipe2(out, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	CHECK(posix_spawn_file_actions_init(&actions) == 0, "posix_spawn_file_actions_init");
	CHECK(posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO) == 0, "adddup2");
	/* posix_spawn uses CLONE_VFORK as Go's os/exec does, so the baseline pays no more. */
	int r = posix_spawn(&pid, pgrep, &actions, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	close(out[1]);
	CHECK(r == 0, "spawning %s: %s", pgrep, strerror(r));
	read_pgrep_output(out[0], answer);
	close(out[0]);
	while (waitpid(pid, &status, 0) < 0) {
		CHECK(errno == EINTR, "waitpid pgrep: %s", strerror(errno));
		if (stop_signal)
			kill(pid, SIGKILL);
	}
	exit_if_stopped();
	CHECK(WIFEXITED(status), "pgrep for %s died (status 0x%x)", socket, status);
	answer->exit_code = WEXITSTATUS(status);
}

/* A live socket is found as exactly its stub; a dead one is "no match" (exit 1), not an error. */
static void check_pgrep_answers(const struct bench_run *run, const struct pgrep_answer *answers)
{
	for (size_t i = 0; i < run->count; i++) {
		const struct pgrep_answer *a = &answers[i];
		if (is_live_index(i)) {
			CHECK(a->exit_code == 0 && a->npids == 1 && a->first_pid == run->stubs[i],
			      "pgrep %s: exit %d, %zu pids, first %d; want stub %d",
			      run->sockets[i], a->exit_code, a->npids, (int)a->first_pid,
			      (int)run->stubs[i]);
		} else {
			CHECK(a->exit_code == 1 && a->npids == 0,
			      "pgrep %s: exit %d, %zu pids; want exit 1 for a dead socket",
			      run->sockets[i], a->exit_code, a->npids);
		}
	}
}

static uint64_t bench_pgrep(const struct bench_run *run, const char *pgrep, size_t *runs_out)
{
	struct pgrep_answer *answers = calloc(run->count, sizeof(*answers));
	uint64_t samples[PGREP_RUNS], spent = 0;
	size_t runs = 0;

	CHECK(answers, "calloc");
	while (runs < PGREP_RUNS && (runs == 0 || spent < PGREP_BUDGET_NS)) {
		uint64_t start = now_ns();
		for (size_t i = 0; i < run->count; i++)
			pgrep_one(pgrep, run->sockets[i], &answers[i]);
		samples[runs] = now_ns() - start;
		spent += samples[runs++];
		check_pgrep_answers(run, answers);
	}
	free(answers);
	*runs_out = runs;
	return median_ns(samples, runs);
}

static void bench_one_size(size_t count, const char *pgrep, struct bench_figures *fig)
{
	struct bench_run run;

	memset(fig, 0, sizeof(*fig));

	run_setup(&run, count);
	fig->count = run.count;
	fig->live = run.live;
	fig->host_processes = count_host_processes();
	fig->helper_ns = bench_helper_scan(&run, &fig->helper_runs, &fig->uninspected);
	fig->pgrep_ns = bench_pgrep(&run, pgrep, &fig->pgrep_runs);
	run_teardown(&run);
	run_in_progress = NULL;

	printf("scan N=%zu live=%zu: helper %.2f ms (median of %zu), pgrep-per-socket %.0f ms "
	       "(median of %zu), ratio %.0fx\n",
	       fig->count, fig->live, (double)fig->helper_ns / NS_PER_MS, fig->helper_runs,
	       (double)fig->pgrep_ns / NS_PER_MS, fig->pgrep_runs,
	       (double)fig->pgrep_ns / (double)fig->helper_ns);
	fflush(stdout);
}

/* --json FILE: each size's figures, one JSON object per line (tools/bench-plots.py reads them). */
static void append_json(const char *path, const struct bench_figures *figs, size_t n)
{
	FILE *f = fopen(path, "ae");
	CHECK(f, "cannot open %s: %s", path, strerror(errno));
	for (size_t i = 0; i < n; i++)
		fprintf(f,
			"{\"bench\": \"scan\", \"n\": %zu, \"live\": %zu, \"host_processes\": %ld, "
			"\"helper_ms\": %.4f, \"helper_runs\": %zu, \"pgrep_ms\": %.2f, "
			"\"pgrep_runs\": %zu}\n",
			figs[i].count, figs[i].live, figs[i].host_processes,
			(double)figs[i].helper_ns / NS_PER_MS, figs[i].helper_runs,
			(double)figs[i].pgrep_ns / NS_PER_MS, figs[i].pgrep_runs);
	CHECK(fclose(f) == 0, "writing %s: %s", path, strerror(errno));
}

static void print_summary(const struct bench_figures *figs, size_t n)
{
	printf("summary: one SCAN walks /proc once per batch; pgrep reads every cmdline once per "
	       "socket\n");
	for (size_t i = 0; i < n; i++) {
		const struct bench_figures *f = &figs[i];
		printf("  N=%-5zu host processes %-5ld (uninspectable %u)  helper %7.2f us/socket  "
		       "pgrep %6.2f ms/socket  ratio %.0fx\n",
		       f->count, f->host_processes, f->uninspected,
		       (double)f->helper_ns / 1000.0 / (double)f->count,
		       (double)f->pgrep_ns / NS_PER_MS / (double)f->count,
		       (double)f->pgrep_ns / (double)f->helper_ns);
	}
}

/* [--json FILE] [N...] */
static size_t parse_sizes(int argc, char **argv, size_t *sizes, const char **json)
{
	size_t n = 0;

	if (argc >= 3 && strcmp(argv[1], "--json") == 0) {
		*json = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2) {
		memcpy(sizes, DEFAULT_SIZES, sizeof(DEFAULT_SIZES));
		return sizeof(DEFAULT_SIZES) / sizeof(DEFAULT_SIZES[0]);
	}
	for (int i = 1; i < argc; i++) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(argv[i], &end, 10);
		CHECK(errno == 0 && end != argv[i] && *end == '\0' && v >= 2 &&
			  v <= PS_SCAN_MAX_SOCKETS,
		      "usage: bench_scan [--json FILE] [N...] with 2 <= N <= %d; got \"%s\"",
		      PS_SCAN_MAX_SOCKETS, argv[i]);
		CHECK(n < MAX_SIZES, "at most %d sizes", MAX_SIZES);
		sizes[n++] = v;
	}
	return n;
}

int main(int argc, char **argv)
{
	size_t sizes[MAX_SIZES];
	struct bench_figures figs[MAX_SIZES];
	const char *json = NULL;
	size_t nsizes = parse_sizes(argc, argv, sizes, &json);

	t_require_root();
	char *pgrep = find_pgrep();
	if (!pgrep)
		SKIP("needs pgrep (procps) on PATH for the per-socket baseline");
	t_env_path("BANGER_HELPER");
	t_env_path("BANGER_STUB_FIRECRACKER");

	setvbuf(stdout, NULL, _IOLBF, 0);
	raise_fd_limit();
	install_stop_handlers();
	atexit(teardown_run_in_progress);
	for (size_t i = 0; i < nsizes; i++)
		bench_one_size(sizes[i], pgrep, &figs[i]);
	print_summary(figs, nsizes);
	if (json)
		append_json(json, figs, nsizes);
	free(pgrep);
	return 0;
}
