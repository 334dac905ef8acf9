/* common/json.c: the pre-scan's depth and NUL guards, strict getters, and the writers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "path.h"
#include "testlib.h"

static int parse(const char *text, yajl_val *out, char *why, size_t why_size)
{
	*out = NULL;
	return json_parse(text, JSON_MAX_DEPTH, out, why, why_size);
}

/* "[[[ ... ]]]" nested depth times, around an optional string in the middle. */
static char *nested(size_t depth, const char *middle)
{
	size_t mid = strlen(middle);
	char *text = malloc(2 * depth + mid + 1);
	CHECK(text, "malloc");
	memset(text, '[', depth);
	memcpy(text + depth, middle, mid);
	memset(text + depth + mid, ']', depth);
	text[2 * depth + mid] = '\0';
	return text;
}

static void test_depth(void)
{
	char why[256];
	yajl_val v;

	char *ok = nested(JSON_MAX_DEPTH, "1");
	CHECK(parse(ok, &v, why, sizeof(why)) == 0, "64 deep is fine: %s", why);
	yajl_tree_free(v);
	free(ok);

	char *deep = nested(JSON_MAX_DEPTH + 1, "");
	CHECK(parse(deep, &v, why, sizeof(why)) == -EINVAL && v == NULL, "65 deep refused");
	CHECK(strcmp(why, "nesting deeper than 64") == 0, "why: %s", why);
	free(deep);

	/* Unbalanced and huge: refused by the scan, so neither yajl nor the free recurse. */
	char *huge = malloc(10001);
	CHECK(huge, "malloc");
	memset(huge, '[', 10000);
	huge[10000] = '\0';
	CHECK(parse(huge, &v, why, sizeof(why)) == -EINVAL, "10,000 deep refused");
	free(huge);

	char *objects = malloc(2 * 65 * 6 + 1), *p = objects;
	CHECK(objects, "malloc");
	for (int i = 0; i < 65; i++)
		p = stpcpy(p, "{\"a\":");
	p = stpcpy(p, "1");
	for (int i = 0; i < 65; i++)
		p = stpcpy(p, "}");
	CHECK(parse(objects, &v, why, sizeof(why)) == -EINVAL, "objects count as depth too");
	free(objects);

	/* Brackets inside strings are text, escaped quotes do not end the string. */
	char *strings = nested(JSON_MAX_DEPTH, "\"[[[{{{ \\\" ]]]{{\"");
	CHECK(parse(strings, &v, why, sizeof(why)) == 0, "brackets in strings ignored: %s", why);
	yajl_tree_free(v);
	free(strings);
	CHECK(parse("[\"\\\\\", \"[[[[\"]", &v, why, sizeof(why)) == 0,
	      "escaped backslash then a real closing quote: %s", why);
	yajl_tree_free(v);
	CHECK(json_parse("[\"[[\"]", 1, &v, why, sizeof(why)) == 0, "max_depth 1, string: %s", why);
	yajl_tree_free(v);
	CHECK(json_parse("[[]]", 1, &v, why, sizeof(why)) == -EINVAL, "max_depth 1, two levels");
}

static void test_nul(void)
{
	char why[256];
	yajl_val v;

	CHECK(parse("{\"a\":\"x\\u0000y\"}", &v, why, sizeof(why)) == -EINVAL &&
		  strcmp(why, "NUL inside a string") == 0,
	      "\\u0000 refused: %s", why);
	CHECK(parse("[\"\\u00000\"]", &v, why, sizeof(why)) == -EINVAL, "\\u0000 then a 0");
	CHECK(parse("{\"a\\u0000\":1}", &v, why, sizeof(why)) == -EINVAL, "NUL in a key");
	CHECK(parse("[\"\\\\u0000\"]", &v, why, sizeof(why)) == 0,
	      "escaped backslash then u0000 text is fine: %s", why);
	CHECK(YAJL_IS_ARRAY(v) && strcmp(v->u.array.values[0]->u.string, "\\u0000") == 0,
	      "value kept literally");
	yajl_tree_free(v);
	CHECK(parse("[\"\\u0001\\u00A0\"]", &v, why, sizeof(why)) == 0, "other escapes: %s", why);
	yajl_tree_free(v);
	CHECK(parse("[\"\\u000", &v, why, sizeof(why)) == -EINVAL, "truncated escape");
}

static void test_yajl_errors(void)
{
	char why[256];
	yajl_val v;

	CHECK(parse("{\"a\":", &v, why, sizeof(why)) == -EINVAL && why[0] && !strchr(why, '\n'),
	      "truncated text, one line: %s", why);
	CHECK(parse("{} {}", &v, why, sizeof(why)) == -EINVAL, "trailing garbage");
	CHECK(parse("", &v, why, sizeof(why)) == -EINVAL, "empty text: %s", why);
	CHECK(parse("[\"\xff\"]", &v, why, sizeof(why)) == -EINVAL, "invalid UTF-8");
	CHECK(parse("]]]", &v, why, sizeof(why)) == -EINVAL, "closing first");
}

static void test_getters(void)
{
	static const char *const known[] = {"s", "i", "d", "b", "o", "a", "n", "big", NULL};
	char why[256];
	_cleanup_(yajl_tree_freep) yajl_val v = NULL;
	const char *s;
	int64_t i;
	bool b;
	yajl_val o;

	CHECK(parse("{\"s\":\"str\",\"i\":-42,\"d\":1.5,\"b\":true,\"o\":{},\"a\":[],\"n\":null,"
		    "\"big\":99999999999999999999}",
		    &v, why, sizeof(why)) == 0,
	      "parse: %s", why);
	CHECK(json_get_string(v, "s", &s) == 0 && strcmp(s, "str") == 0, "string");
	CHECK(json_get_int(v, "i", &i) == 0 && i == -42, "int");
	CHECK(json_get_bool(v, "b", &b) == 0 && b, "bool");
	CHECK(json_get_object(v, "o", &o) == 0 && YAJL_IS_OBJECT(o), "object");
	CHECK(json_get_array(v, "a", &o) == 0 && YAJL_IS_ARRAY(o), "array");

	CHECK(json_get_int(v, "d", &i) == -EINVAL, "1.5 is not an integer");
	CHECK(json_get_int(v, "big", &i) == -EINVAL, "out of range is not an integer");
	CHECK(json_get_int(v, "s", &i) == -EINVAL, "string is not an integer");
	CHECK(json_get_string(v, "i", &s) == -EINVAL, "int is not a string");
	CHECK(json_get_bool(v, "i", &b) == -EINVAL, "int is not a bool");
	CHECK(json_get_object(v, "a", &o) == -EINVAL, "array is not an object");
	CHECK(json_get_array(v, "o", &o) == -EINVAL, "object is not an array");
	CHECK(json_get_string(v, "n", &s) == -ENOENT, "null counts as absent");
	CHECK(json_get_string(v, "missing", &s) == -ENOENT, "absent");
	CHECK(json_get_string(o, "x", &s) == -EINVAL, "lookup in a non-object");

	CHECK(json_unknown_key(v, known) == NULL, "all keys known");
	static const char *const fewer[] = {"s", "i", "d", "b", "o", "a", "n", NULL};
	const char *unknown = json_unknown_key(v, fewer);
	CHECK(unknown && strcmp(unknown, "big") == 0, "unknown key named");
}

static void test_string_array(void)
{
	char why[256];
	char fields[3][8];
	uint32_t count = 99;
	yajl_val v;

	CHECK(parse("[\"a\",\"bcdefgh\"]", &v, why, sizeof(why)) == 0, "parse");
	memset(fields, 'X', sizeof(fields));
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == 0 &&
		  count == 2,
	      "copied");
	CHECK(strcmp(fields[0], "a") == 0 && strcmp(fields[1], "bcdefgh") == 0, "values");
	CHECK(bytes_are_zero(fields[0] + 1, 7) && bytes_are_zero(fields[2], 8), "zero-filled");
	yajl_tree_free(v);

	CHECK(parse("[\"a\",\"b\",\"c\",\"d\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -E2BIG,
	      "over max");
	yajl_tree_free(v);
	CHECK(parse("[\"abcdefgh\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) ==
		  -ENAMETOOLONG,
	      "does not fit");
	yajl_tree_free(v);
	CHECK(parse("[\"a\",1]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "non-string");
	yajl_tree_free(v);
	CHECK(parse("[\"\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "empty string");
	yajl_tree_free(v);
	CHECK(parse("{}", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "not an array");
	yajl_tree_free(v);
}

static void test_generator(void)
{
	char fields[2][8] = {"one", "two"};
	_cleanup_(yajl_gen_freep) yajl_gen g = json_gen_new();
	const unsigned char *buf;
	size_t len;
	char why[256];
	_cleanup_(yajl_tree_freep) yajl_val v = NULL;
	const char *s;
	int64_t i;
	bool b;
	yajl_val arr;

	CHECK(g, "json_gen_new");
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "s", "quote \" backslash \\ newline \n");
	/* Not INT64_MIN: yajl's reader overflows on its magnitude and calls it a double. */
	json_gen_kv_int(g, "i", INT64_MIN + 1);
	json_gen_kv_bool(g, "b", true);
	json_gen_kv_string_array(g, "a", &fields[0][0], sizeof(fields[0]), 2);
	json_gen_kv_string(g, "bad", "\xff");
	yajl_gen_map_close(g);
	CHECK(yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok, "get_buf");
	CHECK(memchr(buf, '\n', len) == NULL, "no beautify: %.*s", (int)len, buf);

	_cleanup_free_ char *text = strndup((const char *)buf, len);
	CHECK(parse(text, &v, why, sizeof(why)) == 0, "output parses: %s (%s)", why, text);
	CHECK(json_get_string(v, "s", &s) == 0 &&
		  strcmp(s, "quote \" backslash \\ newline \n") == 0,
	      "string round trip");
	CHECK(json_get_int(v, "i", &i) == 0 && i == INT64_MIN + 1, "int round trip");
	CHECK(json_get_bool(v, "b", &b) == 0 && b, "bool round trip");
	CHECK(json_get_array(v, "a", &arr) == 0 && arr->u.array.len == 2 &&
		  strcmp(arr->u.array.values[1]->u.string, "two") == 0,
	      "array round trip");
	CHECK(json_get_string(v, "bad", &s) == -ENOENT, "invalid UTF-8 written as null: %s", text);
}

int main(void)
{
	test_depth();
	test_nul();
	test_yajl_errors();
	test_getters();
	test_string_array();
	test_generator();
	return 0;
}
