/*
 * daemon/store.c: vm.json and handles.json round trips, strict decoding,
 * corrupt handles kept aside (never deleted), unknown versions refused, and
 * symlinks in the tree never followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "path.h"
#include "store.h"
#include "testlib.h"

struct fixture {
	char *dir;
	struct store store;
	char why[1024];
	char kept[PATH_MAX + 256];
};

static void vm_file(const struct fixture *f, const char *id, const char *name, char *buf,
		    size_t size)
{
	t_pathf(buf, size, "%s/vms/%s/%s", f->dir, id, name);
}

static void write_raw(const struct fixture *f, const char *id, const char *name, const char *text)
{
	char path[PATH_MAX];
	t_pathf(path, sizeof(path), "%s/vms/%s", f->dir, id);
	mkdir(path, 0700);
	vm_file(f, id, name, path, sizeof(path));
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "create %s", path);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
}

/* The file's content, or NULL when it does not exist. Caller frees. */
static char *read_raw(const char *path)
{
	_cleanup_fclose_ FILE *file = fopen(path, "re");
	if (!file)
		return NULL;
	char *text = calloc(1, 65536);
	CHECK(text, "calloc");
	CHECK(fread(text, 1, 65535, file) < 65535, "read %s", path);
	return text;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static void make_record(struct vm_record *r, const char *id)
{
	memset(r, 0, sizeof(*r));
	CHECK(field_set(r->id, sizeof(r->id), id) == 0, "id");
	r->state = VM_RUNNING;
	r->on_exit = VM_ON_EXIT_KEEP;
	field_set(r->api_sock, sizeof(r->api_sock), "/run/x/api.sock");
	r->has_planned = true;
	field_set(r->planned.tap, sizeof(r->planned.tap), "bgt0");
	r->planned.n_loop_files = 2;
	field_set(r->planned.loop_files[0], sizeof(r->planned.loop_files[0]), "/srv/a.img");
	field_set(r->planned.loop_files[1], sizeof(r->planned.loop_files[1]), "/srv/b \"q\".img");
	r->planned.n_dm = 1;
	field_set(r->planned.dm[0], sizeof(r->planned.dm[0]), "banger-vm1");
	field_set(r->mirror.tap, sizeof(r->mirror.tap), "bgt0");
	r->mirror.tap_ifindex = 17;
	r->mirror.n_loops = 1;
	field_set(r->mirror.loops[0], sizeof(r->mirror.loops[0]), "/dev/loop3");
	r->mirror.loop_diskseq[0] = 34207;
	r->mirror.n_dm = VM_MAX_DM;
	for (int i = 0; i < VM_MAX_DM; i++)
		snprintf(r->mirror.dm[i], sizeof(r->mirror.dm[i]), "banger-vm1-%d", i);
}

static void make_handles(struct vm_handles *h)
{
	memset(h, 0, sizeof(*h));
	h->pid = 123;
	h->start_time = 4567890123ULL;
	field_set(h->boot_id, sizeof(h->boot_id), "0b1e5a4e-1c1d-4a4b-9c2e-6f00d00dfeed");
	field_set(h->tap, sizeof(h->tap), "bgt0");
	h->tap_ifindex = 17;
	h->n_loops = 1;
	field_set(h->loops[0], sizeof(h->loops[0]), "/dev/loop3");
	h->loop_diskseq[0] = 34207;
}

static void test_round_trips(struct fixture *f)
{
	struct vm_record in, out;
	struct vm_handles hin, hout;
	char path[PATH_MAX];
	struct stat st;

	make_record(&in, "vm1");
	CHECK(store_write_record(&f->store, &in) == 0, "write record");
	memset(&out, 0xaa, sizeof(out));
	CHECK(store_read_record(&f->store, "vm1", &out, f->why, sizeof(f->why)) == 0, "read: %s",
	      f->why);
	CHECK(memcmp(&in, &out, sizeof(in)) == 0, "record round trip");
	vm_file(f, "vm1", "vm.json", path, sizeof(path));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "vm.json is 0600");
	t_pathf(path, sizeof(path), "%s/vms/vm1", f->dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700, "vm dir is 0700");

	/* A freshly registered VM: no plan, nothing mirrored yet. */
	memset(&in, 0, sizeof(in));
	field_set(in.id, sizeof(in.id), "vm2");
	in.state = VM_STARTING;
	CHECK(store_write_record(&f->store, &in) == 0, "write bare record");
	memset(&out, 0xaa, sizeof(out));
	CHECK(store_read_record(&f->store, "vm2", &out, f->why, sizeof(f->why)) == 0, "read: %s",
	      f->why);
	CHECK(memcmp(&in, &out, sizeof(in)) == 0, "bare record round trip");

	make_handles(&hin);
	CHECK(store_write_handles(&f->store, "vm1", &hin) == 0, "write handles");
	memset(&hout, 0xaa, sizeof(hout));
	CHECK(store_read_handles(&f->store, "vm1", &hout, f->why, sizeof(f->why), f->kept,
				 sizeof(f->kept)) == 0,
	      "read handles: %s", f->why);
	CHECK(memcmp(&hin, &hout, sizeof(hin)) == 0, "handles round trip");

	/* Nothing is written that would not read back. */
	make_record(&in, "vm3");
	field_set(in.mirror.tap, sizeof(in.mirror.tap), "\xff");
	CHECK(store_write_record(&f->store, &in) == -EINVAL, "not UTF-8");
	make_record(&in, "vm3");
	in.mirror.n_loops = VM_MAX_LOOPS + 1;
	CHECK(store_write_record(&f->store, &in) == -EINVAL, "count over max");
	make_record(&in, "vm3");
	memset(in.api_sock, 'a', sizeof(in.api_sock));
	CHECK(store_write_record(&f->store, &in) == -EINVAL, "unterminated field");
	make_record(&in, "../vm3");
	CHECK(store_write_record(&f->store, &in) == -EINVAL, "invalid id");
	hin.pid = 0;
	CHECK(store_write_handles(&f->store, "vm3", &hin) == -EINVAL, "pid 0");
	t_pathf(path, sizeof(path), "%s/vms/vm3", f->dir);
	CHECK(!exists(path), "refused writes create nothing");
}

static void test_missing(struct fixture *f)
{
	struct vm_record r;
	struct vm_handles h;

	CHECK(store_read_handles(&f->store, "vm2", &h, f->why, sizeof(f->why), f->kept,
				 sizeof(f->kept)) == -ENOENT &&
		  f->kept[0] == '\0',
	      "no handles.json: -ENOENT");
	CHECK(store_read_handles(&f->store, "nosuchvm", &h, f->why, sizeof(f->why), f->kept,
				 sizeof(f->kept)) == -ENOENT,
	      "no dir: -ENOENT");
	CHECK(store_read_record(&f->store, "nosuchvm", &r, f->why, sizeof(f->why)) == -ENOENT,
	      "no record: -ENOENT");
	CHECK(store_remove_handles(&f->store, "vm2") == 0, "removing absent handles");
	CHECK(store_remove_handles(&f->store, "nosuchvm") == 0, "removing from absent VM");
	CHECK(store_remove_vm(&f->store, "nosuchvm") == 0, "removing absent VM");
}

/* vm.json of id holding text is refused for defect, and stays where it is. */
static void check_corrupt_record(struct fixture *f, const char *id, const char *text,
				 const char *defect)
{
	struct vm_record r;
	char path[PATH_MAX];

	write_raw(f, id, "vm.json", text);
	vm_file(f, id, "vm.json", path, sizeof(path));
	int ret = store_read_record(&f->store, id, &r, f->why, sizeof(f->why));
	CHECK(ret == -EBADMSG && strstr(f->why, path) && strstr(f->why, defect), "'%s': %d %s",
	      defect, ret, f->why);
	CHECK(exists(path), "a corrupt record is never moved");
}

/* Write text as handles.json, read it: refused, renamed aside with the same bytes. */
static void check_corrupt_handles(struct fixture *f, const char *text, const char *defect)
{
	struct vm_handles h;
	char path[PATH_MAX];

	write_raw(f, "vm1", "handles.json", text);
	vm_file(f, "vm1", "handles.json", path, sizeof(path));
	int r = store_read_handles(&f->store, "vm1", &h, f->why, sizeof(f->why), f->kept,
				   sizeof(f->kept));
	CHECK(r == -EBADMSG, "%s: got %d (%s)", defect, r, f->why);
	CHECK(strstr(f->why, path) && strstr(f->why, defect), "why names file and '%s': %s", defect,
	      f->why);
	CHECK(!exists(path), "%s: original moved away", defect);
	char prefix[PATH_MAX];
	t_pathf(prefix, sizeof(prefix), "%s.corrupt-", path);
	CHECK(strncmp(f->kept, prefix, strlen(prefix)) == 0, "kept_as: %s", f->kept);
	_cleanup_free_ char *kept = read_raw(f->kept);
	CHECK(kept && strcmp(kept, text) == 0, "%s: kept copy has the same bytes", defect);
}

static void test_corrupt_handles(struct fixture *f)
{
	char first[sizeof(f->kept)];

	check_corrupt_handles(f, "garbage{", "not valid JSON");
	CHECK(snprintf(first, sizeof(first), "%s", f->kept) > 0, "copy");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":\"123\",\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"\",\"loops\":[],\"dm\":[]}",
			      "\"pid\" is not");
	CHECK(strcmp(first, f->kept) != 0, "a second copy in the same second gets its own name");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":123,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"\",\"loops\":[],\"dm\":[],\"extra\":0}",
			      "unknown key \"extra\"");
	check_corrupt_handles(f,
			      "{\"version\":2,\"pid\":123,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"\",\"loops\":[],\"dm\":[]}",
			      "version 2 is not supported");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":-5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"\",\"loops\":[],\"dm\":[]}",
			      "\"pid\" is not a positive");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"a-tap-name-too-long\",\"loops\":[],\"dm\":[]}",
			      "\"tap\" is longer than 15 bytes");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"t\",\"loops\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\","
			      "\"8\",\"9\"],\"dm\":[]}",
			      "\"loops\" has more than 8 entries");
	check_corrupt_handles(f, "{\"pid\":5}", "missing \"version\"");
	check_corrupt_handles(f, "[1]", "not a JSON object");
}

/*
 * Files of a bangerd from before loops carried their diskseq: they load, with
 * every diskseq 0 (not recorded), and such handles are written back the same
 * way. A diskseq list that does not fit the loops is corruption.
 */
static void test_without_diskseq(struct fixture *f)
{
	struct vm_handles h, want;
	struct vm_record r;
	char path[PATH_MAX];

	write_raw(f, "vm1", "handles.json",
		  "{\"version\":1,\"pid\":123,\"start_time\":4567890123,"
		  "\"boot_id\":\"0b1e5a4e-1c1d-4a4b-9c2e-6f00d00dfeed\",\"tap\":\"bgt0\","
		  "\"loops\":[\"/dev/loop3\"],\"dm\":[]}");
	memset(&h, 0xaa, sizeof(h));
	CHECK(store_read_handles(&f->store, "vm1", &h, f->why, sizeof(f->why), f->kept,
				 sizeof(f->kept)) == 0,
	      "old handles.json: %s", f->why);
	make_handles(&want);
	want.loop_diskseq[0] = 0;
	want.tap_ifindex = 0;
	CHECK(memcmp(&h, &want, sizeof(h)) == 0,
	      "old handles.json: diskseqs and ifindex 0, the rest as written");
	CHECK(store_write_handles(&f->store, "vm1", &h) == 0, "write handles without diskseqs");
	vm_file(f, "vm1", "handles.json", path, sizeof(path));
	_cleanup_free_ char *text = read_raw(path);
	CHECK(text && !strstr(text, "loop_diskseq") && !strstr(text, "tap_ifindex"),
	      "none recorded, none written: %s", text);

	write_raw(f, "vm1", "vm.json",
		  "{\"version\":1,\"id\":\"vm1\",\"state\":\"running\",\"on_exit\":\"keep\","
		  "\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[\"/dev/loop3\"],"
		  "\"dm\":[]}}");
	CHECK(store_read_record(&f->store, "vm1", &r, f->why, sizeof(f->why)) == 0,
	      "old vm.json: %s", f->why);
	CHECK(r.mirror.n_loops == 1 && r.mirror.loop_diskseq[0] == 0, "old mirror: diskseq 0");
	write_raw(f, "vm1", "vm.json",
		  "{\"version\":1,\"id\":\"vm1\",\"state\":\"running\",\"on_exit\":\"keep\","
		  "\"api_sock\":\"\",\"mirror\":{\"tap\":\"bgt0\",\"loops\":[],\"dm\":[]}}");
	CHECK(store_read_record(&f->store, "vm1", &r, f->why, sizeof(f->why)) == 0,
	      "old vm.json with a tap: %s", f->why);
	CHECK(strcmp(r.mirror.tap, "bgt0") == 0 && r.mirror.tap_ifindex == 0,
	      "old mirror: ifindex 0");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"t\",\"tap_ifindex\":0,\"loops\":[],\"dm\":[]}",
			      "\"tap_ifindex\" is not a positive 32-bit integer");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"t\",\"tap_ifindex\":2147483648,\"loops\":[],\"dm\":[]}",
			      "\"tap_ifindex\" is not a positive 32-bit integer");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"\",\"tap_ifindex\":3,\"loops\":[],\"dm\":[]}",
			      "\"tap_ifindex\" without a tap");
	check_corrupt_record(f, "vm1",
			     "{\"version\":1,\"id\":\"vm1\",\"state\":\"running\",\"on_exit\":"
			     "\"keep\",\"api_sock\":\"\",\"mirror\":{\"tap\":\"t\",\"tap_ifindex\":"
			     "\"3\",\"loops\":[],\"dm\":[]}}",
			     "\"mirror.tap_ifindex\" is not a positive");

	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"t\",\"loops\":[\"/dev/loop3\"],\"loop_diskseq\":[1,2],"
			      "\"dm\":[]}",
			      "\"loop_diskseq\" has 2 entries for 1 loops");
	check_corrupt_handles(f,
			      "{\"version\":1,\"pid\":5,\"start_time\":1,\"boot_id\":\"b\","
			      "\"tap\":\"t\",\"loops\":[\"/dev/loop3\"],\"loop_diskseq\":[-1],"
			      "\"dm\":[]}",
			      "\"loop_diskseq\" is not an array of up to 8 integers >= 0");
	check_corrupt_record(f, "vm1",
			     "{\"version\":1,\"id\":\"vm1\",\"state\":\"running\",\"on_exit\":"
			     "\"keep\",\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],"
			     "\"loop_diskseq\":[\"7\"],\"dm\":[]}}",
			     "\"mirror.loop_diskseq\" is not an array");
}

static void test_record_versions(struct fixture *f)
{
	struct vm_record r;
	char path[PATH_MAX];
	const char *v2 = "{\"version\":2,\"id\":\"vm5\",\"whatever\":[]}";

	write_raw(f, "vm5", "vm.json", v2);
	vm_file(f, "vm5", "vm.json", path, sizeof(path));
	CHECK(store_read_record(&f->store, "vm5", &r, f->why, sizeof(f->why)) == -EPROTONOSUPPORT,
	      "version 2 refused: %s", f->why);
	CHECK(strstr(f->why, path) && strstr(f->why, "version 2"), "why: %s", f->why);
	_cleanup_free_ char *after = read_raw(path);
	CHECK(after && strcmp(after, v2) == 0, "file left alone");

	static const struct {
		const char *text, *defect;
	} bad[] = {
	    {"{\"id\":\"vm5\"}", "missing \"version\""},
	    {"{\"version\":\"1\"}", "\"version\" is not an integer"},
	    {"{\"version\":1,\"id\":\"vm6\",\"state\":\"running\",\"on_exit\":\"keep\","
	     "\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],\"dm\":[]}}",
	     "does not match its directory"},
	    {"{\"version\":1,\"id\":\"vm5\",\"state\":\"flying\",\"on_exit\":\"keep\","
	     "\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],\"dm\":[]}}",
	     "unknown state \"flying\""},
	    {"{\"version\":1,\"id\":\"vm5\",\"state\":\"running\",\"on_exit\":\"keep\","
	     "\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],\"dm\":[],\"x\":1}}",
	     "unknown key \"mirror.x\""},
	    {"{\"version\":1,\"id\":\"vm5\",\"state\":\"running\",\"on_exit\":\"keep\","
	     "\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],\"dm\":[]},"
	     "\"planned\":{\"tap\":\"\",\"loop_files\":[\"\"],\"dm\":[]}}",
	     "\"planned.loop_files\" must hold non-empty strings"},
	    {"{\"version\":1,\"id\":\"vm5\",\"state\":\"running\",\"on_exit\":\"keep\","
	     "\"api_sock\":\"\"}",
	     "missing \"mirror\""},
	    {"{\"version\":1,\"id\":\"vm5\",\"id\":\"vm5\",\"state\":\"running\","
	     "\"on_exit\":\"keep\",\"api_sock\":\"\",\"mirror\":{\"tap\":\"\",\"loops\":[],"
	     "\"dm\":[]}}",
	     "key \"id\" given twice"},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		check_corrupt_record(f, "vm5", bad[i].text, bad[i].defect);
}

static void test_list_and_remove(struct fixture *f)
{
	char path[PATH_MAX];
	char **ids = NULL;
	size_t count = 0;

	/* Junk that is not a VM: a file, invalid names, symlinks. */
	t_pathf(path, sizeof(path), "%s/vms/vm9", f->dir);
	close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
	t_pathf(path, sizeof(path), "%s/vms/.hidden", f->dir);
	mkdir(path, 0700);
	t_pathf(path, sizeof(path), "%s/vms/bad name", f->dir);
	mkdir(path, 0700);
	t_pathf(path, sizeof(path), "%s/vms/vm8", f->dir);
	CHECK(symlink(f->dir, path) == 0, "symlink");

	CHECK(store_list_ids(&f->store, &ids, &count) == 0, "list");
	CHECK(count == 3 && strcmp(ids[0], "vm1") == 0 && strcmp(ids[1], "vm2") == 0 &&
		  strcmp(ids[2], "vm5") == 0,
	      "listed %zu: %s ...", count, count ? ids[0] : "");
	for (size_t i = 0; i < count; i++)
		free(ids[i]);
	free(ids);

	/* A symlinked VM dir is neither read nor written through. */
	struct vm_record r;
	make_record(&r, "vm8");
	CHECK(store_read_record(&f->store, "vm8", &r, f->why, sizeof(f->why)) < 0, "read via link");
	CHECK(store_write_record(&f->store, &r) < 0, "write via link");
	t_pathf(path, sizeof(path), "%s/vm.json", f->dir);
	CHECK(!exists(path), "nothing written through the symlink");

	/* remove_vm: handles, stale temps, the record, then the dir. */
	struct vm_handles h;
	make_handles(&h);
	CHECK(store_write_handles(&f->store, "vm2", &h) == 0, "handles for vm2");
	write_raw(f, "vm2", ".vm.json.tmp.123456", "{");
	CHECK(store_remove_vm(&f->store, "vm2") == 0, "remove vm2");
	t_pathf(path, sizeof(path), "%s/vms/vm2", f->dir);
	CHECK(!exists(path), "vm2 dir gone");

	/* vm1 holds kept-aside corrupt copies: the record goes, the evidence stays. */
	CHECK(store_write_handles(&f->store, "vm1", &h) == 0, "handles for vm1");
	CHECK(store_remove_handles(&f->store, "vm1") == 0, "remove handles");
	vm_file(f, "vm1", "handles.json", path, sizeof(path));
	CHECK(!exists(path), "handles.json gone");
	CHECK(store_remove_vm(&f->store, "vm1") == 0, "remove vm1");
	vm_file(f, "vm1", "vm.json", path, sizeof(path));
	CHECK(!exists(path), "vm1 record gone");
	CHECK(exists(f->kept), "corrupt copy kept: %s", f->kept);
}

int main(void)
{
	struct fixture f = {0};
	char path[PATH_MAX];
	struct stat st;

	f.dir = t_make_temp_dir("store");
	CHECK(store_open(&f.store, f.dir, f.why, sizeof(f.why)) == 0, "open: %s", f.why);
	t_pathf(path, sizeof(path), "%s/vms", f.dir);
	CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700,
	      "vms/ created 0700");

	test_round_trips(&f);
	test_missing(&f);
	test_corrupt_handles(&f);
	test_without_diskseq(&f);
	test_record_versions(&f);
	test_list_and_remove(&f);

	store_close(&f.store);
	CHECK(f.store.vms_fd == -1, "closed");

	/* A state dir that is a symlink is refused. */
	t_pathf(path, sizeof(path), "%s-link", f.dir);
	CHECK(symlink(f.dir, path) == 0, "symlink");
	struct store other;
	int r = store_open(&other, path, f.why, sizeof(f.why));
	/* Linux says ENOTDIR for O_DIRECTORY|O_NOFOLLOW on a symlink to a directory. */
	CHECK((r == -ELOOP || r == -ENOTDIR) && other.vms_fd == -1, "symlinked state dir: %d", r);
	unlink(path);

	t_cleanup_dir(f.dir);
	free(f.dir);
	return 0;
}
