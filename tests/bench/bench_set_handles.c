/*
 * The measuring half of the set-handles benchmark: how close a SetHandles
 * call comes to the cost of the one durable write it has to make.
 * bench_set_handles.py starts bangerd, registers the VM and starts two stub
 * firecrackers with the same argv; this program times, in the same run and
 * interleaved block by block (the machine is shared and noisy):
 *
 *  - SetHandles over one connection, closed loop, alternating between the
 *    two stubs' pids so that every call changes handles.json (pid and
 *    start_time differ) while the tap/loops/dm mirror in vm.json does not;
 *  - the floor: the same bytes written the way a durable replace must be
 *    written and no cheaper (create a temp file, write, fdatasync, rename
 *    over the target, fsync the directory), in a directory on the same
 *    filesystem as the state dir.
 *
 * Every SetHandles reply is checked (no error, persisted, the pid sent), and
 * after every call handles.json must be a new inode: a call that skipped
 * its write would otherwise look fast. It never asserts a ratio.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_stats.h"
#include "bench_varlink.h"
#include "json.h"
#include "testlib.h"

#define IFACE "io.banger.Handles."

#define DEFAULT_CALLS 500
#define MAX_CALLS     100000
#define WARMUP_CALLS  20
/* SetHandles and floor alternate in blocks this long, so both see the same noise. */
#define BLOCK_CALLS 50
#define MAX_LIST    8 /* loops or dm names, as the API allows */

#define FLOOR_TEMP   ".handles.json.tmp"
#define FLOOR_TARGET "handles.json"

struct options {
	const char *socket, *id, *vm_dir, *floor_dir, *tap;
	long pids[2];
	size_t npids;
	const char *loops[MAX_LIST], *dm[MAX_LIST];
	size_t nloops, ndm;
	size_t calls;
};

/* One prepared SetHandles call per stub: the request bytes are built before any timing. */
struct set_call {
	long pid;
	char *request;
	size_t request_len;
};

struct bench {
	struct bv_conn *conn;
	struct set_call calls[2];
	size_t next; /* which of calls[] goes next */
	int vm_dir_fd, floor_dir_fd;
	char *payload; /* the bytes of a real handles.json, for the floor */
	size_t payload_len;
	ino_t handles_ino, record_ino;
	size_t record_rewrites; /* times vm.json was replaced during the measured calls */
	struct samples set_ns, floor_ns;
};

static void usage(void)
{
	fprintf(stderr, "usage: bench_set_handles --socket PATH --id ID --pid A [--pid B] "
			"--vm-dir DIR --floor-dir DIR [--tap T] [--loop L]... [--dm D]... "
			"[--calls N]\n");
	exit(1);
}

static long parse_number(const char *s, long min, long max, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	CHECK(errno == 0 && end != s && *end == '\0' && v >= min && v <= max,
	      "%s: want %ld..%ld, got \"%s\"", what, min, max, s);
	return v;
}

static void add_to_list(const char **list, size_t *n, const char *value, const char *what)
{
	CHECK(*n < MAX_LIST, "at most %d --%s", MAX_LIST, what);
	list[(*n)++] = value;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},	 {"id", required_argument, NULL, 'i'},
	    {"pid", required_argument, NULL, 'p'},	 {"vm-dir", required_argument, NULL, 'v'},
	    {"floor-dir", required_argument, NULL, 'f'}, {"tap", required_argument, NULL, 't'},
	    {"loop", required_argument, NULL, 'l'},	 {"dm", required_argument, NULL, 'd'},
	    {"calls", required_argument, NULL, 'n'},	 {NULL, 0, NULL, 0}};
	int opt;

	memset(o, 0, sizeof(*o));
	o->calls = DEFAULT_CALLS;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			o->socket = optarg;
			break;
		case 'i':
			o->id = optarg;
			break;
		case 'v':
			o->vm_dir = optarg;
			break;
		case 'f':
			o->floor_dir = optarg;
			break;
		case 't':
			o->tap = optarg;
			break;
		case 'l':
			add_to_list(o->loops, &o->nloops, optarg, "loop");
			break;
		case 'd':
			add_to_list(o->dm, &o->ndm, optarg, "dm");
			break;
		case 'p':
			CHECK(o->npids < 2, "one or two --pid");
			o->pids[o->npids++] = parse_number(optarg, 1, INT32_MAX, "--pid");
			break;
		case 'n':
			o->calls = (size_t)parse_number(optarg, 1, MAX_CALLS, "--calls");
			break;
		default:
			usage();
		}
	}
	/*
	 * One pid: every call names the same firecracker. bangerd watches one
	 * process per VM and replaces it only once it has exited, so two live
	 * stubs can no longer take turns; handles.json is rewritten on every
	 * call all the same (SetHandles always writes it).
	 */
	if (o->npids == 1)
		o->pids[o->npids++] = o->pids[0];
	if (optind != argc || !o->socket || !o->id || !o->vm_dir || !o->floor_dir ||
	    o->npids != 2 || o->pids[0] <= 0 || o->pids[1] <= 0)
		usage();
}

static void build_call(const struct options *o, long pid, struct set_call *call)
{
	yajl_gen g = bv_request_begin(IFACE "SetHandles");
	json_gen_kv_string(g, "id", o->id);
	json_gen_kv_int(g, "pid", pid);
	if (o->tap)
		json_gen_kv_string(g, "tap", o->tap);
	json_gen_string(g, "loops");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < o->nloops; i++)
		json_gen_string(g, o->loops[i]);
	yajl_gen_array_close(g);
	json_gen_string(g, "dm");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < o->ndm; i++)
		json_gen_string(g, o->dm[i]);
	yajl_gen_array_close(g);
	call->pid = pid;
	call->request = bv_request_end(g, &call->request_len);
}

static ino_t inode_of(int dir_fd, const char *name)
{
	struct stat st;
	CHECK(fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, "stat %s: %s", name,
	      strerror(errno));
	return st.st_ino;
}

/* What a successful SetHandles must say: persisted, running, and the pid that was sent. */
static void check_set_reply(const struct set_call *call, const char *reply)
{
	yajl_val tree = bv_parse_success(reply, "SetHandles");
	yajl_val persisted = bv_param(tree, (const char *[]){"persisted", NULL});
	yajl_val pid = bv_param(tree, (const char *[]){"vm", "handles", "pid", NULL});
	yajl_val state = bv_param(tree, (const char *[]){"vm", "state", NULL});

	CHECK(persisted && YAJL_IS_TRUE(persisted), "SetHandles not persisted: %s", reply);
	CHECK(pid && YAJL_IS_INTEGER(pid) && YAJL_GET_INTEGER(pid) == call->pid,
	      "SetHandles for pid %ld answered: %s", call->pid, reply);
	CHECK(bv_is_string(state, "running"), "SetHandles left the VM not running: %s", reply);
	json_free(tree);
}

/* One timed SetHandles; the checks run after the clock stops. */
static uint64_t set_once(struct bench *b)
{
	const struct set_call *call = &b->calls[b->next];
	b->next ^= 1;

	uint64_t start = now_ns();
	char *reply = bv_call(b->conn, call->request, call->request_len);
	uint64_t took = now_ns() - start;

	check_set_reply(call, reply);
	free(reply);
	ino_t ino = inode_of(b->vm_dir_fd, "handles.json");
	CHECK(ino != b->handles_ino, "handles.json was not replaced by a SetHandles call");
	b->handles_ino = ino;
	ino = inode_of(b->vm_dir_fd, "vm.json");
	b->record_rewrites += ino != b->record_ino;
	b->record_ino = ino;
	return took;
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "floor write: %s", n < 0 ? strerror(errno) : "wrote nothing");
		p += n;
		len -= (size_t)n;
	}
}

/* The least a durable replace of a small file can do: data, then name, then directory. */
static uint64_t floor_once(struct bench *b)
{
	uint64_t start = now_ns();
	int fd = openat(b->floor_dir_fd, FLOOR_TEMP, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "floor create: %s", strerror(errno));
	write_all(fd, b->payload, b->payload_len);
	CHECK(fdatasync(fd) == 0, "floor fdatasync: %s", strerror(errno));
	close(fd);
	CHECK(renameat(b->floor_dir_fd, FLOOR_TEMP, b->floor_dir_fd, FLOOR_TARGET) == 0,
	      "floor rename: %s", strerror(errno));
	CHECK(fsync(b->floor_dir_fd) == 0, "floor fsync dir: %s", strerror(errno));
	return now_ns() - start;
}

static int open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	return fd;
}

static void read_payload(struct bench *b)
{
	char buf[BV_REPLY_MAX_BYTES];
	int fd = openat(b->vm_dir_fd, "handles.json", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open handles.json: %s", strerror(errno));
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	CHECK(n > 0, "read handles.json: %s", n < 0 ? strerror(errno) : "empty");
	b->payload = malloc((size_t)n);
	CHECK(b->payload, "malloc");
	memcpy(b->payload, buf, (size_t)n);
	b->payload_len = (size_t)n;
}

static void setup(const struct options *o, struct bench *b)
{
	memset(b, 0, sizeof(*b));
	b->conn = bv_connect(o->socket);
	build_call(o, o->pids[0], &b->calls[0]);
	build_call(o, o->pids[1], &b->calls[1]);
	b->vm_dir_fd = open_dir(o->vm_dir);
	b->floor_dir_fd = open_dir(o->floor_dir);
	/* Warm-up: caches, the helper's first probes, the journal; the payload once it exists. */
	for (size_t i = 0; i < WARMUP_CALLS; i++)
		set_once(b);
	read_payload(b);
	for (size_t i = 0; i < WARMUP_CALLS; i++)
		floor_once(b);
	b->record_rewrites = 0;
}

static void measure(struct bench *b, size_t calls)
{
	while (b->set_ns.n < calls) {
		for (size_t i = 0; i < BLOCK_CALLS && b->floor_ns.n < calls; i++)
			samples_add(&b->floor_ns, floor_once(b));
		for (size_t i = 0; i < BLOCK_CALLS && b->set_ns.n < calls; i++)
			samples_add(&b->set_ns, set_once(b));
	}
	samples_sort(&b->set_ns);
	samples_sort(&b->floor_ns);
}

static void report(const struct bench *b)
{
	double set_med = (double)samples_percentile(&b->set_ns, 50) / NS_PER_US;
	double set_p99 = (double)samples_percentile(&b->set_ns, 99) / NS_PER_US;
	double floor_med = (double)samples_percentile(&b->floor_ns, 50) / NS_PER_US;
	double floor_p99 = (double)samples_percentile(&b->floor_ns, 99) / NS_PER_US;

	printf("handles.json %zu bytes; each of %zu SetHandles calls replaced it (checked by "
	       "inode); vm.json replaced %zu times\n",
	       b->payload_len, b->set_ns.n, b->record_rewrites);
	printf("SetHandles median %.0f us (p99 %.0f us, %zu calls) vs floor %.0f us (p99 %.0f "
	       "us, %zu iterations): ratio %.2fx\n",
	       set_med, set_p99, b->set_ns.n, floor_med, floor_p99, b->floor_ns.n,
	       set_med / floor_med);
	printf("SetHandles spends %.0f us per call (median) on more than the write: the helper's "
	       "probe, the cache, the exit watch, the logs\n",
	       set_med - floor_med);
	/* The same figures as key=value, for scripts (bench_set_handles.py --json). */
	printf("figures:");
	static const unsigned percentiles[] = {10, 50, 90, 99};
	for (size_t i = 0; i < sizeof(percentiles) / sizeof(percentiles[0]); i++)
		printf(" set_p%u_us=%.1f floor_p%u_us=%.1f", percentiles[i],
		       (double)samples_percentile(&b->set_ns, percentiles[i]) / NS_PER_US,
		       percentiles[i],
		       (double)samples_percentile(&b->floor_ns, percentiles[i]) / NS_PER_US);
	printf(" calls=%zu iterations=%zu\n", b->set_ns.n, b->floor_ns.n);
}

static void teardown(struct bench *b)
{
	unlinkat(b->floor_dir_fd, FLOOR_TEMP, 0);
	unlinkat(b->floor_dir_fd, FLOOR_TARGET, 0);
	close(b->floor_dir_fd);
	close(b->vm_dir_fd);
	bv_close(b->conn);
	for (size_t i = 0; i < 2; i++)
		free(b->calls[i].request);
	free(b->payload);
	samples_free(&b->set_ns);
	samples_free(&b->floor_ns);
}

int main(int argc, char **argv)
{
	struct options o;
	struct bench b;

	parse_options(argc, argv, &o);
	setvbuf(stdout, NULL, _IOLBF, 0);
	setup(&o, &b);
	measure(&b, o.calls);
	report(&b);
	teardown(&b);
	return 0;
}
