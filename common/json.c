/*
 * See json.h. The pre-scan is the one piece of JSON lexing done by hand: it
 * only tracks "inside a string or not" and bracket depth, because that has
 * to happen before yajl builds a tree (yajl_tree_free recurses once per
 * level) and yajl offers no depth limit of its own. Everything else is
 * yajl's.
 */
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void yajl_tree_freep(yajl_val *v)
{
	if (*v)
		yajl_tree_free(*v);
}

void yajl_gen_freep(yajl_gen *g)
{
	if (*g)
		yajl_gen_free(*g);
}

/* After a backslash-u inside a string: true when the four hex digits spell U+0000. */
static bool escape_is_nul(const char *hex)
{
	for (int i = 0; i < 4; i++)
		if (hex[i] != '0')
			return false;
	return true;
}

/*
 * Walk the raw text once. Malformed input (an unterminated string, a stray
 * closing bracket) is left for yajl to report; this pass only refuses what
 * yajl would accept and we must not.
 */
static int prescan(const char *text, size_t max_depth, char *why, size_t why_size)
{
	size_t depth = 0;
	bool in_string = false;

	for (const char *p = text; *p; p++) {
		if (in_string) {
			if (*p == '"') {
				in_string = false;
			} else if (*p == '\\') {
				if (p[1] == '\0')
					break;
				if (p[1] == 'u' && strnlen(p + 2, 4) == 4 && escape_is_nul(p + 2)) {
					snprintf(why, why_size, "NUL inside a string");
					return -EINVAL;
				}
				p++; /* the escaped character cannot end the string */
			}
			continue;
		}
		switch (*p) {
		case '"':
			in_string = true;
			break;
		case '[':
		case '{':
			if (++depth > max_depth) {
				snprintf(why, why_size, "nesting deeper than %zu", max_depth);
				return -EINVAL;
			}
			break;
		case ']':
		case '}':
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return 0;
}

/* yajl's verbose message quotes the text over several lines; keep the first. */
static void copy_first_line(char *dst, size_t dst_size, const char *src)
{
	size_t n = strcspn(src, "\n");
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\t' || src[n - 1] == '\r'))
		n--;
	snprintf(dst, dst_size, "%.*s", (int)n, src);
}

int json_parse(const char *text, size_t max_depth, yajl_val *out, char *why, size_t why_size)
{
	char yajl_why[1024] = "";

	int r = prescan(text, max_depth, why, why_size);
	if (r < 0)
		return r;
	yajl_val tree = yajl_tree_parse(text, yajl_why, sizeof(yajl_why));
	if (!tree) {
		copy_first_line(why, why_size, yajl_why[0] ? yajl_why : "no JSON value");
		return -EINVAL;
	}
	*out = tree;
	return 0;
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
