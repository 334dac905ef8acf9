/*
 * Shorthands for the payload validators of both halves of the codec
 * (privsep_request.c, privsep_reply.c): each check returns -EBADMSG with
 * why filled in, and the validator passes that straight back.
 */
#pragma once

#include "privsep.h"

#define PS_TRY(expr)                                                                               \
	do {                                                                                       \
		int r_ = (expr);                                                                   \
		if (r_ < 0)                                                                        \
			return r_;                                                                 \
	} while (0)

#define CHECK_STRING(field, label)                                                                 \
	PS_TRY(ps_check_string((field), sizeof(field), (label), why, why_size))
#define CHECK_ZERO(field, label)                                                                   \
	PS_TRY(ps_check_zero(&(field), sizeof(field), (label), why, why_size))
