/*
 * The layout of one privsep fuzz input, shared by the fuzz target and the
 * seed corpus generator so that the two cannot drift apart: a selector byte,
 * then the datagram exactly as it would come off the socket.
 *
 * The decoders also judge what the kernel delivered besides the bytes (the
 * direction the socket carries and how many fds arrived), so the selector
 * byte chooses those: bit 0 is the direction, bits 1-3 index a table of fd
 * counts that includes the edges of every per-type limit. Bits 4-7 are
 * ignored. An input without even the selector byte is an empty datagram.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "helper.h"
#include "privsep.h"

#define FUZZ_PRIVSEP_DIRECTION_BIT 0x1u
#define FUZZ_PRIVSEP_NFDS_SHIFT	   1
#define FUZZ_PRIVSEP_NFDS_MASK	   0x7u

/* Index i holds i fds for i < 5, so that a small count reads the same in a hex dump. */
static const size_t fuzz_privsep_nfds_choices[FUZZ_PRIVSEP_NFDS_MASK + 1] = {
    0, 1, 2, 3, 4, PS_SCAN_REPLY_MAX - 1, PS_SCAN_REPLY_MAX, PS_SCAN_REPLY_MAX + 1,
};

static inline enum ps_direction fuzz_privsep_direction(uint8_t selector)
{
	return (selector & FUZZ_PRIVSEP_DIRECTION_BIT) ? PS_TO_DAEMON : PS_TO_HELPER;
}

static inline size_t fuzz_privsep_nfds(uint8_t selector)
{
	return fuzz_privsep_nfds_choices[(selector >> FUZZ_PRIVSEP_NFDS_SHIFT) &
					 FUZZ_PRIVSEP_NFDS_MASK];
}

/* The selector for (dir, nfds); -1 when nfds is not in the table. */
static inline int fuzz_privsep_selector(enum ps_direction dir, size_t nfds)
{
	for (unsigned i = 0; i <= FUZZ_PRIVSEP_NFDS_MASK; i++)
		if (fuzz_privsep_nfds_choices[i] == nfds)
			return (int)((i << FUZZ_PRIVSEP_NFDS_SHIFT) |
				     (dir == PS_TO_DAEMON ? FUZZ_PRIVSEP_DIRECTION_BIT : 0));
	return -1;
}

/*
 * Decode as the receiving side does: the helper with its request table
 * (asroot_decode), bangerd with its reply table (ps_decode_reply).
 */
static inline int fuzz_privsep_decode(enum ps_direction dir, const void *buf, size_t len,
				      size_t nfds, struct ps_message *msg, char *why,
				      size_t why_size)
{
	if (dir == PS_TO_HELPER)
		return asroot_decode(buf, len, nfds, msg, why, why_size);
	return ps_decode_reply(buf, len, nfds, msg, why, why_size);
}
