/* See vm.h. */
#include "vm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "macro.h"

static const char *const state_names[] = {
    [VM_STARTING] = "starting",
    [VM_RUNNING] = "running",
    [VM_STOPPED] = "stopped",
};

static const char *const on_exit_names[] = {
    [VM_ON_EXIT_TEARDOWN] = "teardown",
    [VM_ON_EXIT_KEEP] = "keep",
};

const char *vm_state_name(enum vm_state s)
{
	return (size_t)s < ELEMENTSOF(state_names) ? state_names[s] : "unknown";
}

int vm_state_from_name(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(state_names); i++)
		if (strcmp(state_names[i], name) == 0)
			return (int)i;
	return -EINVAL;
}

const char *vm_on_exit_name(enum vm_on_exit e)
{
	return (size_t)e < ELEMENTSOF(on_exit_names) ? on_exit_names[e] : "unknown";
}

int vm_on_exit_from_name(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(on_exit_names); i++)
		if (strcmp(on_exit_names[i], name) == 0)
			return (int)i;
	return -EINVAL;
}

static bool id_char(char c, bool first)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '_' || c == '.' || c == '-');
}

bool vm_id_is_valid(const char *id, const char **why)
{
	size_t n = strlen(id);
	const char *reason = NULL;
	if (n == 0)
		reason = "empty";
	else if (n > VM_ID_MAX)
		reason = "longer than 64 characters";
	else if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
		reason = "'.' and '..' are not ids";
	else
		for (size_t i = 0; i < n && !reason; i++)
			if (!id_char(id[i], i == 0))
				reason = i == 0
					     ? "must start with a letter or digit"
					     : "only letters, digits, '_', '.' and '-' are allowed";
	if (why)
		*why = reason;
	return reason == NULL;
}

bool vm_loops_have_diskseq(const uint64_t *loop_diskseq, uint32_t n_loops)
{
	for (uint32_t i = 0; i < n_loops && i < VM_MAX_LOOPS; i++)
		if (loop_diskseq[i] != 0)
			return true;
	return false;
}

void vm_record_mirror_handles(struct vm_record *r, const struct vm_handles *h)
{
	memcpy(r->mirror.tap, h->tap, sizeof(r->mirror.tap));
	r->mirror.tap_ifindex = h->tap_ifindex;
	r->mirror.n_loops = h->n_loops;
	memcpy(r->mirror.loops, h->loops, sizeof(r->mirror.loops));
	memcpy(r->mirror.loop_diskseq, h->loop_diskseq, sizeof(r->mirror.loop_diskseq));
	r->mirror.n_dm = h->n_dm;
	memcpy(r->mirror.dm, h->dm, sizeof(r->mirror.dm));
}

/* --- packing ------------------------------------------------------------ */

struct packer {
	uint8_t *buf;
	size_t len, cap;
	bool failed;
};

static void put(struct packer *p, const void *data, size_t n)
{
	if (p->failed)
		return;
	if (grow_array(&p->buf, &p->cap, p->len + n, 1, 256) < 0) {
		p->failed = true;
		return;
	}
	memcpy(p->buf + p->len, data, n);
	p->len += n;
}

static void put_u32(struct packer *p, uint32_t v)
{
	put(p, &v, sizeof(v));
}

/* A fixed-size string field: its length (< 65536: every field is smaller) and bytes. */
static void put_str(struct packer *p, const char *field, size_t size)
{
	uint16_t n = (uint16_t)strnlen(field, size - 1);
	put(p, &n, sizeof(n));
	put(p, field, n);
}

static void put_strs(struct packer *p, const char *fields, size_t size, uint32_t count)
{
	put_u32(p, count);
	for (uint32_t i = 0; i < count; i++)
		put_str(p, fields + (size_t)i * size, size);
}

/* The loops' diskseqs: as many as there are loops, which were packed just before. */
static void put_diskseqs(struct packer *p, const uint64_t *seqs, uint32_t count)
{
	put(p, seqs, (size_t)count * sizeof(*seqs));
}

struct unpacker {
	const uint8_t *buf;
	size_t len, off;
	bool failed;
};

/* Each getter skips what it is not asked to keep (data or field NULL). */
static void get(struct unpacker *u, void *data, size_t n)
{
	if (u->failed || u->off + n > u->len) {
		u->failed = true;
		return;
	}
	if (data)
		memcpy(data, u->buf + u->off, n);
	u->off += n;
}

static uint32_t get_u32(struct unpacker *u)
{
	uint32_t v = 0;
	get(u, &v, sizeof(v));
	return v;
}

static void get_str(struct unpacker *u, char *field, size_t size)
{
	uint16_t n = 0;
	get(u, &n, sizeof(n));
	if (n >= size) {
		u->failed = true;
		return;
	}
	get(u, field, n);
	if (field)
		memset(field + n, 0, size - n);
}

static uint32_t get_strs(struct unpacker *u, char *fields, size_t size, uint32_t max)
{
	uint32_t count = get_u32(u);
	if (count > max) {
		u->failed = true;
		return 0;
	}
	for (uint32_t i = 0; i < count; i++)
		get_str(u, fields ? fields + (size_t)i * size : NULL, size);
	if (fields)
		memset(fields + (size_t)count * size, 0, (size_t)(max - count) * size);
	return count;
}

static void get_diskseqs(struct unpacker *u, uint64_t *seqs, uint32_t count, uint32_t max)
{
	get(u, seqs, (size_t)count * sizeof(*seqs));
	if (seqs)
		memset(seqs + count, 0, (size_t)(max - count) * sizeof(*seqs));
}

int vm_pack(const struct vm_record *r, const struct vm_handles *h, uint8_t **out, size_t *len)
{
	struct packer p = {0};
	put_str(&p, r->id, sizeof(r->id));
	put_u32(&p, (uint32_t)r->state);
	put_u32(&p, (uint32_t)r->on_exit);
	put_str(&p, r->api_sock, sizeof(r->api_sock));
	put_u32(&p, r->has_planned);
	put_str(&p, r->planned.tap, sizeof(r->planned.tap));
	put_strs(&p, r->planned.loop_files[0], PS_PATH_MAX, r->planned.n_loop_files);
	put_strs(&p, r->planned.dm[0], PS_DM_NAME_MAX, r->planned.n_dm);
	put_str(&p, r->mirror.tap, sizeof(r->mirror.tap));
	put_u32(&p, r->mirror.tap_ifindex);
	put_strs(&p, r->mirror.loops[0], PS_PATH_MAX, r->mirror.n_loops);
	put_diskseqs(&p, r->mirror.loop_diskseq, r->mirror.n_loops);
	put_strs(&p, r->mirror.dm[0], PS_DM_NAME_MAX, r->mirror.n_dm);
	put_u32(&p, h != NULL);
	if (h) {
		put(&p, &h->pid, sizeof(h->pid));
		put(&p, &h->start_time, sizeof(h->start_time));
		put_str(&p, h->boot_id, sizeof(h->boot_id));
		put_str(&p, h->tap, sizeof(h->tap));
		put_u32(&p, h->tap_ifindex);
		put_strs(&p, h->loops[0], PS_PATH_MAX, h->n_loops);
		put_diskseqs(&p, h->loop_diskseq, h->n_loops);
		put_strs(&p, h->dm[0], PS_DM_NAME_MAX, h->n_dm);
	}
	if (p.failed) {
		free(p.buf);
		return -ENOMEM;
	}
	/* Give back the growth slack: the point of packing is the memory. */
	uint8_t *tight = realloc(p.buf, p.len);
	*out = tight ? tight : p.buf;
	*len = p.len;
	return 0;
}

/* Unpack the record into r, or skip over it when r is NULL (GetHandles wants only handles). */
static void unpack_record(struct unpacker *u, struct vm_record *r)
{
	struct vm_record skip_scalars;
	struct vm_record *x = r ? r : &skip_scalars;
#define FIELD(f) (r ? r->f : NULL)
	get_str(u, FIELD(id), sizeof(x->id));
	x->state = (enum vm_state)get_u32(u);
	x->on_exit = (enum vm_on_exit)get_u32(u);
	get_str(u, FIELD(api_sock), sizeof(x->api_sock));
	x->has_planned = get_u32(u) != 0;
	get_str(u, FIELD(planned.tap), sizeof(x->planned.tap));
	x->planned.n_loop_files =
	    get_strs(u, r ? r->planned.loop_files[0] : NULL, PS_PATH_MAX, VM_MAX_LOOPS);
	x->planned.n_dm = get_strs(u, r ? r->planned.dm[0] : NULL, PS_DM_NAME_MAX, VM_MAX_DM);
	get_str(u, FIELD(mirror.tap), sizeof(x->mirror.tap));
	x->mirror.tap_ifindex = get_u32(u);
	x->mirror.n_loops = get_strs(u, r ? r->mirror.loops[0] : NULL, PS_PATH_MAX, VM_MAX_LOOPS);
	get_diskseqs(u, r ? r->mirror.loop_diskseq : NULL, x->mirror.n_loops, VM_MAX_LOOPS);
	x->mirror.n_dm = get_strs(u, r ? r->mirror.dm[0] : NULL, PS_DM_NAME_MAX, VM_MAX_DM);
#undef FIELD
}

static void unpack_handles(struct unpacker *u, struct vm_handles *h)
{
	get(u, &h->pid, sizeof(h->pid));
	get(u, &h->start_time, sizeof(h->start_time));
	get_str(u, h->boot_id, sizeof(h->boot_id));
	get_str(u, h->tap, sizeof(h->tap));
	h->tap_ifindex = get_u32(u);
	h->n_loops = get_strs(u, h->loops[0], PS_PATH_MAX, VM_MAX_LOOPS);
	get_diskseqs(u, h->loop_diskseq, h->n_loops, VM_MAX_LOOPS);
	h->n_dm = get_strs(u, h->dm[0], PS_DM_NAME_MAX, VM_MAX_DM);
}

int vm_unpack(const uint8_t *buf, size_t len, struct vm_record *r, struct vm_handles *h,
	      bool *has_handles)
{
	struct unpacker u = {.buf = buf, .len = len};
	unpack_record(&u, r);
	bool with_handles = get_u32(&u) != 0;
	if (h)
		memset(h, 0, sizeof(*h));
	if (with_handles && h)
		unpack_handles(&u, h);
	else if (with_handles)
		u.off = u.len; /* the handles are last: nothing after them to check */
	if (u.failed || u.off != u.len)
		return -EBADMSG;
	if (has_handles)
		*has_handles = with_handles;
	return 0;
}
