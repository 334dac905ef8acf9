/*
 * The three kinds of resource TEARDOWN removes (DESIGN §4), each behind the
 * same two calls so that teardown.c can validate a whole request before it
 * acts on any of it. A check is pure policy on the requested name: it
 * never touches the kernel. A teardown trusts only what it reads from the
 * kernel about the object the name leads to, and must never act on an
 * object whose kernel-side facts fail the policy.
 *
 * Both fill in a struct ps_teardown_result whose kind and name the caller
 * has set: a check sets status REFUSED and a reason when the name may not
 * be acted on (and leaves status 0 otherwise); a teardown sets status,
 * reason and err (0 or a negative errno).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "privsep.h"

bool tap_name_check(const struct ps_policy *p, struct ps_teardown_result *r);
void tap_teardown(const struct ps_policy *p, struct ps_teardown_result *r);

bool loop_name_check(const struct ps_policy *p, struct ps_teardown_result *r);
void loop_teardown(const struct ps_policy *p, struct ps_teardown_result *r);

bool dm_name_check(const struct ps_policy *p, struct ps_teardown_result *r);
void dm_teardown(const struct ps_policy *p, struct ps_teardown_result *r);

/* Pause a retry loop (not interruptible by anything the helper expects). */
void sleep_ms(long ms);

/* Set a result's outcome in one statement. */
static inline void teardown_set(struct ps_teardown_result *r, enum ps_teardown_status status,
				enum ps_reason reason, int err)
{
	r->status = status;
	r->reason = reason;
	r->err = err;
}
