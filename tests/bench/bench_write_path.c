/*
 * The load and the floor of the write-path benchmark (bench_write_path.py,
 * issue 14); the orchestrator sets up bangerd and prints the comparison.
 *
 *   bench_write_path writers SOCKET API_ROOT PREFIX N WARMUP_MS DURATION_MS
 *     N processes, each its own connection and VM id (PREFIX<i>), each a
 *     closed loop of Register then Unregister as fast as bangerd answers.
 *     Every reply is checked. A pair is timed from writing the Register to
 *     reading the Unregister's reply; pairs are counted from the end of the
 *     warm-up to the end of the run, when every process ends together.
 *
 *   bench_write_path floor DIR ITERATIONS
 *     The durable file operations of one Register and one Unregister, one
 *     at a time, as bangerd made them before the writer thread: mkdir +
 *     fsync of the parent; temp vm.json, fdatasync, rename, fsync of the
 *     dir; unlink, fsync of the dir; rmdir, fsync of the parent.
 *
 *   bench_write_path syncs DIR K ROUNDS
 *     What making K fresh 300-byte files durable costs three ways: an
 *     fdatasync each, one after another (bangerd's EACH mode); one syncfs
 *     (its FS mode); and K fdatasyncs issued at once from K threads
 *     ("parallel fdatasync", which the kernel may merge). Medians of ROUNDS.
 *
 * Each prints one line of key=value figures.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_stats.h"
#include "bench_varlink.h"
#include "json.h"
#include "testlib.h"

#define IFACE		     "io.banger.Handles."
#define MAX_WRITERS	     1000
#define START_DELAY_NS	     (300 * NS_PER_MS) /* every process connected before the clock runs */
#define RECORD_EXAMPLE_BYTES 300

static void die(const char *what)
{
	fprintf(stderr, "bench_write_path: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write to the parent");
		p += n;
		len -= (size_t)n;
	}
}

static char *request(const char *method, const char *id, const char *api_sock, size_t *len)
{
	yajl_gen g = bv_request_begin(method);
	json_gen_kv_string(g, "id", id);
	if (api_sock)
		json_gen_kv_string(g, "api_sock", api_sock);
	return bv_request_end(g, len);
}

static void call_ok(struct bv_conn *c, const char *req, size_t len, const char *what)
{
	char *reply = bv_call(c, req, len);
	yajl_tree_free(bv_parse_success(reply, what));
	free(reply);
}

/* One writer: Register + Unregister until `until`; sends its count and samples up the pipe. */
static void writer(const char *socket, const char *api_root, const char *prefix, size_t index,
		   uint64_t from, uint64_t until, int out)
{
	char id[64], sock[512];
	size_t reg_len, unreg_len;
	snprintf(id, sizeof(id), "%s%zu", prefix, index);
	snprintf(sock, sizeof(sock), "%s/%s/api.sock", api_root, id);
	char *reg = request(IFACE "Register", id, sock, &reg_len);
	char *unreg = request(IFACE "Unregister", id, NULL, &unreg_len);
	struct bv_conn *c = bv_connect(socket);
	struct samples lat = {0};
	uint64_t pairs = 0;

	while (now_ns() < from - START_DELAY_NS / 2)
		usleep(1000);
	for (uint64_t t0; (t0 = now_ns()) < until;) {
		call_ok(c, reg, reg_len, "Register");
		call_ok(c, unreg, unreg_len, "Unregister");
		if (t0 >= from) {
			samples_add(&lat, now_ns() - t0);
			pairs++;
		}
	}
	write_full(out, &pairs, sizeof(pairs));
	write_full(out, lat.v, pairs * sizeof(*lat.v));
	bv_close(c);
	free(reg);
	free(unreg);
	samples_free(&lat);
	_exit(0);
}

static int run_writers(char **argv)
{
	const char *socket = argv[0], *api_root = argv[1], *prefix = argv[2];
	size_t n = strtoul(argv[3], NULL, 10);
	uint64_t warmup = strtoull(argv[4], NULL, 10) * NS_PER_MS;
	uint64_t duration = strtoull(argv[5], NULL, 10) * NS_PER_MS;
	if (n == 0 || n > MAX_WRITERS || duration == 0)
		return fprintf(stderr, "bench_write_path writers: bad arguments\n"), 2;

	uint64_t from = now_ns() + START_DELAY_NS + warmup, until = from + duration;
	pid_t pids[MAX_WRITERS];
	int pipes[MAX_WRITERS];
	for (size_t i = 0; i < n; i++) {
		int p[2];
		if (pipe(p) < 0)
			die("pipe");
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork");
		if (pids[i] == 0) {
			close(p[0]);
			writer(socket, api_root, prefix, i, from, until, p[1]);
		}
		close(p[1]);
		pipes[i] = p[0];
	}
	struct samples all = {0};
	uint64_t pairs = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t count, v;
		FILE *f = fdopen(pipes[i], "rb");
		if (!f || fread(&count, sizeof(count), 1, f) != 1)
			return fprintf(stderr, "writer %zu failed (see above)\n", i), 1;
		for (uint64_t k = 0; k < count; k++) {
			if (fread(&v, sizeof(v), 1, f) != 1)
				return fprintf(stderr, "writer %zu: short samples\n", i), 1;
			samples_add(&all, v);
		}
		pairs += count;
		fclose(f);
		int status;
		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			return fprintf(stderr, "writer %zu exited badly\n", i), 1;
	}
	samples_sort(&all);
	printf("writers=%zu pairs=%llu seconds=%.3f pairs_per_s=%.1f p50_us=%.1f p99_us=%.1f\n", n,
	       (unsigned long long)pairs, (double)duration / NS_PER_S,
	       (double)pairs * NS_PER_S / (double)duration,
	       (double)samples_percentile(&all, 50) / NS_PER_US,
	       (double)samples_percentile(&all, 99) / NS_PER_US);
	samples_free(&all);
	return 0;
}

static void sync_or_die(int fd, bool data)
{
	if ((data ? fdatasync(fd) : fsync(fd)) < 0)
		die("sync");
}

static int run_floor(char **argv)
{
	const char *dir = argv[0];
	size_t iterations = strtoul(argv[1], NULL, 10);
	char text[RECORD_EXAMPLE_BYTES];
	memset(text, 'x', sizeof(text));
	int parent = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (parent < 0 || iterations == 0)
		die(dir);
	struct samples lat = {0};
	uint64_t total = 0;
	for (size_t i = 0; i < iterations; i++) {
		uint64_t t0 = now_ns();
		if (mkdirat(parent, "vm", 0700) < 0)
			die("mkdir");
		sync_or_die(parent, false);
		int d = openat(parent, "vm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int f = openat(d, ".vm.json.tmp", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (d < 0 || f < 0 || write(f, text, sizeof(text)) != (ssize_t)sizeof(text))
			die("temp");
		sync_or_die(f, true);
		close(f);
		if (renameat(d, ".vm.json.tmp", d, "vm.json") < 0)
			die("rename");
		sync_or_die(d, false);
		if (unlinkat(d, "vm.json", 0) < 0)
			die("unlink");
		sync_or_die(d, false);
		close(d);
		if (unlinkat(parent, "vm", AT_REMOVEDIR) < 0)
			die("rmdir");
		sync_or_die(parent, false);
		uint64_t dt = now_ns() - t0;
		samples_add(&lat, dt);
		total += dt;
	}
	samples_sort(&lat);
	printf("iterations=%zu pairs_per_s=%.1f p50_us=%.1f p99_us=%.1f\n", iterations,
	       (double)iterations * NS_PER_S / (double)total,
	       (double)samples_percentile(&lat, 50) / NS_PER_US,
	       (double)samples_percentile(&lat, 99) / NS_PER_US);
	samples_free(&lat);
	close(parent);
	return 0;
}

#define SYNCS_MAX_FILES 512

static void *fdatasync_thread(void *arg)
{
	if (fdatasync(*(int *)arg) < 0)
		die("fdatasync");
	return NULL;
}

/* K fresh files in dir, written and not synced. */
static void fresh_files(int dir, int *fds, size_t k)
{
	char name[32], text[RECORD_EXAMPLE_BYTES];
	memset(text, 'x', sizeof(text));
	for (size_t i = 0; i < k; i++) {
		snprintf(name, sizeof(name), "f%zu", i);
		unlinkat(dir, name, 0);
		fds[i] = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fds[i] < 0 || write(fds[i], text, sizeof(text)) != (ssize_t)sizeof(text))
			die("fresh file");
	}
}

static int run_syncs(char **argv)
{
	size_t k = strtoul(argv[1], NULL, 10), rounds = strtoul(argv[2], NULL, 10);
	int dir = open(argv[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fds[SYNCS_MAX_FILES];
	pthread_t threads[SYNCS_MAX_FILES];
	struct samples ways[3] = {{0}};
	if (dir < 0 || k == 0 || k > SYNCS_MAX_FILES || rounds == 0)
		return fprintf(stderr, "bench_write_path syncs: bad arguments\n"), 2;
	for (size_t r = 0; r < rounds; r++) {
		for (int way = 0; way < 3; way++) {
			fresh_files(dir, fds, k);
			uint64_t t0 = now_ns();
			if (way == 0) {
				for (size_t i = 0; i < k; i++)
					sync_or_die(fds[i], true);
			} else if (way == 1) {
				if (syncfs(dir) < 0)
					die("syncfs");
			} else {
				for (size_t i = 0; i < k; i++)
					if (pthread_create(&threads[i], NULL, fdatasync_thread,
							   &fds[i]) != 0)
						die("pthread_create");
				for (size_t i = 0; i < k; i++)
					pthread_join(threads[i], NULL);
			}
			samples_add(&ways[way], now_ns() - t0);
			for (size_t i = 0; i < k; i++)
				close(fds[i]);
		}
	}
	for (int way = 0; way < 3; way++)
		samples_sort(&ways[way]);
	printf("files=%zu rounds=%zu each_ms=%.2f syncfs_ms=%.2f parallel_ms=%.2f\n", k, rounds,
	       (double)samples_percentile(&ways[0], 50) / NS_PER_MS,
	       (double)samples_percentile(&ways[1], 50) / NS_PER_MS,
	       (double)samples_percentile(&ways[2], 50) / NS_PER_MS);
	for (int way = 0; way < 3; way++)
		samples_free(&ways[way]);
	close(dir);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 8 && strcmp(argv[1], "writers") == 0)
		return run_writers(argv + 2);
	if (argc == 4 && strcmp(argv[1], "floor") == 0)
		return run_floor(argv + 2);
	if (argc == 5 && strcmp(argv[1], "syncs") == 0)
		return run_syncs(argv + 2);
	fprintf(stderr, "usage: bench_write_path writers SOCKET API_ROOT PREFIX N WARMUP_MS "
			"DURATION_MS\n       bench_write_path floor DIR ITERATIONS\n"
			"       bench_write_path syncs DIR K ROUNDS\n");
	return 2;
}
