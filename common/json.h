/*
 * yajl with the guards banger needs around it. Every JSON text, from a
 * hostile client or from disk, goes through json_parse: yajl's callback
 * parser lexes it as strict JSON (no comments, UTF-8 checked, one value and
 * nothing after it) and json.c builds the tree itself, refusing at the
 * token what a C program must not hold: nesting deeper than a fixed limit, a
 * NUL decoded inside a string or key, more nodes than a fixed bound. The
 * tree is yajl_tree's struct yajl_val_s, so the YAJL_IS_ and YAJL_GET_
 * macros work, but only json_free may free it: it does not recurse.
 * Getters tell "absent" from "wrong type". Writers are thin: they exist so
 * that every file and message is produced by yajl, never by printf.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "macro.h"

/*
 * Free a tree from json_parse without recursion (an explicit stack as deep
 * as JSON_MAX_DEPTH). NULL is fine. Never yajl_tree_free: it recurses once
 * per level.
 */
void json_free(yajl_val v);
void yajl_tree_freep(yajl_val *v); /* json_free, for _cleanup_(yajl_tree_freep) */
void yajl_gen_freep(yajl_gen *g);

/* The deepest nesting json_parse will build; also the most max_depth may ask for. */
#define JSON_MAX_DEPTH 64

/*
 * The most values and keys one tree may hold, so that its size has a fixed
 * bound whoever capped the text: each node costs at most ~100 bytes (its
 * struct yajl_val_s, slots in its container's arrays, malloc's overhead)
 * plus a copy of its own text, so ~100 MiB at worst. Honest input stays far
 * below: every value takes two bytes of text or more with its separator,
 * so bangerd's 1 MiB messages hold at most 512 Ki nodes; a reply to
 * bangerctl is at most VARLINK_MAX_OUTPUT_BYTES (8 MiB) of records with
 * ~10 bytes per node.
 */
#define JSON_MAX_NODES (1024 * 1024)

/*
 * Parse the NUL-terminated JSON text, exactly strlen(text) bytes of it, as
 * strict JSON. Refused with -EINVAL and a one-line why: nesting deeper than
 * max_depth ("nesting deeper than 64"; max_depth itself may not exceed
 * JSON_MAX_DEPTH), a "\u0000" in a string or key ("NUL inside a string"),
 * a comment ("comments are not JSON"), an object that names a key twice
 * ("key \"id\" given twice": which of the two a reader took would be a
 * guess), more than JSON_MAX_NODES values and keys, or anything yajl refuses (its own message, one
 * line). -ENOMEM when memory runs out. Returns 0 with *out set (caller frees with json_free); on
 * failure *out is NULL. why may be NULL when why_size is 0.
 */
int json_parse(const char *text, size_t max_depth, yajl_val *out, char *why, size_t why_size);
/*
 * The same with a lower bound on values and keys, for a text whose honest
 * shape is small (a Varlink call from a client): a tree costs up to ~88
 * bytes a node, so a 1 MiB message of "[1,1,...]" would otherwise build
 * ~45 MB before anything looks at it.
 */
int json_parse_bounded(const char *text, size_t max_depth, size_t max_nodes, yajl_val *out,
		       char *why, size_t why_size);

/* Typed getters on an object: 0; -ENOENT if the key is absent or null; -EINVAL if another type. */
int json_get_string(yajl_val obj, const char *key, const char **out);
int json_get_int(yajl_val obj, const char *key, int64_t *out); /* integers only, no 1.5 */
int json_get_bool(yajl_val obj, const char *key, bool *out);
int json_get_object(yajl_val obj, const char *key, yajl_val *out);
int json_get_array(yajl_val obj, const char *key, yajl_val *out);
/* s made safe to show in a log line or a reply: printable ASCII ('?' for any other byte), cut to
 * fit size. Returns buf. */
const char *json_printable(const char *s, char *buf, size_t size);
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
/*
 * The same for an array of non-negative integers into out[max] (zero-filled
 * past the count). -EINVAL if arr is not an array or holds anything else;
 * -E2BIG over max entries. A refused array leaves out as it was.
 */
int json_copy_uint_array(yajl_val arr, uint64_t *out, size_t max, uint32_t *count);

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
/* Each value must be at most INT64_MAX (JSON integers are int64 to yajl). */
void json_gen_kv_uint_array(yajl_gen g, const char *key, const uint64_t *values, uint32_t count);
