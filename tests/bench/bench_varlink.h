/*
 * The client half of Varlink that banger's C benchmarks need, kept apart so
 * the measuring programs read as measurements: connect to bangerd, build a
 * call with yajl (never printf), and cut replies at their NUL terminator.
 * It is deliberately blocking and minimal: a benchmark client must cost as
 * little CPU as possible, because on a small machine it competes with the
 * daemon it measures. Any failure ends the program (testlib's CHECK).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* Replies are small here; a larger one is a bug to report, not data to grow for. */
#define BV_REPLY_MAX_BYTES 65536

struct bv_conn {
	int fd;
	size_t len;			  /* bytes buffered, possibly several replies */
	char buf[BV_REPLY_MAX_BYTES + 1]; /* + 1 keeps a NUL after the last byte read */
};

/* Connect to bangerd's socket; the connection is blocking. Caller frees with bv_close. */
struct bv_conn *bv_connect(const char *path);
void bv_close(struct bv_conn *c);

/* Begin {"method":M,"parameters":{ ... ; the caller adds the parameters. */
yajl_gen bv_request_begin(const char *method);
/* Close the call and return its bytes with the terminating NUL (*len counts it). Caller frees. */
char *bv_request_end(yajl_gen g, size_t *len);

void bv_send(struct bv_conn *c, const char *req, size_t len);
/* One read of whatever is available (blocks if nothing is); fails on EOF or a full buffer. */
void bv_fill(struct bv_conn *c);
/* Length of the first complete reply in the buffer (its NUL not counted), or -1 if none yet. */
ptrdiff_t bv_reply_length(const struct bv_conn *c);
/* Drop the first reply (len bytes and its NUL) from the buffer. */
void bv_consume(struct bv_conn *c, size_t len);

/* Send req and wait for its reply; returns a NUL-terminated copy. Caller frees. */
char *bv_call(struct bv_conn *c, const char *req, size_t len);
/* Parse a reply and fail, printing it, if it is an error or not an object with parameters. */
yajl_val bv_parse_success(const char *reply, const char *what);
/* Whether v is the string want. */
bool bv_is_string(yajl_val v, const char *want);
/* The value at a path of object keys under "parameters" (NULL-terminated), or NULL. */
yajl_val bv_param(yajl_val reply, const char *const *path);
