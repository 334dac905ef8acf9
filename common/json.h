/*
 * yajl with the guards banger needs around it: every JSON text goes through
 * json_parse, which refuses what yajl would accept but a C program must not
 * (nesting deep enough to blow the stack in yajl_tree_free, a NUL hidden in
 * a string), and through getters that tell "absent" from "wrong type".
 * Writers are thin: they exist so that every file and message is produced
 * by yajl, never by printf.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "macro.h"

void yajl_tree_freep(yajl_val *v); /* for _cleanup_(yajl_tree_freep) */
void yajl_gen_freep(yajl_gen *g);

#define JSON_MAX_DEPTH 64

/*
 * Parse a NUL-terminated JSON text. Before yajl sees it, one pass over the
 * bytes rejects nesting deeper than max_depth (yajl_tree_free recurses, so a
 * deep text must never become a tree) and a "\u0000" escape inside a string
 * (a C string would silently end there). Returns 0 with *out set (caller
 * frees with yajl_tree_free), or -EINVAL with why ("nesting deeper than 64",
 * "NUL inside a string", or yajl's own message, one line).
 */
int json_parse(const char *text, size_t max_depth, yajl_val *out, char *why, size_t why_size);

/* Typed getters on an object: 0; -ENOENT if the key is absent or null; -EINVAL if another type. */
int json_get_string(yajl_val obj, const char *key, const char **out);
int json_get_int(yajl_val obj, const char *key, int64_t *out); /* integers only, no 1.5 */
int json_get_bool(yajl_val obj, const char *key, bool *out);
int json_get_object(yajl_val obj, const char *key, yajl_val *out);
int json_get_array(yajl_val obj, const char *key, yajl_val *out);
/* First key of obj not in the NULL-terminated list, or NULL when all are known. */
const char *json_unknown_key(yajl_val obj, const char *const *allowed);
/*
 * Copy an array of strings into consecutive fixed-size fields (field_size
 * each, zero-filled after the terminator). -EINVAL if arr is not an array
 * or holds a non-string or an empty string; -E2BIG over max entries;
 * -ENAMETOOLONG if one does not fit.
 */
int json_copy_string_array(yajl_val arr, char *fields, size_t field_size, size_t max,
			   uint32_t *count);

/* A generator without beautify, validate_utf8 on. NULL on allocation failure. */
yajl_gen json_gen_new(void);
/* Writers; they ignore yajl status (the final yajl_gen_get_buf tells). */
void json_gen_string(yajl_gen g, const char *s);
void json_gen_kv_string(yajl_gen g, const char *key, const char *value);
void json_gen_kv_int(yajl_gen g, const char *key, int64_t v);
void json_gen_kv_bool(yajl_gen g, const char *key, bool v);
/* Write a parsed value back out (depth is bounded by json_parse's limit). */
void json_gen_value(yajl_gen g, yajl_val v);

void json_gen_kv_string_array(yajl_gen g, const char *key, const char *fields, size_t field_size,
			      uint32_t count);
