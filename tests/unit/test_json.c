/*
 * common/json.c: the parser's guards (depth, NUL, comments, node bound) on
 * texts built to slip past a scan of the bytes, numbers read as yajl_tree
 * read them, the iterative free, strict getters, and the writers.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
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
	json_free(v);
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
	json_free(v);
	free(strings);
	CHECK(parse("[\"\\\\\", \"[[[[\"]", &v, why, sizeof(why)) == 0,
	      "escaped backslash then a real closing quote: %s", why);
	json_free(v);
	CHECK(json_parse("[\"[[\"]", 1, &v, why, sizeof(why)) == 0, "max_depth 1, string: %s", why);
	json_free(v);
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
	json_free(v);
	CHECK(parse("[\"\\u0001\\u00A0\"]", &v, why, sizeof(why)) == 0, "other escapes: %s", why);
	json_free(v);
	CHECK(parse("[\"\\u000", &v, why, sizeof(why)) == -EINVAL, "truncated escape");
}

/* An object of n keys "k0".."k<n-1>", then the key extra if it is not NULL. */
static char *object_of(size_t n, const char *extra)
{
	char *text = malloc(n * 16 + 64), *p = text;
	*p++ = '{';
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s\"k%zu\":%zu", i ? "," : "", i, i);
	if (extra)
		p += sprintf(p, ",\"%s\":0", extra);
	strcpy(p, "}");
	return text;
}

/*
 * A key named twice in one object is refused, at any depth, in small objects
 * (compared pairwise) and big ones (through a sorted copy); the same key in
 * two objects, or as a string value, is not a duplicate.
 */
static void test_duplicate_keys(void)
{
	char why[256];
	yajl_val v;

	CHECK(parse("{\"id\":\"a\",\"id\":\"b\"}", &v, why, sizeof(why)) == -EINVAL &&
		  strcmp(why, "key \"id\" given twice") == 0,
	      "two ids: %s", why);
	CHECK(v == NULL, "nothing handed out");
	CHECK(parse("[1,{\"a\":{\"x\":1,\"y\":2,\"x\":3}}]", &v, why, sizeof(why)) == -EINVAL &&
		  strcmp(why, "key \"x\" given twice") == 0,
	      "nested: %s", why);
	CHECK(parse("{\"a\":{\"a\":1},\"b\":{\"a\":\"a\"},\"c\":[{\"a\":1},{\"a\":2}]}", &v, why,
		    sizeof(why)) == 0,
	      "one key per object: %s", why);
	json_free(v);
	/* Non-ASCII and control bytes are shown as '?', and the name is cut. */
	CHECK(parse("{\"\u00e9\\n\":1,\"\u00e9\\n\":2}", &v, why, sizeof(why)) == -EINVAL &&
		  strcmp(why, "key \"???\" given twice") == 0,
	      "shown printable: %s", why);

	for (size_t n = 15; n <= 40000; n = n < 20 ? n + 1 : n * 10) {
		char *unique = object_of(n, NULL), *twice = object_of(n, "k7");
		CHECK(parse(unique, &v, why, sizeof(why)) == 0 && v->u.object.len == n,
		      "%zu distinct keys: %s", n, why);
		json_free(v);
		CHECK(parse(twice, &v, why, sizeof(why)) == -EINVAL &&
			  strcmp(why, "key \"k7\" given twice") == 0,
		      "%zu keys and k7 again: %s", n, why);
		free(unique);
		free(twice);
	}
}

/* "[[[…]]]" depth times, written into text (which has room), returning the end. */
static char *put_nested(char *p, size_t depth)
{
	memset(p, '[', depth);
	memset(p + depth, ']', depth);
	return p + 2 * depth;
}

/*
 * The message of issue 10: a quote inside a comment flipped the old pre-scan
 * into "inside a string", so 450,000 brackets went uncounted and the tree
 * yajl built killed bangerd in yajl_tree_free. open and close wrap the
 * brackets: comments that each hold one quote.
 */
static void check_comment_desync(const char *open, const char *close, const char *what)
{
	const size_t depth = 450000;
	char why[256];
	yajl_val v = NULL;
	char *text = malloc(2 * depth + 64);
	CHECK(text, "malloc");

	char *p = stpcpy(text, "{\"x\": ");
	p = stpcpy(p, open);
	p = put_nested(p, depth);
	p = stpcpy(p, close);
	strcpy(p, "}");
	CHECK(strlen(text) > 900000, "%s: the message is ~900 KB", what);
	CHECK(parse(text, &v, why, sizeof(why)) == -EINVAL && v == NULL, "%s refused", what);
	CHECK(strcmp(why, "comments are not JSON") == 0, "%s: why: %s", what, why);
	free(text);
}

static void test_comments(void)
{
	char why[256];
	yajl_val v = NULL;

	check_comment_desync("/*\"*/ ", " /*\"*/", "block comments around the brackets");
	check_comment_desync("//\"\n", "\n//\"\n", "line comments around the brackets");

	/* The same desync once hid a NUL: the escape sat where the scan saw no string. */
	CHECK(parse("[/*\"*/ \"\\u0000\" /*\"*/]", &v, why, sizeof(why)) == -EINVAL && v == NULL,
	      "\\u0000 behind a comment refused");
	CHECK(parse("[//\"\n\"\\u0000\"]", &v, why, sizeof(why)) == -EINVAL,
	      "\\u0000 behind a line comment refused");

	static const char *const plain[] = {
	    "/* leading */ {}",	    "{/**/}",
	    "[1, /* between */ 2]", "{\"a\" /* before colon */ : 1}",
	    "[1 // end of line\n]",
	};
	for (size_t i = 0; i < ELEMENTSOF(plain); i++) {
		CHECK(parse(plain[i], &v, why, sizeof(why)) == -EINVAL && v == NULL,
		      "comment refused: %s", plain[i]);
		CHECK(strcmp(why, "comments are not JSON") == 0, "why for %s: %s", plain[i], why);
	}
	/* After the value yajl stops at the first byte that is not a space, comment or not. */
	static const char *const trailing[] = {"{} /* trailing */", "{}// trailing", "0//"};
	for (size_t i = 0; i < ELEMENTSOF(trailing); i++) {
		CHECK(parse(trailing[i], &v, why, sizeof(why)) == -EINVAL && v == NULL,
		      "trailing comment refused: %s", trailing[i]);
		CHECK(strstr(why, "trailing garbage") != NULL, "why for %s: %s", trailing[i], why);
	}
	/* Inside a string the same characters are only text. */
	CHECK(parse("[\"/* not a comment */ // nor this\"]", &v, why, sizeof(why)) == 0,
	      "comment-like text in a string: %s", why);
	json_free(v);
}

/* A mixed nesting: levels alternate between arrays and objects with key "k". */
static char *nested_mixed(size_t depth, bool object_first)
{
	char *text = malloc(6 * depth + 2), *p = text;
	CHECK(text, "malloc");
	for (size_t i = 0; i < depth; i++)
		p = stpcpy(p, (i % 2 == 0) == object_first ? "{\"k\":" : "[");
	p = stpcpy(p, "0");
	for (size_t i = depth; i-- > 0;)
		p = stpcpy(p, (i % 2 == 0) == object_first ? "}" : "]");
	return text;
}

/* Only "{"k":…}" levels, holding 0. */
static char *nested_objects(size_t depth)
{
	char *text = malloc(6 * depth + 2), *p = text;
	CHECK(text, "malloc");
	for (size_t i = 0; i < depth; i++)
		p = stpcpy(p, "{\"k\":");
	p = stpcpy(p, "0");
	for (size_t i = 0; i < depth; i++)
		p = stpcpy(p, "}");
	return text;
}

static void check_depth_edge(char *at_limit, char *over_limit, const char *what)
{
	char why[256];
	yajl_val v = NULL;

	CHECK(parse(at_limit, &v, why, sizeof(why)) == 0, "%s: 64 deep is fine: %s", what, why);
	json_free(v);
	CHECK(parse(over_limit, &v, why, sizeof(why)) == -EINVAL && v == NULL, "%s: 65 refused",
	      what);
	CHECK(strcmp(why, "nesting deeper than 64") == 0, "%s: why: %s", what, why);
	free(at_limit);
	free(over_limit);
}

static void test_depth_edges(void)
{
	char why[256];
	yajl_val v = NULL;

	check_depth_edge(nested(JSON_MAX_DEPTH, ""), nested(JSON_MAX_DEPTH + 1, ""), "arrays");
	check_depth_edge(nested_objects(JSON_MAX_DEPTH), nested_objects(JSON_MAX_DEPTH + 1),
			 "objects");
	check_depth_edge(nested_mixed(JSON_MAX_DEPTH, true), nested_mixed(JSON_MAX_DEPTH + 1, true),
			 "mixed, object first");
	check_depth_edge(nested_mixed(JSON_MAX_DEPTH, false),
			 nested_mixed(JSON_MAX_DEPTH + 1, false), "mixed, array first");

	/* Refused at the 65th opening even with nothing after it, and deep in a wide tree. */
	char *wide = malloc(4 * JSON_MAX_DEPTH + 64), *p = wide;
	CHECK(wide, "malloc");
	p = stpcpy(p, "[1,");
	p = put_nested(p, JSON_MAX_DEPTH - 1);
	p = stpcpy(p, ",");
	p = put_nested(p, JSON_MAX_DEPTH);
	strcpy(p, "]");
	CHECK(parse(wide, &v, why, sizeof(why)) == -EINVAL && v == NULL &&
		  strcmp(why, "nesting deeper than 64") == 0,
	      "second branch too deep: %s", why);
	free(wide);

	CHECK(json_parse("[]", JSON_MAX_DEPTH + 1, &v, why, sizeof(why)) == -EINVAL && v == NULL,
	      "max_depth above the free's stack refused");
	CHECK(json_parse("1", 0, &v, why, sizeof(why)) == 0 && YAJL_IS_INTEGER(v),
	      "max_depth 0 still takes a scalar: %s", why);
	json_free(v);
	CHECK(json_parse("[]", 0, &v, why, sizeof(why)) == -EINVAL, "max_depth 0, one level");
}

static void test_nul_in_keys(void)
{
	char why[256];
	yajl_val v = NULL;

	CHECK(parse("{\"a\\u0000b\":1}", &v, why, sizeof(why)) == -EINVAL && v == NULL &&
		  strcmp(why, "NUL inside a string") == 0,
	      "NUL in a key: %s", why);
	CHECK(parse("{\"ok\":{\"\\u0000\":[1,2,3]}}", &v, why, sizeof(why)) == -EINVAL && v == NULL,
	      "NUL as a whole nested key");
	/* A key that is refused after others were kept: nothing leaks (ASan run). */
	CHECK(parse("{\"a\":1,\"b\":[\"x\"],\"c\\u0000\":2}", &v, why, sizeof(why)) == -EINVAL,
	      "NUL in a later key");
	/* Refused while a key waits for its value: the pending key is freed too. */
	CHECK(parse("{\"a\":{\"b\":\"\\u0000\"}}", &v, why, sizeof(why)) == -EINVAL,
	      "NUL in a value under a key");
	CHECK(parse("{\"a\":[1,{\"b\":", &v, why, sizeof(why)) == -EINVAL, "truncated under keys");
}

/* A text of count small values, "[0,1,…]", with count values of up to 3 digits. */
static char *array_of_ints(size_t count)
{
	char *text = malloc(4 * count + 3), *p = text;
	CHECK(text, "malloc");
	*p++ = '[';
	for (size_t i = 0; i < count; i++)
		p += sprintf(p, i ? ",%zu" : "%zu", i % 1000);
	strcpy(p, "]");
	return text;
}

static void test_size(void)
{
	char why[256];
	yajl_val v = NULL;

	char *ints = array_of_ints(100000);
	CHECK(parse(ints, &v, why, sizeof(why)) == 0, "100,000 small ints: %s", why);
	CHECK(YAJL_IS_ARRAY(v) && v->u.array.len == 100000 &&
		  YAJL_GET_INTEGER(v->u.array.values[99999]) == 999,
	      "all kept");
	json_free(v);
	free(ints);

	/* 1 MiB of objects, strings and numbers: as dense as an honest message gets. */
	const size_t mib = 1024 * 1024;
	char *text = malloc(mib + 64), *p = text;
	CHECK(text, "malloc");
	p = stpcpy(p, "[");
	size_t n = 0;
	for (; (size_t)(p - text) < mib - 64; n++)
		p += sprintf(p, "%s{\"k\":\"v\",\"n\":%zu,\"a\":[true,null]}", n ? "," : "", n);
	strcpy(p, "]");
	CHECK(parse(text, &v, why, sizeof(why)) == 0, "1 MiB of small values: %s", why);
	CHECK(v->u.array.len == n, "every object kept");
	json_free(v);
	free(text);

	/* Just past the node bound: refused, and what was built is freed. */
	char *zeros = malloc(2 * JSON_MAX_NODES + 2);
	CHECK(zeros, "malloc");
	zeros[0] = '[';
	for (size_t i = 0; i < JSON_MAX_NODES; i++)
		memcpy(zeros + 1 + 2 * i, "0,", 2);
	strcpy(zeros + 2 * JSON_MAX_NODES, "]"); /* overwrites the last comma */
	CHECK(parse(zeros, &v, why, sizeof(why)) == -EINVAL && v == NULL, "node bound");
	CHECK(strstr(why, "values and keys") != NULL, "why: %s", why);
	zeros[2 * JSON_MAX_NODES - 2] = ']'; /* one fewer zero: the array and its values fit */
	zeros[2 * JSON_MAX_NODES - 1] = '\0';
	CHECK(parse(zeros, &v, why, sizeof(why)) == 0, "exactly at the bound: %s", why);
	json_free(v);
	free(zeros);
}

static void test_strictness(void)
{
	char why[256];
	yajl_val v = NULL;

	/*
	 * Invalid UTF-8 as yajl's lexer sees it: a byte that cannot start or
	 * continue a sequence. It checks the shape of a sequence, not its value,
	 * so an overlong "\xc0\xaf" or an encoded surrogate passes (a byte-level
	 * reader of our strings never decodes them).
	 */
	static const char *const refused[] = {
	    /* more than one value, or something after it */
	    "{}{}",
	    "[] []",
	    "1 2",
	    "{} x",
	    "{},",
	    /* partial values */
	    "[1",
	    "{\"a\"",
	    "\"open",
	    "tru",
	    "nul",
	    "   ",
	    /* what lenient parsers take */
	    "[1,]",
	    "{\"a\":1,}",
	    "'a'",
	    "{a:1}",
	    "[01]",
	    "[.5]",
	    "[+1]",
	    "[NaN]",
	    "[Infinity]",
	    "[\"\t\"]",
	    "[\"\\x\"]",
	    /* invalid UTF-8 */
	    "[\"\xf8\x88\x80\x80\x80\"]",
	    "[\"\x80\"]",
	    "[\"\xc3\"]",
	    "[\"\xe2\x82\"]",
	    "{\"\xff\":1}",
	    /* a key named twice */
	    "{\"a\":{},\"a\":[]}",
	};
	for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
		CHECK(parse(refused[i], &v, why, sizeof(why)) == -EINVAL && v == NULL,
		      "refused: %s", refused[i]);
		CHECK(why[0] && !strchr(why, '\n'), "one-line why for %s: %s", refused[i], why);
	}
	static const char *const accepted[] = {
	    " {} ", "\n[]\n", "0", "\"s\"", "null", "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
	};
	for (size_t i = 0; i < ELEMENTSOF(accepted); i++) {
		CHECK(parse(accepted[i], &v, why, sizeof(why)) == 0, "accepted: %s: %s",
		      accepted[i], why);
		json_free(v);
	}
	/* The text ends at its NUL: what a buffer holds after it is never read. */
	static const char after_nul[] = "{}\0garbage";
	CHECK(parse(after_nul, &v, why, sizeof(why)) == 0, "stops at the NUL: %s", why);
	json_free(v);
	CHECK(json_parse("{", JSON_MAX_DEPTH, &v, NULL, 0) == -EINVAL, "why may be NULL");
	json_free(NULL);
}

struct number_case {
	const char *text;
	bool is_integer;
	long long i;
	bool is_double;
};

/* The readings yajl_tree gave (checked against it when this parser replaced it). */
static void test_numbers(void)
{
	static const struct number_case cases[] = {
	    {"0", true, 0, true},
	    {"-0", true, 0, true},
	    {"-42", true, -42, true},
	    {"9223372036854775807", true, LLONG_MAX, true},
	    {"-9223372036854775807", true, -LLONG_MAX, true},
	    /* yajl reads the magnitude first, so -2^63 overflows; kept that way. */
	    {"-9223372036854775808", false, LLONG_MIN, true},
	    {"9223372036854775808", false, LLONG_MAX, true},
	    {"9223372036854775810", false, LLONG_MAX, true},
	    {"-9223372036854775810", false, LLONG_MIN, true},
	    {"99999999999999999999", false, LLONG_MAX, true},
	    {"1.5", false, LLONG_MAX, true},
	    {"-1.5", false, LLONG_MIN, true},
	    {"1e3", false, LLONG_MAX, true},
	    {"1E+3", false, LLONG_MAX, true},
	    {"0.0", false, LLONG_MAX, true},
	    {"1e999", false, LLONG_MAX, false},
	    {"-1e999", false, LLONG_MIN, false},
	};
	char why[256], text[64];

	for (size_t k = 0; k < ELEMENTSOF(cases); k++) {
		const struct number_case *c = &cases[k];
		_cleanup_(yajl_tree_freep) yajl_val v = NULL;
		int64_t i = 0;
		snprintf(text, sizeof(text), "{\"n\":%s}", c->text);
		CHECK(parse(text, &v, why, sizeof(why)) == 0, "%s: %s", c->text, why);
		yajl_val n = v->u.object.values[0];
		CHECK(YAJL_IS_NUMBER(n) && strcmp(n->u.number.r, c->text) == 0, "%s: raw kept",
		      c->text);
		CHECK(YAJL_IS_INTEGER(n) == c->is_integer && YAJL_IS_DOUBLE(n) == c->is_double,
		      "%s: flags %u", c->text, n->u.number.flags);
		CHECK(n->u.number.i == c->i, "%s: i %lld", c->text, n->u.number.i);
		CHECK(json_get_int(v, "n", &i) == (c->is_integer ? 0 : -EINVAL), "%s: json_get_int",
		      c->text);
		CHECK(!c->is_integer || i == c->i, "%s: json_get_int value", c->text);
	}
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
	json_free(v);

	CHECK(parse("[\"a\",\"b\",\"c\",\"d\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -E2BIG,
	      "over max");
	json_free(v);
	CHECK(parse("[\"abcdefgh\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) ==
		  -ENAMETOOLONG,
	      "does not fit");
	json_free(v);
	CHECK(parse("[\"a\",1]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "non-string");
	json_free(v);
	CHECK(parse("[\"\"]", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "empty string");
	json_free(v);
	CHECK(parse("{}", &v, why, sizeof(why)) == 0, "parse");
	CHECK(json_copy_string_array(v, &fields[0][0], sizeof(fields[0]), 3, &count) == -EINVAL,
	      "not an array");
	json_free(v);
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

/* A caller's own, lower bound on values and keys (a Varlink call is small). */
static void test_bounded(void)
{
	char text[512], why[128];
	yajl_val v;
	size_t off = 0;
	text[off++] = '[';
	for (int i = 0; i < 99; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s1", i ? "," : "");
	snprintf(text + off, sizeof(text) - off, "]");
	/* 100 values: the array and 99 ones. */
	CHECK(json_parse_bounded(text, JSON_MAX_DEPTH, 100, &v, why, sizeof(why)) == 0,
	      "100 values within a bound of 100: %s", why);
	json_free(v);
	CHECK(json_parse_bounded(text, JSON_MAX_DEPTH, 99, &v, why, sizeof(why)) == -EINVAL &&
		  strstr(why, "more than 99"),
	      "over a bound of 99: %s", why);
	CHECK(!v, "no tree on failure");
}

int main(void)
{
	test_bounded();
	test_depth();
	test_nul();
	test_comments();
	test_depth_edges();
	test_nul_in_keys();
	test_duplicate_keys();
	test_size();
	test_strictness();
	test_numbers();
	test_yajl_errors();
	test_getters();
	test_string_array();
	test_generator();
	return 0;
}
