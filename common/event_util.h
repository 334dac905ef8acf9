/*
 * libevent idioms in the style of macro.h, for bangerd's side, which runs
 * an event loop (the helper links no libevent and must not include this).
 */
#pragma once

#include <event2/event.h>

/* Free *ev if set and forget it: for teardown that may run twice or before set-up finished. */
static inline void event_freep(struct event **ev)
{
	if (*ev) {
		event_free(*ev);
		*ev = NULL;
	}
}
