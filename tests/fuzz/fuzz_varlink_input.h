/*
 * The layout of one fuzz_varlink_server input, shared by the fuzz target and
 * the seed corpus generator so that the two cannot drift apart.
 *
 * An input is a script for the clients of one server. Byte 0 sets the scene:
 *
 *   bit 0     the server's end of each socket has a small send buffer, so
 *             that replies back up after a few KiB
 *   bits 1-3  client slot 0, 1, 2 is an admin (varlink_server_set_limits'
 *             is_admin): it may send fds, and is served first
 *   bit 4     tight limits (fuzz_varlink_tight_limits), not bangerd's defaults
 *   bit 5     an event base without priorities (as a caller may forget them)
 *   bit 6     an event base without bangerd's max dispatch interval
 *   bit 7     a stall timeout of 0: a throttled client that does not read is
 *             dropped at the next turn (the one timeout a turn can reach
 *             without waiting: the others are seconds long)
 *
 * then come steps until the input ends. Each step is an op byte and the op's
 * operands:
 *
 *   bits 0-2  the op (enum fuzz_varlink_op)
 *   bits 3-4  how many fds go with the bytes a send op writes: an index into
 *             fuzz_varlink_nfds_choices (none, one, the most a message may
 *             carry, one too many)
 *   bits 5-7  event loop turns to run after the step (a TURN step runs one more)
 *
 *   SEND       u8 length, then that many bytes
 *   SEND_LONG  u16 length (little-endian), then that many bytes
 *   REPEAT     u8 pattern length - 1 (low 4 bits), u8 size (bits 0-5: count - 1,
 *              bits 6-7: the unit, an index into fuzz_varlink_repeat_units), then
 *              the pattern: it is repeated to count * unit bytes (up to 1 MiB),
 *              so that a short input can send a message near the server's limit
 *   TURN       no operands
 *   READING    no operands: the client stops (or starts again) reading replies
 *   CLOSE_IDLE no operands: varlink_server_close_idle(), as bangerd's shutdown
 *   HANGUP     u8: bit 0 clear shuts the client's write side, set closes it
 *   CLIENT     no operands: switch to the next client slot, connecting it if
 *              it is not connected
 *
 * A step cut short by the end of the input sends what there is. So that one
 * input stays fast (a few ms, not seconds), the target sends at most
 * FUZZ_VARLINK_MAX_SENT_BYTES and FUZZ_VARLINK_MAX_MESSAGES NULs per input,
 * and cuts a chunk short where it would pass either.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "varlink.h"

#define FUZZ_VARLINK_SETUP_SMALL_SNDBUF	   0x01u
#define FUZZ_VARLINK_SETUP_ADMIN_SHIFT	   1
#define FUZZ_VARLINK_SETUP_TIGHT_LIMITS	   0x10u
#define FUZZ_VARLINK_SETUP_NO_PRIORITIES   0x20u
#define FUZZ_VARLINK_SETUP_NO_MAX_DISPATCH 0x40u
#define FUZZ_VARLINK_SETUP_NO_STALL_WAIT   0x80u
/* bangerd's: after this many callbacks of the lower priorities, the loop polls again. */
#define FUZZ_VARLINK_MAX_DISPATCH_CALLBACKS 16

#define FUZZ_VARLINK_OP_MASK	 0x7u
#define FUZZ_VARLINK_NFDS_SHIFT	 3
#define FUZZ_VARLINK_NFDS_MASK	 0x3u
#define FUZZ_VARLINK_TURNS_SHIFT 5
#define FUZZ_VARLINK_TURNS_MASK	 0x7u

#define FUZZ_VARLINK_HANGUP_CLOSE 0x1u

#define FUZZ_VARLINK_REPEAT_PATTERN_MASK 0xfu
#define FUZZ_VARLINK_REPEAT_COUNT_MASK	 0x3fu
#define FUZZ_VARLINK_REPEAT_UNIT_SHIFT	 6

#define FUZZ_VARLINK_MAX_CLIENTS    3
#define FUZZ_VARLINK_MAX_SENT_BYTES (2 * VARLINK_MAX_MESSAGE_BYTES)
#define FUZZ_VARLINK_MAX_MESSAGES   256

enum fuzz_varlink_op {
	FUZZ_VARLINK_SEND = 0,
	FUZZ_VARLINK_SEND_LONG = 1,
	FUZZ_VARLINK_REPEAT = 2,
	FUZZ_VARLINK_TURN = 3,
	FUZZ_VARLINK_READING = 4,
	FUZZ_VARLINK_CLOSE_IDLE = 5,
	FUZZ_VARLINK_HANGUP = 6,
	FUZZ_VARLINK_CLIENT = 7,
};

/* One fd, the most one message may carry, and one more (the server must refuse that). */
static const size_t fuzz_varlink_nfds_choices[FUZZ_VARLINK_NFDS_MASK + 1] = {
    0,
    1,
    VARLINK_MAX_FDS_PER_MSG,
    VARLINK_MAX_FDS_PER_MSG + 1,
};

/*
 * Limits an input can reach: fewer connections than client slots over an
 * input's life, a per-uid limit under that, unread output that throttles
 * after a few replies, unparsed input under one large message. (The timeouts
 * stay long: an input takes milliseconds, and time must not decide what it does.)
 */
static inline void fuzz_varlink_tight_limits(struct varlink_limits *l)
{
	varlink_limits_default(l);
	l->max_connections = 3;
	l->reserved_admin = 1;
	l->max_per_uid = 2;
	l->max_output_per_conn = 4096;
	l->max_output_total = 8192;
	l->max_input_total = 64 * 1024;
}

static inline bool fuzz_varlink_setup_admin(uint8_t setup, size_t slot)
{
	return setup & (1u << (FUZZ_VARLINK_SETUP_ADMIN_SHIFT + slot));
}

/* Small units are the common case; the largest reaches the message size limit in 64. */
static const size_t fuzz_varlink_repeat_units[] = {1, 64, 4096, VARLINK_MAX_MESSAGE_BYTES / 64};

static inline size_t fuzz_varlink_repeat_size(uint8_t size_byte)
{
	return ((size_t)(size_byte & FUZZ_VARLINK_REPEAT_COUNT_MASK) + 1) *
	       fuzz_varlink_repeat_units[size_byte >> FUZZ_VARLINK_REPEAT_UNIT_SHIFT];
}

static inline uint8_t fuzz_varlink_op_byte(enum fuzz_varlink_op op, unsigned nfds_choice,
					   unsigned turns)
{
	return (uint8_t)(op | (nfds_choice & FUZZ_VARLINK_NFDS_MASK) << FUZZ_VARLINK_NFDS_SHIFT |
			 (turns & FUZZ_VARLINK_TURNS_MASK) << FUZZ_VARLINK_TURNS_SHIFT);
}

static inline enum fuzz_varlink_op fuzz_varlink_op(uint8_t op_byte)
{
	return (enum fuzz_varlink_op)(op_byte & FUZZ_VARLINK_OP_MASK);
}

static inline size_t fuzz_varlink_nfds(uint8_t op_byte)
{
	return fuzz_varlink_nfds_choices[(op_byte >> FUZZ_VARLINK_NFDS_SHIFT) &
					 FUZZ_VARLINK_NFDS_MASK];
}

static inline unsigned fuzz_varlink_turns(uint8_t op_byte)
{
	return (op_byte >> FUZZ_VARLINK_TURNS_SHIFT) & FUZZ_VARLINK_TURNS_MASK;
}
