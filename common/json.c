/*
 * See json.h. The tree is built here from yajl's callbacks, not by
 * yajl_tree_parse: yajl_tree accepts comments, has no depth limit and frees
 * by recursion. Every check runs on what yajl's own lexer has already
 * decided is a token (a container opening, a decoded string), so no second
 * reading of the bytes can disagree with yajl about where a string or a
 * comment ends; that disagreement is what let a 450,000-deep array through
 * the old hand-written pre-scan.
 */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* An open array or object, and what its next member needs. */
struct json_frame {
	yajl_val node;
	size_t capacity; /* slots allocated in node's values (and keys) */
	char *key;	 /* an object's key still waiting for its value */
};

/* What the callbacks share while one text is parsed. */
struct json_builder {
	yajl_val root; /* reaches every node built so far, so a failure frees them all */
	struct json_frame open[JSON_MAX_DEPTH];
	size_t depth;
	size_t max_depth;
	size_t nodes;	  /* values and keys so far */
	size_t max_nodes; /* at most JSON_MAX_NODES */
	int error;
	char why[64];
};

static bool is_container(yajl_val v)
{
	return YAJL_IS_OBJECT(v) || YAJL_IS_ARRAY(v);
}

/*
 * Detach a container's last member, freeing its key: false when none is
 * left. A member may be NULL in a tree built by hand; yajl_tree_free
 * tolerated that, so this does too.
 */
static bool take_last_member(yajl_val c, yajl_val *member)
{
	if (YAJL_IS_OBJECT(c)) {
		if (c->u.object.len == 0)
			return false;
		size_t i = --c->u.object.len;
		free((char *)c->u.object.keys[i]);
		*member = c->u.object.values[i];
		return true;
	}
	if (c->u.array.len == 0)
		return false;
	*member = c->u.array.values[--c->u.array.len];
	return true;
}

/* Free one node whose members, if it had any, are gone already. */
static void free_node(yajl_val v)
{
	if (YAJL_IS_STRING(v)) {
		free(v->u.string);
	} else if (YAJL_IS_NUMBER(v)) {
		free(v->u.number.r);
	} else if (YAJL_IS_OBJECT(v)) {
		free((void *)v->u.object.keys);
		free(v->u.object.values);
	} else if (YAJL_IS_ARRAY(v)) {
		free(v->u.array.values);
	}
	free(v);
}

/*
 * Depth first with an explicit stack, emptying each container from its end:
 * the stack holds the open containers of one path and a leaf below them, so
 * JSON_MAX_DEPTH + 1 entries always suffice for a tree from json_parse. A
 * deeper tree was built by someone else; aborting is the one answer that
 * neither recurses nor leaks.
 */
void json_free(yajl_val v)
{
	yajl_val stack[JSON_MAX_DEPTH + 1];
	size_t n = 0;

	if (v)
		stack[n++] = v;
	while (n > 0) {
		yajl_val top = stack[n - 1], member;
		if (!is_container(top) || !take_last_member(top, &member)) {
			free_node(top);
			n--;
		} else if (member) {
			if (n == ELEMENTSOF(stack))
				abort();
			stack[n++] = member;
		}
	}
}

void yajl_tree_freep(yajl_val *v)
{
	json_free(*v);
}

void yajl_gen_freep(yajl_gen *g)
{
	if (*g)
		yajl_gen_free(*g);
}

static void yajl_handle_freep(yajl_handle *h)
{
	if (*h)
		yajl_free(*h);
}

/* Record why the parse stops; returns 0, which tells yajl to cancel. */
_printf_(3, 4) static int refuse(struct json_builder *b, int error, const char *fmt, ...)
{
	va_list ap;

	b->error = error;
	va_start(ap, fmt);
	vsnprintf(b->why, sizeof(b->why), fmt, ap);
	va_end(ap);
	return 0;
}

/* Count one more value or key against the bound that keeps the tree's size fixed. */
static bool within_node_bound(struct json_builder *b)
{
	if (b->nodes >= b->max_nodes)
		return refuse(b, -EINVAL, "more than %zu values and keys", b->max_nodes);
	b->nodes++;
	return true;
}

static yajl_val node_new(struct json_builder *b, yajl_type type)
{
	if (!within_node_bound(b))
		return NULL;
	yajl_val v = calloc(1, sizeof(*v));
	if (!v) {
		refuse(b, -ENOMEM, "out of memory");
		return NULL;
	}
	v->type = type;
	return v;
}

/*
 * A string or key as a C string. yajl hands over the decoded bytes with
 * their length, so a NUL among them can only have come from "\u0000", and a
 * C reader would see the text end there.
 */
static char *text_copy(struct json_builder *b, const unsigned char *s, size_t len)
{
	if (memchr(s, '\0', len)) {
		refuse(b, -EINVAL, "NUL inside a string");
		return NULL;
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		refuse(b, -ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

/* Room for one more member in the innermost container; doubling keeps appends linear. */
static bool frame_grow(struct json_frame *f)
{
	yajl_val c = f->node;
	size_t len = YAJL_IS_OBJECT(c) ? c->u.object.len : c->u.array.len;
	if (len < f->capacity)
		return true;
	size_t capacity = f->capacity ? 2 * f->capacity : 4;
	if (YAJL_IS_OBJECT(c)) {
		const char **keys = realloc((void *)c->u.object.keys, capacity * sizeof(*keys));
		if (!keys)
			return false;
		c->u.object.keys = keys;
	}
	yajl_val **values = YAJL_IS_OBJECT(c) ? &c->u.object.values : &c->u.array.values;
	yajl_val *grown = realloc(*values, capacity * sizeof(*grown));
	if (!grown)
		return false;
	*values = grown;
	f->capacity = capacity;
	return true;
}

/* Hang a new value under the innermost open container, or make it the root. Frees v on failure. */
static int attach(struct json_builder *b, yajl_val v)
{
	if (b->depth == 0) {
		if (b->root) { /* yajl refuses a second value first; never leak one */
			json_free(v);
			return refuse(b, -EINVAL, "more than one value");
		}
		b->root = v;
		return 1;
	}
	struct json_frame *f = &b->open[b->depth - 1];
	if (!frame_grow(f)) {
		json_free(v);
		return refuse(b, -ENOMEM, "out of memory");
	}
	yajl_val c = f->node;
	if (YAJL_IS_OBJECT(c)) {
		/* yajl's grammar sends a key before every value in an object. */
		c->u.object.keys[c->u.object.len] = TAKE_PTR(f->key);
		c->u.object.values[c->u.object.len++] = v;
	} else {
		c->u.array.values[c->u.array.len++] = v;
	}
	return 1;
}

static int on_null(void *ctx)
{
	struct json_builder *b = ctx;
	yajl_val v = node_new(b, yajl_t_null);
	return v ? attach(b, v) : 0;
}

static int on_boolean(void *ctx, int value)
{
	struct json_builder *b = ctx;
	yajl_val v = node_new(b, value ? yajl_t_true : yajl_t_false);
	return v ? attach(b, v) : 0;
}

/*
 * The readings yajl_tree gives a number, so that YAJL_IS_INTEGER means what
 * it meant: INT_VALID only for an optional minus and digits whose magnitude
 * fits a long long (not 1.5, not 1e3, and, like yajl, not -2^63), with i
 * pinned to LLONG_MAX or LLONG_MIN otherwise; DOUBLE_VALID when strtod
 * reads the whole text without overflow (1e999 is neither).
 */
static void number_read(yajl_val v)
{
	const char *r = v->u.number.r;
	bool negative = r[0] == '-';
	bool valid = r[negative] != '\0';
	long long magnitude = 0;

	for (const char *p = r + negative; *p && valid; p++) {
		int digit = *p - '0';
		valid = digit >= 0 && digit <= 9 && magnitude <= (LLONG_MAX - digit) / 10;
		if (valid)
			magnitude = magnitude * 10 + digit;
	}
	if (valid) {
		v->u.number.i = negative ? -magnitude : magnitude;
		v->u.number.flags |= YAJL_NUMBER_INT_VALID;
	} else {
		v->u.number.i = negative ? LLONG_MIN : LLONG_MAX;
	}

	char *end;
	errno = 0;
	v->u.number.d = strtod(r, &end);
	if (errno == 0 && *end == '\0')
		v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
}

static int on_number(void *ctx, const char *s, size_t len)
{
	struct json_builder *b = ctx;
	yajl_val v = node_new(b, yajl_t_number);
	if (!v)
		return 0;
	v->u.number.r = text_copy(b, (const unsigned char *)s, len);
	if (!v->u.number.r) {
		free(v);
		return 0;
	}
	number_read(v);
	return attach(b, v);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
	struct json_builder *b = ctx;
	yajl_val v = node_new(b, yajl_t_string);
	if (!v)
		return 0;
	v->u.string = text_copy(b, s, len);
	if (!v->u.string) {
		free(v);
		return 0;
	}
	return attach(b, v);
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
	struct json_builder *b = ctx;
	struct json_frame *f = &b->open[b->depth - 1];
	if (!within_node_bound(b))
		return 0;
	free(f->key); /* always NULL: yajl sends a value between two keys */
	f->key = text_copy(b, s, len);
	return f->key != NULL;
}

/*
 * The depth limit lives here, at the moment yajl's own parser opens a
 * container, so it counts exactly the brackets yajl counts.
 */
static int open_container(struct json_builder *b, yajl_type type)
{
	if (b->depth >= b->max_depth)
		return refuse(b, -EINVAL, "nesting deeper than %zu", b->max_depth);
	yajl_val v = node_new(b, type);
	if (!v || !attach(b, v))
		return 0;
	b->open[b->depth++] = (struct json_frame){.node = v};
	return 1;
}

static int on_start_map(void *ctx)
{
	return open_container(ctx, yajl_t_object);
}

static int on_start_array(void *ctx)
{
	return open_container(ctx, yajl_t_array);
}

/* yajl only closes what it opened, so depth is never 0 here. */
static int on_end_container(void *ctx)
{
	struct json_builder *b = ctx;
	b->depth--;
	return 1;
}

static int compare_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * A key obj names twice, or NULL. Small objects, the usual ones, are compared
 * pairwise; a bigger one through a sorted copy of its keys, so that no object
 * costs more than n log n (-ENOMEM in *err when that copy cannot be had).
 */
static const char *duplicate_key(yajl_val obj, int *err)
{
	enum { PAIRWISE_MAX = 16 };
	const char **keys = obj->u.object.keys;
	size_t n = obj->u.object.len;
	if (n <= PAIRWISE_MAX) {
		for (size_t i = 0; i < n; i++)
			for (size_t j = i + 1; j < n; j++)
				if (strcmp(keys[i], keys[j]) == 0)
					return keys[i];
		return NULL;
	}
	_cleanup_free_ const char **sorted = malloc(n * sizeof(*sorted));
	if (!sorted) {
		*err = -ENOMEM;
		return NULL;
	}
	memcpy(sorted, keys, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), compare_keys);
	for (size_t i = 1; i < n; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			return sorted[i]; /* a key of obj's: it outlives the copy */
	return NULL;
}

/*
 * An object that names a key twice is refused: yajl would keep both members,
 * and which one a reader takes would be a guess (RFC 8259 leaves it open,
 * I-JSON forbids it).
 */
static int on_end_map(void *ctx)
{
	struct json_builder *b = ctx;
	int err = 0;
	char shown[24];
	const char *twice = duplicate_key(b->open[b->depth - 1].node, &err);
	if (err < 0)
		return refuse(b, err, "out of memory");
	if (twice)
		return refuse(b, -EINVAL, "key \"%s\" given twice",
			      json_printable(twice, shown, sizeof(shown)));
	return on_end_container(ctx);
}

static const yajl_callbacks builder_callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number, /* takes precedence over yajl_integer and yajl_double */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_container,
};

/* yajl's message is "lexical error: ..." plus a newline; keep the one line. */
static void copy_first_line(char *dst, size_t dst_size, const char *src)
{
	size_t n = strcspn(src, "\n");
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\t' || src[n - 1] == '\r'))
		n--;
	snprintf(dst, dst_size, "%.*s", (int)n, src);
}

/* Why yajl stopped, in one line; its comment error is reworded because JSON has none. */
static int yajl_failure(yajl_handle h, char *why, size_t why_size)
{
	unsigned char *msg = yajl_get_error(h, 0, NULL, 0); /* not verbose: never reads the text */
	if (!msg) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	if (strstr((const char *)msg, "comment"))
		snprintf(why, why_size, "comments are not JSON");
	else
		copy_first_line(why, why_size, (const char *)msg);
	yajl_free_error(h, msg);
	return -EINVAL;
}

/* Free what a refused text built: the tree so far and the keys still waiting for a value. */
static void builder_discard(struct json_builder *b)
{
	for (size_t i = 0; i < b->depth; i++)
		free(b->open[i].key);
	json_free(b->root);
	b->root = NULL;
}

/* After yajl stopped short: free what was built, say why in one line, return -errno. */
static int parse_failure(struct json_builder *b, yajl_handle h, yajl_status status, char *why,
			 size_t why_size)
{
	builder_discard(b);
	if (status == yajl_status_client_canceled) {
		snprintf(why, why_size, "%s", b->why);
		return b->error;
	}
	if (status == yajl_status_ok) { /* not expected: yajl calls an empty text premature EOF */
		snprintf(why, why_size, "no JSON value");
		return -EINVAL;
	}
	return yajl_failure(h, why, why_size);
}

int json_parse(const char *text, size_t max_depth, yajl_val *out, char *why, size_t why_size)
{
	return json_parse_bounded(text, max_depth, JSON_MAX_NODES, out, why, why_size);
}

int json_parse_bounded(const char *text, size_t max_depth, size_t max_nodes, yajl_val *out,
		       char *why, size_t why_size)
{
	struct json_builder b = {
	    .max_depth = max_depth,
	    .max_nodes = max_nodes < JSON_MAX_NODES ? max_nodes : JSON_MAX_NODES,
	};

	*out = NULL;
	if (max_depth > JSON_MAX_DEPTH) {
		snprintf(why, why_size, "max_depth over %d", JSON_MAX_DEPTH);
		return -EINVAL;
	}
	_cleanup_(yajl_handle_freep) yajl_handle h = yajl_alloc(&builder_callbacks, NULL, &b);
	if (!h) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	/* yajl's defaults, spelled out: together they make it accept strict JSON only. */
	yajl_config(h, yajl_allow_comments, 0);
	yajl_config(h, yajl_dont_validate_strings, 0);
	yajl_config(h, yajl_allow_trailing_garbage, 0);
	yajl_config(h, yajl_allow_multiple_values, 0);
	yajl_config(h, yajl_allow_partial_values, 0);

	yajl_status status = yajl_parse(h, (const unsigned char *)text, strlen(text));
	if (status == yajl_status_ok)
		status = yajl_complete_parse(h);
	if (status != yajl_status_ok || !b.root)
		return parse_failure(&b, h, status, why, why_size);
	*out = b.root;
	return 0;
}

const char *json_printable(const char *s, char *buf, size_t size)
{
	size_t i = 0;
	for (; s[i] && i + 1 < size; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static yajl_val object_lookup(yajl_val obj, const char *key)
{
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (strcmp(obj->u.object.keys[i], key) == 0)
			return obj->u.object.values[i];
	return NULL;
}

/* The value under key: 0, -ENOENT when absent or null, -EINVAL when obj is not an object. */
static int object_member(yajl_val obj, const char *key, yajl_val *out)
{
	if (!YAJL_IS_OBJECT(obj))
		return -EINVAL;
	yajl_val v = object_lookup(obj, key);
	if (!v || YAJL_IS_NULL(v))
		return -ENOENT;
	*out = v;
	return 0;
}

int json_get_string(yajl_val obj, const char *key, const char **out)
{
	yajl_val v;
	int r = object_member(obj, key, &v);
	if (r < 0)
		return r;
	if (!YAJL_IS_STRING(v))
		return -EINVAL;
	*out = v->u.string;
	return 0;
}

int json_get_int(yajl_val obj, const char *key, int64_t *out)
{
	yajl_val v;
	int r = object_member(obj, key, &v);
	if (r < 0)
		return r;
	/* yajl marks 1.5, 1e3 and out-of-range integers as not INT_VALID. */
	if (!YAJL_IS_INTEGER(v))
		return -EINVAL;
	*out = v->u.number.i;
	return 0;
}

int json_get_bool(yajl_val obj, const char *key, bool *out)
{
	yajl_val v;
	int r = object_member(obj, key, &v);
	if (r < 0)
		return r;
	if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v))
		return -EINVAL;
	*out = YAJL_IS_TRUE(v);
	return 0;
}

int json_get_object(yajl_val obj, const char *key, yajl_val *out)
{
	yajl_val v;
	int r = object_member(obj, key, &v);
	if (r < 0)
		return r;
	if (!YAJL_IS_OBJECT(v))
		return -EINVAL;
	*out = v;
	return 0;
}

int json_get_array(yajl_val obj, const char *key, yajl_val *out)
{
	yajl_val v;
	int r = object_member(obj, key, &v);
	if (r < 0)
		return r;
	if (!YAJL_IS_ARRAY(v))
		return -EINVAL;
	*out = v;
	return 0;
}

const char *json_unknown_key(yajl_val obj, const char *const *allowed)
{
	if (!YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t i = 0; i < obj->u.object.len; i++) {
		const char *key = obj->u.object.keys[i];
		bool known = false;
		for (size_t k = 0; allowed[k] && !known; k++)
			known = strcmp(allowed[k], key) == 0;
		if (!known)
			return key;
	}
	return NULL;
}

int json_copy_string_array(yajl_val arr, char *fields, size_t field_size, size_t max,
			   uint32_t *count)
{
	if (!YAJL_IS_ARRAY(arr))
		return -EINVAL;
	size_t n = arr->u.array.len;
	if (n > max)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		yajl_val v = arr->u.array.values[i];
		if (!YAJL_IS_STRING(v) || v->u.string[0] == '\0')
			return -EINVAL;
		if (strlen(v->u.string) >= field_size)
			return -ENAMETOOLONG;
	}
	/* Checked first, copied second: a refused array leaves fields as they were. */
	memset(fields, 0, max * field_size);
	for (size_t i = 0; i < n; i++)
		strcpy(fields + i * field_size, arr->u.array.values[i]->u.string);
	*count = (uint32_t)n;
	return 0;
}

int json_copy_uint_array(yajl_val arr, uint64_t *out, size_t max, uint32_t *count)
{
	if (!YAJL_IS_ARRAY(arr))
		return -EINVAL;
	size_t n = arr->u.array.len;
	if (n > max)
		return -E2BIG;
	for (size_t i = 0; i < n; i++)
		if (!YAJL_IS_INTEGER(arr->u.array.values[i]) ||
		    arr->u.array.values[i]->u.number.i < 0)
			return -EINVAL;
	memset(out, 0, max * sizeof(*out));
	for (size_t i = 0; i < n; i++)
		out[i] = (uint64_t)arr->u.array.values[i]->u.number.i;
	*count = (uint32_t)n;
	return 0;
}

yajl_gen json_gen_new(void)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	if (!g)
		return NULL;
	yajl_gen_config(g, yajl_gen_beautify, 0);
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	return g;
}

/*
 * yajl refuses a string that is not UTF-8 without writing anything or
 * moving its state, so the next value would land where this one belonged
 * and the text would mean something else. Writing null in its place keeps
 * the structure, and a strict reader refuses the null.
 */
void json_gen_string(yajl_gen g, const char *s)
{
	if (yajl_gen_string(g, (const unsigned char *)s, strlen(s)) == yajl_gen_invalid_string)
		yajl_gen_null(g);
}

/* Keys are constants in our code: plain ASCII, never refused. */
static void gen_key(yajl_gen g, const char *key)
{
	yajl_gen_string(g, (const unsigned char *)key, strlen(key));
}

void json_gen_kv_string(yajl_gen g, const char *key, const char *value)
{
	gen_key(g, key);
	json_gen_string(g, value);
}

void json_gen_kv_int(yajl_gen g, const char *key, int64_t v)
{
	gen_key(g, key);
	yajl_gen_integer(g, (long long)v);
}

void json_gen_kv_bool(yajl_gen g, const char *key, bool v)
{
	gen_key(g, key);
	yajl_gen_bool(g, v);
}

void json_gen_kv_string_array(yajl_gen g, const char *key, const char *fields, size_t field_size,
			      uint32_t count)
{
	gen_key(g, key);
	yajl_gen_array_open(g);
	for (uint32_t i = 0; i < count; i++) {
		const char *field = fields + (size_t)i * field_size;
		/* A field is not trusted to be terminated: never read past it. */
		size_t len = strnlen(field, field_size);
		if (yajl_gen_string(g, (const unsigned char *)field, len) ==
		    yajl_gen_invalid_string)
			yajl_gen_null(g);
	}
	yajl_gen_array_close(g);
}

void json_gen_kv_uint_array(yajl_gen g, const char *key, const uint64_t *values, uint32_t count)
{
	gen_key(g, key);
	yajl_gen_array_open(g);
	for (uint32_t i = 0; i < count; i++)
		yajl_gen_integer(g, (long long)values[i]);
	yajl_gen_array_close(g);
}

void json_gen_value(yajl_gen g, yajl_val v)
{
	if (!v || YAJL_IS_NULL(v)) {
		yajl_gen_null(g);
	} else if (YAJL_IS_STRING(v)) {
		json_gen_string(g, v->u.string);
	} else if (YAJL_IS_NUMBER(v)) {
		/* The number as the server wrote it: no precision lost either way. */
		yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
	} else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)) {
		yajl_gen_bool(g, YAJL_IS_TRUE(v));
	} else if (YAJL_IS_OBJECT(v)) {
		yajl_gen_map_open(g);
		for (size_t i = 0; i < v->u.object.len; i++) {
			json_gen_string(g, v->u.object.keys[i]);
			json_gen_value(g, v->u.object.values[i]);
		}
		yajl_gen_map_close(g);
	} else if (YAJL_IS_ARRAY(v)) {
		yajl_gen_array_open(g);
		for (size_t i = 0; i < v->u.array.len; i++)
			json_gen_value(g, v->u.array.values[i]);
		yajl_gen_array_close(g);
	}
}
