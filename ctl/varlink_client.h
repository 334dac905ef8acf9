/*
 * A small blocking Varlink client for bangerctl: one connection, one call
 * at a time, replies read up to their NUL. It exists because bangerctl
 * must pass a pidfd with SetHandles (SCM_RIGHTS on the call's first
 * byte, as sd-varlink does) and needs nothing an event loop would add.
 * It never interprets a reply beyond the Varlink envelope: what the
 * parameters mean is the caller's business.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* A reply larger than this is refused rather than buffered without end. */
#define VARLINK_CLIENT_MAX_REPLY_BYTES (16 * 1024 * 1024)

struct varlink_client;

/* One reply: the whole parsed object, with the envelope's fields picked out. */
struct varlink_client_reply {
	yajl_val tree;	     /* owned; freed by varlink_client_reply_clear() */
	yajl_val parameters; /* points into tree; an empty object when absent */
	const char *error;   /* the error name, or NULL for a normal reply */
	bool continues;	     /* more replies follow ("more" calls only) */
	char why[256];	     /* when reading failed with -EBADMSG: what was wrong */
};

/* Connect to the Unix stream socket at path. Returns 0 or -errno. */
int varlink_client_connect(const char *path, struct varlink_client **out);
void varlink_client_free(struct varlink_client *c);
void varlink_client_freep(struct varlink_client **c); /* for _cleanup_ */

/*
 * Start building a call: a generator holding {"method": method,
 * "parameters": { with the parameters object open. The caller adds its
 * parameters (json_gen_kv_*) and hands it to varlink_client_send().
 * NULL on allocation failure.
 */
yajl_gen varlink_client_call_begin(const char *method);

/*
 * Close the call built in call (the generator is consumed either way), add
 * "more": true when asked, and send it with its NUL terminator. fds (at
 * most a few) travel with the message in the same sendmsg. 0 or -errno.
 */
int varlink_client_send(struct varlink_client *c, yajl_gen call, bool more, const int *fds,
			size_t nfds);

/*
 * Read the next reply. 0 with *reply filled; -ECONNRESET when the server
 * closed the connection before a whole reply; -EMSGSIZE over the cap;
 * -EBADMSG when the reply is not a Varlink reply object (reply->why says
 * how); other -errno from read().
 */
int varlink_client_read_reply(struct varlink_client *c, struct varlink_client_reply *reply);
void varlink_client_reply_clear(struct varlink_client_reply *reply);

/* send + read_reply for a call that expects exactly one reply. */
int varlink_client_call(struct varlink_client *c, yajl_gen call, const int *fds, size_t nfds,
			struct varlink_client_reply *reply);
