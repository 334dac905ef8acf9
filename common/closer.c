/*
 * See closer.h. One thread, one queue under a mutex; the thread starts with
 * the first fd and sleeps on a condition variable while the queue is empty.
 */
#include "closer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "log.h"

#define CLOSER_STOP_WAIT_MS 1000
#define CLOSER_STOP_WAITS   30 /* at most, while closes still begin */

struct fd_closer {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t drained;
	int *queue;
	size_t n, capacity;
	unsigned long in_flight; /* queued plus the one being closed */
	unsigned long closes;	 /* close() calls begun: a stuck one does not advance */
	atomic_bool closing;	 /* between the thread's entering close() and its return */
	pid_t tid;		 /* the thread's, for its scheduler state in /proc */
	bool started, stopping;
	bool orphaned; /* freed while a close hung: the thread frees it when done */
	pthread_t thread;
};

static atomic_ulong abandoned_fds;

unsigned long fd_closer_abandoned(void)
{
	return atomic_load(&abandoned_fds);
}

static void closer_destroy(struct fd_closer *c)
{
	pthread_cond_destroy(&c->wake);
	pthread_cond_destroy(&c->drained);
	pthread_mutex_destroy(&c->lock);
	free(c->queue);
	free(c);
}

struct fd_closer *fd_closer_new(void)
{
	struct fd_closer *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->wake, NULL);
	pthread_cond_init(&c->drained, NULL);
	return c;
}

static void *closer_main(void *arg)
{
	struct fd_closer *c = arg;
	pthread_mutex_lock(&c->lock);
	c->tid = gettid();
	for (;;) {
		while (c->n == 0 && !c->stopping)
			pthread_cond_wait(&c->wake, &c->lock);
		if (c->n == 0)
			break;
		int fd = c->queue[--c->n];
		c->closes++;
		pthread_mutex_unlock(&c->lock);
		atomic_store(&c->closing, true);
		close(fd); /* may take as long as the peer makes it */
		atomic_store(&c->closing, false);
		pthread_mutex_lock(&c->lock);
		if (--c->in_flight == 0)
			pthread_cond_broadcast(&c->drained);
	}
	bool orphaned = c->orphaned;
	pthread_mutex_unlock(&c->lock);
	if (orphaned)
		closer_destroy(c); /* nobody else holds it: fd_closer_free() left it to us */
	return NULL;
}

void fd_closer_close(struct fd_closer *c, int fd)
{
	if (fd < 0)
		return;
	pthread_mutex_lock(&c->lock);
	if (!c->started && pthread_create(&c->thread, NULL, closer_main, c) == 0)
		c->started = true;
	if (c->started) /* on ENOMEM the queue stays full: see below */
		(void)grow_array(&c->queue, &c->capacity, c->n + 1, sizeof(*c->queue), 16);
	bool queued = c->started && c->n < c->capacity;
	if (queued) {
		c->queue[c->n++] = fd;
		c->in_flight++;
		pthread_cond_signal(&c->wake);
	}
	pthread_mutex_unlock(&c->lock);
	if (!queued) {
		log_warnx("fd closer unavailable: closing fd %d on the caller's thread", fd);
		close(fd);
	}
}

unsigned long fd_closer_backlog(struct fd_closer *c)
{
	pthread_mutex_lock(&c->lock);
	unsigned long n = c->in_flight;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/*
 * The kernel's word on the thread: R, it wants a CPU (a busy host, a nice'd process) and
 * is no more stuck than we are; S or D, it sleeps, in a close() that waits on its peer.
 */
static bool closer_runnable(const struct fd_closer *c)
{
	char path[64], stat[512];
	if (c->tid <= 0)
		return true; /* not started yet: it will be */
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)c->tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	stat[n > 0 ? n : 0] = '\0';
	const char *paren = strrchr(stat, ')'); /* the name before it may hold anything */
	return paren && paren[1] == ' ' && paren[2] == 'R';
}

void fd_closer_free(struct fd_closer *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_signal(&c->wake);
	/*
	 * Stuck means one close() that sleeps through a whole wait: inside it still, and S or D
	 * to the kernel. A thread that only waits for a CPU (a busy host, a nice'd process), or
	 * for this lock, is waited for, up to a ceiling.
	 */
	bool stuck = false;
	for (unsigned waits = 0; c->in_flight > 0 && !stuck; waits++) {
		unsigned long closes = c->closes;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)CLOSER_STOP_WAIT_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		int r = 0;
		while (c->in_flight > 0 && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&c->drained, &c->lock, &until);
		stuck = c->in_flight > 0 &&
			((c->closes == closes && atomic_load(&c->closing) && !closer_runnable(c)) ||
			 waits + 1 == CLOSER_STOP_WAITS);
	}
	if (stuck) {
		/*
		 * A close is hanging: joining would hang us too. The thread finishes the queue
		 * and frees the closer (it is running: in_flight > 0 is never true without it).
		 */
		unsigned long left = c->in_flight;
		c->orphaned = true;
		atomic_fetch_add(&abandoned_fds, left);
		pthread_detach(c->thread);
		pthread_mutex_unlock(&c->lock);
		log_warnx("fd closer: %lu fds still closing at exit", left);
		return;
	}
	pthread_mutex_unlock(&c->lock);
	if (c->started)
		pthread_join(c->thread, NULL);
	closer_destroy(c);
}
