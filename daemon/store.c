/*
 * See store.h. Every file below vms/ is reached with *at() calls from
 * vms_fd and a per-VM dir fd opened O_NOFOLLOW, never through a path
 * string, so a symlink planted anywhere in the tree is refused rather than
 * followed. Decoding is strict (unknown keys, wrong types, overlong strings
 * are corruption) and every write is read back through the same decoder
 * first: bangerd never writes a file it would refuse to read.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomicfile.h"
#include "json.h"
#include "macro.h"
#include "path.h"

#define RECORD_FILE	 "vm.json"
#define HANDLES_FILE	 "handles.json"
#define CORRUPT_SUFFIXES 100 /* handles.json.corrupt-<secs> and -1 .. -99 */

int store_prepare_dir(const char *dir, uid_t uid, gid_t gid, char *why, size_t why_size)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: %s", dir, strerror(-r));
		return r;
	}
	/* O_NOFOLLOW on the last component: the dir itself must not be a symlink. */
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: %s", dir,
			 r == -ELOOP ? "is a symlink" : strerror(-r));
		return r;
	}
	if (geteuid() == 0) {
		if (fchown(fd, uid, gid) < 0) {
			int r = negative_errno();
			snprintf(why, why_size, "state dir %s: chown: %s", dir, strerror(-r));
			return r;
		}
	} else if (st.st_uid != uid) {
		snprintf(why, why_size, "state dir %s is owned by uid %u, not by us (%u)", dir,
			 st.st_uid, uid);
		return -EPERM;
	}
	if (fchmod(fd, 0700) < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: chmod: %s", dir, strerror(-r));
		return r;
	}
	return 0;
}

void store_path(const struct store *s, const char *id, const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/vms/%s/%s", s->dir, id, name);
}

int store_open(struct store *s, const char *state_dir, char *why, size_t why_size)
{
	s->vms_fd = -1;
	if (field_set(s->dir, sizeof(s->dir), state_dir) < 0) {
		snprintf(why, why_size, "state dir %.64s...: path too long", state_dir);
		return -ENAMETOOLONG;
	}
	_cleanup_close_ int dir_fd =
	    open(state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir_fd < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "state dir %s: %s", state_dir,
			 r == -ELOOP || r == -ENOTDIR ? "not a directory (or a symlink)"
						      : strerror(-r));
		return r;
	}
	if (mkdirat(dir_fd, "vms", 0700) < 0 && errno != EEXIST) {
		int r = negative_errno();
		snprintf(why, why_size, "%s/vms: %s", state_dir, strerror(-r));
		return r;
	}
	int fd = openat(dir_fd, "vms", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int r = negative_errno();
		snprintf(why, why_size, "%s/vms: %s", state_dir,
			 r == -ELOOP || r == -ENOTDIR ? "not a directory (or a symlink)"
						      : strerror(-r));
		return r;
	}
	s->vms_fd = fd;
	return 0;
}

void store_close(struct store *s)
{
	store_writer_free(s->writer);
	s->writer = NULL;
	s->vms_fd = safe_close(s->vms_fd);
}

/* Open vms/<id>/ to read it (the writer makes it). */
static int open_vm_dir(struct store *s, const char *id)
{
	if (!vm_id_is_valid(id, NULL))
		return -EINVAL;
	int fd = openat(s->vms_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? negative_errno() : fd;
}

/* ---- decoding ---------------------------------------------------------- */

/* Where decode errors go: "<file path>: <what is wrong>". */
struct decoder {
	char path[PATH_MAX + 2 * NAME_MAX];
	char *why;
	size_t why_size;
};

static int corrupt(const struct decoder *d, const char *fmt, ...) _printf_(2, 3);
static int corrupt(const struct decoder *d, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(d->why, d->why_size, "%s: %s", d->path, what);
	return -EBADMSG;
}

/* Refuse keys we do not know (json_parse() refuses a key given twice). */
static int check_keys(const struct decoder *d, yajl_val obj, const char *where,
		      const char *const *allowed)
{
	char shown[64];
	const char *unknown = json_unknown_key(obj, allowed);
	if (unknown)
		return corrupt(d, "unknown key \"%s%s\"", where,
			       json_printable(unknown, shown, sizeof(shown)));
	return 0;
}

static int decode_string(const struct decoder *d, yajl_val obj, const char *where, const char *key,
			 char *field, size_t field_size)
{
	const char *value;
	int r = json_get_string(obj, key, &value);
	if (r == -ENOENT)
		return corrupt(d, "missing \"%s%s\"", where, key);
	if (r < 0)
		return corrupt(d, "\"%s%s\" is not a string", where, key);
	if (field_set(field, field_size, value) < 0)
		return corrupt(d, "\"%s%s\" is longer than %zu bytes", where, key, field_size - 1);
	return 0;
}

static int decode_string_array(const struct decoder *d, yajl_val obj, const char *where,
			       const char *key, char *fields, size_t field_size, size_t max,
			       uint32_t *count)
{
	yajl_val arr;
	int r = json_get_array(obj, key, &arr);
	if (r == -ENOENT)
		return corrupt(d, "missing \"%s%s\"", where, key);
	if (r < 0)
		return corrupt(d, "\"%s%s\" is not an array", where, key);
	r = json_copy_string_array(arr, fields, field_size, max, count);
	if (r == -E2BIG)
		return corrupt(d, "\"%s%s\" has more than %zu entries", where, key, max);
	if (r == -ENAMETOOLONG)
		return corrupt(d, "an entry of \"%s%s\" is longer than %zu bytes", where, key,
			       field_size - 1);
	if (r < 0)
		return corrupt(d, "\"%s%s\" must hold non-empty strings", where, key);
	return 0;
}

/*
 * The loops' diskseqs, one per loop, or nothing: a file written before
 * bangerd recorded them, whose loops then keep 0 (not recorded).
 */
static int decode_diskseqs(const struct decoder *d, yajl_val obj, const char *where,
			   uint32_t n_loops, uint64_t *seqs)
{
	yajl_val arr;
	uint32_t count = 0;
	int r = json_get_array(obj, "loop_diskseq", &arr);
	if (r == -ENOENT)
		return 0;
	if (r < 0 || json_copy_uint_array(arr, seqs, VM_MAX_LOOPS, &count) < 0)
		return corrupt(d, "\"%sloop_diskseq\" is not an array of up to %d integers >= 0",
			       where, VM_MAX_LOOPS);
	if (count != n_loops)
		return corrupt(d, "\"%sloop_diskseq\" has %u entries for %u loops", where, count,
			       n_loops);
	return 0;
}

/*
 * The tap's ifindex, or nothing: a file written before bangerd recorded it
 * (or with no tap), whose tap then keeps 0 (not recorded).
 */
static int decode_tap_ifindex(const struct decoder *d, yajl_val obj, const char *where,
			      const char *tap, uint32_t *ifindex)
{
	int64_t v;
	int r = json_get_int(obj, "tap_ifindex", &v);
	if (r == -ENOENT)
		return 0;
	if (r < 0 || v <= 0 || v > INT32_MAX)
		return corrupt(d, "\"%stap_ifindex\" is not a positive 32-bit integer", where);
	if (tap[0] == '\0')
		return corrupt(d, "\"%stap_ifindex\" without a tap", where);
	*ifindex = (uint32_t)v;
	return 0;
}

static int decode_object(const struct decoder *d, yajl_val obj, const char *key, yajl_val *out)
{
	int r = json_get_object(obj, key, out);
	if (r == -ENOENT)
		return corrupt(d, "missing \"%s\"", key);
	if (r < 0)
		return corrupt(d, "\"%s\" is not an object", key);
	return 0;
}

/* Parse text into an object that carries our version; -EPROTONOSUPPORT for another version. */
static int decode_root(const struct decoder *d, const char *text, yajl_val *out)
{
	char parse_why[256];
	_cleanup_(yajl_tree_freep) yajl_val root = NULL;
	int64_t version;

	if (json_parse(text, JSON_MAX_DEPTH, &root, parse_why, sizeof(parse_why)) < 0)
		return corrupt(d, "not valid JSON: %s", parse_why);
	if (!YAJL_IS_OBJECT(root))
		return corrupt(d, "not a JSON object");
	int r = json_get_int(root, "version", &version);
	if (r == -ENOENT)
		return corrupt(d, "missing \"version\"");
	if (r < 0)
		return corrupt(d, "\"version\" is not an integer");
	if (version != STORE_FORMAT_VERSION) {
		snprintf(d->why, d->why_size,
			 "%s: format version %lld is not supported (this bangerd reads version %d)",
			 d->path, (long long)version, STORE_FORMAT_VERSION);
		return -EPROTONOSUPPORT;
	}
	*out = TAKE_PTR(root);
	return 0;
}

static int decode_planned(const struct decoder *d, yajl_val obj, struct vm_planned *p)
{
	static const char *const keys[] = {"tap", "loop_files", "dm", NULL};
	int r = check_keys(d, obj, "planned.", keys);
	if (r == 0)
		r = decode_string(d, obj, "planned.", "tap", p->tap, sizeof(p->tap));
	if (r == 0)
		r = decode_string_array(d, obj, "planned.", "loop_files", &p->loop_files[0][0],
					sizeof(p->loop_files[0]), VM_MAX_LOOPS, &p->n_loop_files);
	if (r == 0)
		r = decode_string_array(d, obj, "planned.", "dm", &p->dm[0][0], sizeof(p->dm[0]),
					VM_MAX_DM, &p->n_dm);
	return r;
}

static int decode_mirror(const struct decoder *d, yajl_val obj, struct vm_record *rec)
{
	static const char *const keys[] = {"tap",	   "tap_ifindex", "loops",
					   "loop_diskseq", "dm",	  NULL};
	int r = check_keys(d, obj, "mirror.", keys);
	if (r == 0)
		r = decode_string(d, obj, "mirror.", "tap", rec->mirror.tap,
				  sizeof(rec->mirror.tap));
	if (r == 0)
		r = decode_tap_ifindex(d, obj, "mirror.", rec->mirror.tap,
				       &rec->mirror.tap_ifindex);
	if (r == 0)
		r = decode_string_array(d, obj, "mirror.", "loops", &rec->mirror.loops[0][0],
					sizeof(rec->mirror.loops[0]), VM_MAX_LOOPS,
					&rec->mirror.n_loops);
	if (r == 0)
		r = decode_diskseqs(d, obj, "mirror.", rec->mirror.n_loops,
				    rec->mirror.loop_diskseq);
	if (r == 0)
		r = decode_string_array(d, obj, "mirror.", "dm", &rec->mirror.dm[0][0],
					sizeof(rec->mirror.dm[0]), VM_MAX_DM, &rec->mirror.n_dm);
	return r;
}

/* The names of state and on_exit, checked against vm.h's tables. */
static int decode_enums(const struct decoder *d, yajl_val root, struct vm_record *rec)
{
	char name[32], shown[32];

	int r = decode_string(d, root, "", "state", name, sizeof(name));
	if (r < 0)
		return r;
	int value = vm_state_from_name(name);
	if (value < 0)
		return corrupt(d, "unknown state \"%s\"",
			       json_printable(name, shown, sizeof(shown)));
	rec->state = (enum vm_state)value;

	r = decode_string(d, root, "", "on_exit", name, sizeof(name));
	if (r < 0)
		return r;
	value = vm_on_exit_from_name(name);
	if (value < 0)
		return corrupt(d, "unknown on_exit \"%s\"",
			       json_printable(name, shown, sizeof(shown)));
	rec->on_exit = (enum vm_on_exit)value;
	return 0;
}

/* vm.json of the VM whose directory is named dir_id; *out is written only on success. */
static int decode_record(const struct decoder *d, const char *text, const char *dir_id,
			 struct vm_record *out)
{
	static const char *const keys[] = {"version",  "id",	  "state",  "on_exit",
					   "api_sock", "planned", "mirror", NULL};
	_cleanup_(yajl_tree_freep) yajl_val root = NULL;
	struct vm_record rec;
	yajl_val planned = NULL, mirror = NULL;
	const char *why_id;
	char shown[VM_ID_MAX + 1];

	/* Zeroed with memset, padding included, so equal records compare equal bytewise. */
	memset(&rec, 0, sizeof(rec));
	int r = decode_root(d, text, &root);
	if (r < 0)
		return r;
	r = check_keys(d, root, "", keys);
	if (r == 0)
		r = decode_string(d, root, "", "id", rec.id, sizeof(rec.id));
	if (r < 0)
		return r;
	if (!vm_id_is_valid(rec.id, &why_id))
		return corrupt(d, "invalid id \"%s\": %s",
			       json_printable(rec.id, shown, sizeof(shown)), why_id);
	if (strcmp(rec.id, dir_id) != 0)
		return corrupt(d, "id \"%s\" does not match its directory", rec.id);
	r = decode_enums(d, root, &rec);
	if (r == 0)
		r = decode_string(d, root, "", "api_sock", rec.api_sock, sizeof(rec.api_sock));
	if (r < 0)
		return r;

	r = json_get_object(root, "planned", &planned);
	if (r == -EINVAL)
		return corrupt(d, "\"planned\" is not an object");
	rec.has_planned = r == 0;
	if (rec.has_planned && (r = decode_planned(d, planned, &rec.planned)) < 0)
		return r;

	r = decode_object(d, root, "mirror", &mirror);
	if (r == 0)
		r = decode_mirror(d, mirror, &rec);
	if (r < 0)
		return r;
	memcpy(out, &rec, sizeof(rec));
	return 0;
}

/* handles.json; *out is written only on success. */
static int decode_handles(const struct decoder *d, const char *text, struct vm_handles *out)
{
	static const char *const keys[] = {"version",	  "pid",   "start_time",   "boot_id", "tap",
					   "tap_ifindex", "loops", "loop_diskseq", "dm",      NULL};
	_cleanup_(yajl_tree_freep) yajl_val root = NULL;
	struct vm_handles h;
	int64_t pid, start_time;

	memset(&h, 0, sizeof(h));
	int r = decode_root(d, text, &root);
	if (r == 0)
		r = check_keys(d, root, "", keys);
	if (r < 0)
		return r;

	r = json_get_int(root, "pid", &pid);
	if (r == -ENOENT)
		return corrupt(d, "missing \"pid\"");
	if (r < 0 || pid <= 0 || pid > INT32_MAX)
		return corrupt(d, "\"pid\" is not a positive 32-bit integer");
	h.pid = (int32_t)pid;
	r = json_get_int(root, "start_time", &start_time);
	if (r == -ENOENT)
		return corrupt(d, "missing \"start_time\"");
	if (r < 0 || start_time < 0)
		return corrupt(d, "\"start_time\" is not a non-negative integer");
	h.start_time = (uint64_t)start_time;

	r = decode_string(d, root, "", "boot_id", h.boot_id, sizeof(h.boot_id));
	if (r == 0)
		r = decode_string(d, root, "", "tap", h.tap, sizeof(h.tap));
	if (r == 0)
		r = decode_tap_ifindex(d, root, "", h.tap, &h.tap_ifindex);
	if (r == 0)
		r = decode_string_array(d, root, "", "loops", &h.loops[0][0], sizeof(h.loops[0]),
					VM_MAX_LOOPS, &h.n_loops);
	if (r == 0)
		r = decode_diskseqs(d, root, "", h.n_loops, h.loop_diskseq);
	if (r == 0)
		r = decode_string_array(d, root, "", "dm", &h.dm[0][0], sizeof(h.dm[0]), VM_MAX_DM,
					&h.n_dm);
	if (r < 0)
		return r;
	memcpy(out, &h, sizeof(h));
	return 0;
}

/* ---- encoding ---------------------------------------------------------- */

static bool terminated(const char *field, size_t size)
{
	return memchr(field, '\0', size) != NULL;
}

/* JSON integers are int64 to yajl: a larger diskseq cannot be written (none is that large). */
static bool diskseqs_fit(const uint64_t *seqs)
{
	for (size_t i = 0; i < VM_MAX_LOOPS; i++)
		if (seqs[i] > INT64_MAX)
			return false;
	return true;
}

/* Written only when recorded, so that a record of none reads as before. */
static void encode_diskseqs(yajl_gen g, const uint64_t *seqs, uint32_t n_loops)
{
	if (vm_loops_have_diskseq(seqs, n_loops))
		json_gen_kv_uint_array(g, "loop_diskseq", seqs, n_loops);
}

/* Written only when recorded, as the diskseqs are. */
static void encode_tap(yajl_gen g, const char *tap, uint32_t ifindex)
{
	json_gen_kv_string(g, "tap", tap);
	if (ifindex)
		json_gen_kv_int(g, "tap_ifindex", ifindex);
}

static void encode_planned(yajl_gen g, const struct vm_planned *p)
{
	json_gen_string(g, "planned");
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "tap", p->tap);
	json_gen_kv_string_array(g, "loop_files", &p->loop_files[0][0], sizeof(p->loop_files[0]),
				 p->n_loop_files);
	json_gen_kv_string_array(g, "dm", &p->dm[0][0], sizeof(p->dm[0]), p->n_dm);
	yajl_gen_map_close(g);
}

/*
 * Fields read by strlen must be terminated and counts must be within the
 * arrays, or encoding itself would read out of bounds; everything else a
 * reader would refuse is caught by decoding the result.
 */
static int encode_record(yajl_gen g, const struct vm_record *r)
{
	if (!terminated(r->api_sock, sizeof(r->api_sock)) ||
	    !terminated(r->mirror.tap, sizeof(r->mirror.tap)) || r->mirror.n_loops > VM_MAX_LOOPS ||
	    r->mirror.n_dm > VM_MAX_DM || !diskseqs_fit(r->mirror.loop_diskseq) ||
	    r->mirror.tap_ifindex > INT32_MAX)
		return -EINVAL;
	if (r->has_planned &&
	    (!terminated(r->planned.tap, sizeof(r->planned.tap)) ||
	     r->planned.n_loop_files > VM_MAX_LOOPS || r->planned.n_dm > VM_MAX_DM))
		return -EINVAL;

	yajl_gen_map_open(g);
	json_gen_kv_int(g, "version", STORE_FORMAT_VERSION);
	json_gen_kv_string(g, "id", r->id);
	json_gen_kv_string(g, "state", vm_state_name(r->state));
	json_gen_kv_string(g, "on_exit", vm_on_exit_name(r->on_exit));
	json_gen_kv_string(g, "api_sock", r->api_sock);
	if (r->has_planned)
		encode_planned(g, &r->planned);
	json_gen_string(g, "mirror");
	yajl_gen_map_open(g);
	encode_tap(g, r->mirror.tap, r->mirror.tap_ifindex);
	json_gen_kv_string_array(g, "loops", &r->mirror.loops[0][0], sizeof(r->mirror.loops[0]),
				 r->mirror.n_loops);
	encode_diskseqs(g, r->mirror.loop_diskseq, r->mirror.n_loops);
	json_gen_kv_string_array(g, "dm", &r->mirror.dm[0][0], sizeof(r->mirror.dm[0]),
				 r->mirror.n_dm);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	return 0;
}

static int encode_handles(yajl_gen g, const struct vm_handles *h)
{
	if (!terminated(h->boot_id, sizeof(h->boot_id)) || !terminated(h->tap, sizeof(h->tap)) ||
	    h->n_loops > VM_MAX_LOOPS || h->n_dm > VM_MAX_DM || h->start_time > INT64_MAX ||
	    !diskseqs_fit(h->loop_diskseq) || h->tap_ifindex > INT32_MAX)
		return -EINVAL;

	yajl_gen_map_open(g);
	json_gen_kv_int(g, "version", STORE_FORMAT_VERSION);
	json_gen_kv_int(g, "pid", h->pid);
	json_gen_kv_int(g, "start_time", (int64_t)h->start_time);
	json_gen_kv_string(g, "boot_id", h->boot_id);
	encode_tap(g, h->tap, h->tap_ifindex);
	json_gen_kv_string_array(g, "loops", &h->loops[0][0], sizeof(h->loops[0]), h->n_loops);
	encode_diskseqs(g, h->loop_diskseq, h->n_loops);
	json_gen_kv_string_array(g, "dm", &h->dm[0][0], sizeof(h->dm[0]), h->n_dm);
	yajl_gen_map_close(g);
	return 0;
}

/* The generator's text as a C string; -EINVAL if yajl did not finish a document. */
static int gen_text(yajl_gen g, char **text, size_t *len)
{
	const unsigned char *buf;
	size_t n;

	if (yajl_gen_get_buf(g, &buf, &n) != yajl_gen_status_ok || n == 0)
		return -EINVAL;
	*text = strndup((const char *)buf, n);
	if (!*text)
		return -ENOMEM;
	*len = n;
	return 0;
}

/* ---- the API ----------------------------------------------------------- */

/*
 * One state file's format: how to write a value, and the strict reader that
 * must accept the result before it may replace the file on disk (yajl
 * reports a refused string only by leaving it out).
 */
struct state_file {
	const char *name;
	int (*encode)(yajl_gen g, const void *value);
	int (*read_back)(const struct decoder *d, const char *text, const char *id);
};

static int encode_record_value(yajl_gen g, const void *value)
{
	return encode_record(g, value);
}

static int read_back_record(const struct decoder *d, const char *text, const char *id)
{
	struct vm_record check;
	return decode_record(d, text, id, &check);
}

static int encode_handles_value(yajl_gen g, const void *value)
{
	return encode_handles(g, value);
}

static int read_back_handles(const struct decoder *d, const char *text, const char *id)
{
	struct vm_handles check;
	(void)id;
	return decode_handles(d, text, &check);
}

static const struct state_file record_file = {RECORD_FILE, encode_record_value, read_back_record};
static const struct state_file handles_file = {HANDLES_FILE, encode_handles_value,
					       read_back_handles};

/* Encode value as f says, and read it back: the text to write, or -EINVAL. */
static int state_file_text(const char *id, const struct state_file *f, const void *value,
			   char **text, size_t *len)
{
	char why[256];
	struct decoder d = {.why = why, .why_size = sizeof(why)};
	_cleanup_(yajl_gen_freep) yajl_gen g = json_gen_new();
	_cleanup_free_ char *out = NULL;

	if (!g)
		return -ENOMEM;
	int ret = f->encode(g, value);
	if (ret == 0)
		ret = gen_text(g, &out, len);
	if (ret < 0)
		return ret;
	snprintf(d.path, sizeof(d.path), "vms/%s/%s", id, f->name);
	if (f->read_back(&d, out, id) < 0)
		return -EINVAL;
	*text = TAKE_PTR(out);
	return 0;
}

struct store_txn *store_txn_new(const char *id)
{
	if (!vm_id_is_valid(id, NULL))
		return NULL;
	struct store_txn *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	field_set(t->id, sizeof(t->id), id);
	t->dir_fd = -1;
	return t;
}

static struct store_step *txn_add(struct store_txn *t, enum store_step_kind kind, const char *name,
				  const char *crash_after)
{
	if (t->n_steps >= STORE_TXN_MAX_STEPS)
		return NULL;
	struct store_step *s = &t->steps[t->n_steps];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->name = name;
	s->crash_after = crash_after;
	s->temp_fd = -1;
	return s;
}

static int txn_write(struct store_txn *t, const struct state_file *f, const void *value,
		     const char *crash_after)
{
	struct store_step *s = txn_add(t, STORE_STEP_WRITE, f->name, crash_after);
	if (!s)
		return -E2BIG;
	int r = state_file_text(t->id, f, value, &s->text, &s->len);
	if (r < 0)
		return r;
	return (int)t->n_steps++;
}

int store_txn_write_record(struct store_txn *t, const struct vm_record *r, const char *crash_after)
{
	if (!terminated(r->id, sizeof(r->id)) || strcmp(r->id, t->id) != 0)
		return -EINVAL;
	return txn_write(t, &record_file, r, crash_after);
}

int store_txn_write_handles(struct store_txn *t, const struct vm_handles *h,
			    const char *crash_after)
{
	return txn_write(t, &handles_file, h, crash_after);
}

int store_txn_remove_handles(struct store_txn *t, const char *crash_after)
{
	if (!txn_add(t, STORE_STEP_UNLINK, HANDLES_FILE, crash_after))
		return -E2BIG;
	return (int)t->n_steps++;
}

int store_txn_remove_vm(struct store_txn *t)
{
	if (t->n_steps != 0)
		return -E2BIG;
	/* The record goes last: while it exists, reconcile can still tear down from it. */
	struct store_step *s =
	    txn_add(t, STORE_STEP_UNLINK, HANDLES_FILE, "unregister-after-handles-before-record");
	s->remove_temps = true;
	t->n_steps++;
	s = txn_add(t, STORE_STEP_UNLINK, RECORD_FILE, "unregister-after-record-before-dir");
	s->needs_previous = true;
	t->n_steps++;
	s = txn_add(t, STORE_STEP_RMDIR, NULL, NULL);
	s->needs_previous = true;
	return (int)t->n_steps++;
}

int store_txn_error(const struct store_txn *t)
{
	for (size_t i = 0; i < t->n_steps; i++)
		if (t->steps[i].err < 0)
			return t->steps[i].err;
	return 0;
}

void store_submit(struct store *s, struct store_txn *t, store_txn_done_fn done, void *userdata)
{
	t->done = done;
	t->userdata = userdata;
	if (s->writer) {
		store_writer_submit(s->writer, t);
		return;
	}
	store_txn_run_now(s->vms_fd, s->sync_mode, t);
	done(t, userdata);
	store_txn_free(t);
}

int store_start_writer(struct store *s, struct event_base *base)
{
	s->writer = store_writer_new(base, s->vms_fd, s->sync_mode);
	return s->writer ? 0 : -ENOMEM;
}

/* One transaction, now, on this thread: its first error or 0. */
static int txn_run(struct store *s, struct store_txn *t, int added)
{
	int r = added < 0 ? added : 0;
	if (r == 0) {
		store_txn_run_now(s->vms_fd, s->sync_mode, t);
		r = store_txn_error(t);
	}
	store_txn_free(t);
	return r;
}

int store_write_record(struct store *s, const struct vm_record *r)
{
	if (!terminated(r->id, sizeof(r->id)))
		return -EINVAL;
	struct store_txn *t = store_txn_new(r->id);
	if (!t)
		return vm_id_is_valid(r->id, NULL) ? -ENOMEM : -EINVAL;
	return txn_run(s, t, store_txn_write_record(t, r, NULL));
}

int store_write_handles(struct store *s, const char *id, const struct vm_handles *h)
{
	struct store_txn *t = store_txn_new(id);
	if (!t)
		return vm_id_is_valid(id, NULL) ? -ENOMEM : -EINVAL;
	return txn_run(s, t, store_txn_write_handles(t, h, NULL));
}

int store_remove_handles(struct store *s, const char *id)
{
	struct store_txn *t = store_txn_new(id);
	if (!t)
		return vm_id_is_valid(id, NULL) ? -ENOMEM : -EINVAL;
	return txn_run(s, t, store_txn_remove_handles(t, NULL));
}

int store_remove_vm(struct store *s, const char *id)
{
	struct store_txn *t = store_txn_new(id);
	if (!t)
		return vm_id_is_valid(id, NULL) ? -ENOMEM : -EINVAL;
	return txn_run(s, t, store_txn_remove_vm(t));
}

int store_remove_temps(struct store *s, const char *id)
{
	_cleanup_close_ int dir_fd = open_vm_dir(s, id);
	return dir_fd < 0 ? dir_fd : store_remove_temps_at(dir_fd);
}

/*
 * Read name from the VM's dir. Anything that cannot be a file we wrote (too
 * big, a symlink, not a regular file) is -EBADMSG; other errors pass through.
 */
static int read_vm_file(struct store *s, const struct decoder *d, const char *id, int *dir_fd,
			const char *name, char **text)
{
	if (!vm_id_is_valid(id, NULL)) {
		snprintf(d->why, d->why_size, "%s: invalid VM id", d->path);
		return -EINVAL;
	}
	*dir_fd = open_vm_dir(s, id);
	if (*dir_fd < 0) {
		snprintf(d->why, d->why_size, "%s: %s", d->path, strerror(-*dir_fd));
		return *dir_fd;
	}
	int r = read_file_at(*dir_fd, name, STORE_MAX_FILE_BYTES, text, NULL);
	switch (r) {
	case 0:
		return 0;
	case -EFBIG:
		return corrupt(d, "larger than %d bytes", STORE_MAX_FILE_BYTES);
	case -ELOOP:
		return corrupt(d, "is a symlink");
	case -EISDIR:
	case -EINVAL:
		return corrupt(d, "is not a regular file");
	default:
		snprintf(d->why, d->why_size, "%s: %s", d->path, strerror(-r));
		return r;
	}
}

int store_read_record(struct store *s, const char *id, struct vm_record *r, char *why,
		      size_t why_size)
{
	struct decoder d = {.why = why, .why_size = why_size};
	_cleanup_close_ int dir_fd = -1;
	_cleanup_free_ char *text = NULL;

	store_path(s, id, RECORD_FILE, d.path, sizeof(d.path));
	int ret = read_vm_file(s, &d, id, &dir_fd, RECORD_FILE, &text);
	if (ret < 0)
		return ret;
	return decode_record(&d, text, id, r);
}

/*
 * Move a corrupt handles.json out of the way under a name that says when,
 * never replacing an earlier copy. The copy is the evidence of what went
 * wrong; the VM's teardown falls back to the record meanwhile.
 */
static int keep_corrupt_handles(struct store *s, const char *id, int dir_fd, char *kept_as,
				size_t kept_size)
{
	char name[NAME_MAX + 1];
	long long now = (long long)time(NULL);

	for (int n = 0; n < CORRUPT_SUFFIXES; n++) {
		if (n == 0)
			snprintf(name, sizeof(name), "%s.corrupt-%lld", HANDLES_FILE, now);
		else
			snprintf(name, sizeof(name), "%s.corrupt-%lld-%d", HANDLES_FILE, now, n);
		if (renameat2(dir_fd, HANDLES_FILE, dir_fd, name, RENAME_NOREPLACE) == 0) {
			store_path(s, id, name, kept_as, kept_size);
			/* Best effort: the copy exists either way, only its name may not last. */
			(void)fsync(dir_fd);
			return 0;
		}
		if (errno != EEXIST)
			return negative_errno();
	}
	return -EEXIST;
}

int store_read_handles(struct store *s, const char *id, struct vm_handles *h, char *why,
		       size_t why_size, char *kept_as, size_t kept_size)
{
	struct decoder d = {.why = why, .why_size = why_size};
	_cleanup_close_ int dir_fd = -1;
	_cleanup_free_ char *text = NULL;

	if (kept_size > 0)
		kept_as[0] = '\0';
	store_path(s, id, HANDLES_FILE, d.path, sizeof(d.path));
	int ret = read_vm_file(s, &d, id, &dir_fd, HANDLES_FILE, &text);
	if (ret == 0)
		ret = decode_handles(&d, text, h);
	if (ret != -EBADMSG && ret != -EPROTONOSUPPORT)
		return ret;

	int kept = keep_corrupt_handles(s, id, dir_fd, kept_as, kept_size);
	if (kept < 0) {
		size_t used = strlen(why);
		if (used < why_size)
			snprintf(why + used, why_size - used, "; could not rename it aside: %s",
				 strerror(-kept));
	}
	return -EBADMSG;
}

static int compare_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_ids(char **ids, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(ids[i]);
	free(ids);
}

int store_list_ids(struct store *s, char ***ids, size_t *count)
{
	char **list = NULL;
	size_t n = 0, cap = 0;

	_cleanup_closedir_ DIR *dir = NULL;
	int r = store_opendir_at(s->vms_fd, &dir);
	if (r < 0)
		return r;
	struct dirent *de;
	while ((errno = 0, de = readdir(dir))) {
		struct stat st;
		if (!vm_id_is_valid(de->d_name, NULL))
			continue;
		/* Only real directories: not a file, not a symlink to a directory. */
		if (fstatat(s->vms_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		if (n == cap) {
			size_t grown = cap ? cap * 2 : 16;
			char **p = realloc(list, grown * sizeof(*list));
			if (!p)
				goto oom;
			list = p;
			cap = grown;
		}
		list[n] = strdup(de->d_name);
		if (!list[n])
			goto oom;
		n++;
	}
	if (errno != 0) {
		r = negative_errno();
		free_ids(list, n);
		return r;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), compare_ids);
	*ids = list;
	*count = n;
	return 0;
oom:
	free_ids(list, n);
	return -ENOMEM;
}
