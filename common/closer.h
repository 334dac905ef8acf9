/*
 * Closing an fd that a peer chose can block: a socket lingering on a full
 * send queue (SO_LINGER), a FUSE file, a device whose release waits. An
 * event loop must never make that call itself, so such fds are handed to a
 * closer, whose own thread closes them one after another. Never used for
 * fds we opened ourselves, but for one case: the store writer's last
 * reference to a state file it replaced or removed, whose blocks are freed
 * at that close (which can wait for the disk: daemon/store_writer.c).
 */
#pragma once

struct fd_closer;

struct fd_closer *fd_closer_new(void);
/*
 * Close fd on the closer's thread (started at the first fd). Never blocks
 * the caller; if no thread can be had, the fd is closed here after all
 * (logged), since keeping it open would leak it.
 */
void fd_closer_close(struct fd_closer *c, int fd);
/* fds handed over and not yet closed (a blocked close shows here). */
unsigned long fd_closer_backlog(struct fd_closer *c);
/*
 * Stop: waits for the queue to drain, up to 1 s for any one close and 30 s in
 * all. A thread stuck in a close is left behind to finish its queue, and frees
 * the closer itself when it does.
 */
void fd_closer_free(struct fd_closer *c);
/* fds this process's closers have left behind at fd_closer_free() so far. */
unsigned long fd_closer_abandoned(void);
