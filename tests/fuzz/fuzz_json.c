/*
 * libFuzzer target for json_parse() and json_free(), which every byte of
 * JSON from a client, a server or the disk goes through. A memory error or
 * a leak is caught by the sanitizers; the checks here turn a broken promise
 * into a crash:
 *  - a refused text leaves *out NULL and says why in one line;
 *  - an accepted tree is no deeper than JSON_MAX_DEPTH, has no NULL member
 *    or key, and reads its numbers as yajl_tree does;
 *  - an accepted text is also accepted by yajl_tree_parse (comments on, so
 *    a superset), with an equal tree that names no key twice in one object;
 *    where yajl_tree accepts and we do not, the reason is one of the
 *    refusals json.h lists (for "given twice", yajl_tree's tree must indeed
 *    hold such a key);
 *  - a tree written back with json_gen_value parses to an equal tree.
 * yajl_tree_parse is here only as the reference the parser must agree with;
 * it recurses when freeing, so it only sees short or already-bounded input.
 * libFuzzer provides main().
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "fuzz_invariant.h"
#include "macro.h"

/* yajl_tree_free recurses once per level: keep the reference away from long texts. */
#define REFERENCE_MAX_BYTES 16384

static void yajl_tree_reference_freep(yajl_val *v)
{
	if (*v)
		yajl_tree_free(*v);
}

/* An optional minus and digits: the only texts yajl_tree marks INT_VALID. */
static bool is_plain_integer(const char *r)
{
	r += r[0] == '-';
	if (!*r)
		return false;
	for (; *r; r++)
		if (*r < '0' || *r > '9')
			return false;
	return true;
}

static void check_number(yajl_val v)
{
	INVARIANT(v->u.number.r && v->u.number.r[0]);
	if (YAJL_IS_INTEGER(v)) {
		INVARIANT(is_plain_integer(v->u.number.r));
		char expected[32];
		snprintf(expected, sizeof(expected), "%lld", v->u.number.i);
		/* "-0" and "0" read the same; otherwise the digits are the value. */
		INVARIANT(strcmp(expected, v->u.number.r) == 0 ||
			  (v->u.number.i == 0 && strcmp(v->u.number.r, "-0") == 0));
	}
}

/* Recursion is safe here: the tree was accepted, so it is at most JSON_MAX_DEPTH deep. */
static void check_tree(yajl_val v, size_t depth, size_t *nodes)
{
	INVARIANT(v != NULL);
	++*nodes;
	if (YAJL_IS_NUMBER(v)) {
		check_number(v);
	} else if (YAJL_IS_STRING(v)) {
		INVARIANT(v->u.string != NULL);
	} else if (YAJL_IS_OBJECT(v)) {
		INVARIANT(depth < JSON_MAX_DEPTH);
		for (size_t i = 0; i < v->u.object.len; i++) {
			INVARIANT(v->u.object.keys[i] != NULL);
			++*nodes;
			check_tree(v->u.object.values[i], depth + 1, nodes);
		}
	} else if (YAJL_IS_ARRAY(v)) {
		INVARIANT(depth < JSON_MAX_DEPTH);
		for (size_t i = 0; i < v->u.array.len; i++)
			check_tree(v->u.array.values[i], depth + 1, nodes);
	} else {
		INVARIANT(YAJL_IS_NULL(v) || YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v));
	}
}

static bool numbers_equal(yajl_val a, yajl_val b)
{
	return strcmp(a->u.number.r, b->u.number.r) == 0 &&
	       a->u.number.flags == b->u.number.flags && a->u.number.i == b->u.number.i &&
	       memcmp(&a->u.number.d, &b->u.number.d, sizeof(a->u.number.d)) == 0;
}

static bool trees_equal(yajl_val a, yajl_val b)
{
	if (a->type != b->type)
		return false;
	if (YAJL_IS_STRING(a))
		return strcmp(a->u.string, b->u.string) == 0;
	if (YAJL_IS_NUMBER(a))
		return numbers_equal(a, b);
	if (YAJL_IS_OBJECT(a)) {
		if (a->u.object.len != b->u.object.len)
			return false;
		for (size_t i = 0; i < a->u.object.len; i++)
			if (strcmp(a->u.object.keys[i], b->u.object.keys[i]) != 0 ||
			    !trees_equal(a->u.object.values[i], b->u.object.values[i]))
				return false;
		return true;
	}
	if (YAJL_IS_ARRAY(a)) {
		if (a->u.array.len != b->u.array.len)
			return false;
		for (size_t i = 0; i < a->u.array.len; i++)
			if (!trees_equal(a->u.array.values[i], b->u.array.values[i]))
				return false;
		return true;
	}
	return true;
}

/* Does an object of the tree name a key twice? Pairwise: a slow, obvious second opinion. */
static bool has_duplicate_key(yajl_val v)
{
	if (YAJL_IS_OBJECT(v)) {
		for (size_t i = 0; i < v->u.object.len; i++)
			for (size_t j = i + 1; j < v->u.object.len; j++)
				if (strcmp(v->u.object.keys[i], v->u.object.keys[j]) == 0)
					return true;
		for (size_t i = 0; i < v->u.object.len; i++)
			if (has_duplicate_key(v->u.object.values[i]))
				return true;
	}
	for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++)
		if (has_duplicate_key(v->u.array.values[i]))
			return true;
	return false;
}

/* The refusals json.h documents for a text yajl itself would take (ref), comments and all. */
static bool is_documented_refusal(const char *why, yajl_val ref)
{
	size_t n = strlen(why);
	if (n > 12 && strcmp(why + n - 12, " given twice") == 0)
		return has_duplicate_key(ref);
	return strncmp(why, "nesting deeper than ", 20) == 0 ||
	       strcmp(why, "NUL inside a string") == 0 ||
	       strcmp(why, "comments are not JSON") == 0 ||
	       /* a comment after the value: yajl stops at its first byte */
	       strstr(why, "trailing garbage") != NULL || strstr(why, "values and keys") != NULL;
}

static void check_against_reference(const char *text, size_t len, int r, yajl_val v,
				    const char *why)
{
	if (r == 0 || len <= REFERENCE_MAX_BYTES) {
		_cleanup_(yajl_tree_reference_freep) yajl_val ref = yajl_tree_parse(text, NULL, 0);
		if (r == 0)
			INVARIANT(ref != NULL && trees_equal(v, ref) && !has_duplicate_key(ref));
		else if (ref)
			INVARIANT(is_documented_refusal(why, ref));
	}
}

static void check_round_trip(yajl_val v)
{
	_cleanup_(yajl_gen_freep) yajl_gen g = json_gen_new();
	const unsigned char *buf;
	size_t len;
	char why[256];

	INVARIANT(g != NULL);
	json_gen_value(g, v);
	INVARIANT(yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok);
	_cleanup_free_ char *written = strndup((const char *)buf, len);
	INVARIANT(written != NULL && strlen(written) == len);
	_cleanup_(yajl_tree_freep) yajl_val again = NULL;
	INVARIANT(json_parse(written, JSON_MAX_DEPTH, &again, why, sizeof(why)) == 0);
	INVARIANT(trees_equal(v, again));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* json_parse reads up to the first NUL, as it does on a Varlink message. */
	_cleanup_free_ char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	char why[256] = "";
	yajl_val v = (yajl_val)text; /* anything but NULL: a refusal must clear it */
	int r = json_parse(text, JSON_MAX_DEPTH, &v, why, sizeof(why));
	INVARIANT(r == 0 || r == -EINVAL || r == -ENOMEM);
	if (r < 0) {
		INVARIANT(v == NULL);
		INVARIANT(why[0] != '\0' && strchr(why, '\n') == NULL);
	} else {
		size_t nodes = 0;
		check_tree(v, 0, &nodes);
		INVARIANT(nodes <= JSON_MAX_NODES);
		check_round_trip(v);
	}
	check_against_reference(text, strlen(text), r, v, why);
	json_free(v);
	return 0;
}
