/*
 * See crashpoint.h. Built only with -Dcrash_points=true: a release bangerd
 * has no trace of this file. The one piece of global state is the armed
 * point, parsed from the environment before main() (so before privileges
 * are dropped or anything is read) and only counted afterwards.
 */
#include "crashpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRASH_AT_ENV	    "BANGER_CRASH_AT"
#define FAIL_AT_ENV	    "BANGER_FAIL_AT"
#define CRASH_HOLD_ENV	    "BANGER_CRASH_HOLD"
#define CRASH_HOLD_FIFO_ENV "BANGER_CRASH_HOLD_FIFO"
#define CRASH_NAME_MAX	    64

/* A point armed by name[:N]: it fires the Nth time it is reached. */
struct armed_point {
	char name[CRASH_NAME_MAX]; /* empty: no point is armed */
	unsigned long nth;
	unsigned long hits;
};

static struct armed_point crash_at, fail_at;

/* BANGER_CRASH_HOLD's point and fifo, read with BANGER_CRASH_AT before main (NULL: none). */
static struct {
	const char *name;
	const char *fifo;
} crash_hold;

/* A malformed spec is a broken test: refuse to start rather than run unarmed. */
static _Noreturn void crash_spec_invalid(const char *env, const char *spec)
{
	dprintf(STDERR_FILENO, "<3>bangerd: %s=\"%s\": want name or name:N (N >= 1)\n", env, spec);
	_exit(2);
}

/* Arm p from the environment variable env (name or name:N), if it is set. */
static void armed_point_parse(struct armed_point *p, const char *env)
{
	const char *spec = getenv(env);
	if (!spec || !spec[0])
		return;
	const char *colon = strchr(spec, ':');
	size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
	unsigned long nth = 1;
	if (colon) {
		char *end;
		errno = 0;
		nth = strtoul(colon + 1, &end, 10);
		if (errno || end == colon + 1 || *end || nth == 0)
			crash_spec_invalid(env, spec);
	}
	if (len == 0 || len >= sizeof(p->name))
		crash_spec_invalid(env, spec);
	memcpy(p->name, spec, len);
	p->name[len] = '\0';
	p->nth = nth;
}

/* Is p armed for name, and is this the hit it waits for? */
static bool armed_point_fires(struct armed_point *p, const char *name)
{
	return p->name[0] && strcmp(name, p->name) == 0 && ++p->hits == p->nth;
}

__attribute__((constructor)) static void crash_point_arm(void)
{
	crash_hold.name = getenv(CRASH_HOLD_ENV);
	crash_hold.fifo = getenv(CRASH_HOLD_FIFO_ENV);
	armed_point_parse(&crash_at, CRASH_AT_ENV);
	armed_point_parse(&fail_at, FAIL_AT_ENV);
}

/*
 * BANGER_CRASH_HOLD=name with BANGER_CRASH_HOLD_FIFO=path: the thread that first reaches
 * that point says so on stderr and waits until the test writes a byte into the fifo, then
 * goes on as if nothing happened. Only that thread waits (the writer's, for the points
 * between durable steps): the loop goes on answering, and the test looks at what a client
 * sees in between. The variables are read once, before main, as BANGER_CRASH_AT is.
 */
static void crash_point_hold(const char *name)
{
	static atomic_bool held;
	if (!crash_hold.name || !crash_hold.fifo || strcmp(name, crash_hold.name) != 0 ||
	    atomic_exchange(&held, true))
		return;
	dprintf(STDERR_FILENO, "<2>bangerd: crash point %s reached: holding\n", name);
	int fd = open(crash_hold.fifo, O_RDONLY | O_CLOEXEC);
	char byte;
	if (fd >= 0) {
		while (read(fd, &byte, 1) < 0 && errno == EINTR)
			;
		close(fd);
	}
	dprintf(STDERR_FILENO, "<2>bangerd: crash point %s released\n", name);
}

void crash_point(const char *name)
{
	crash_point_hold(name);
	if (!armed_point_fires(&crash_at, name))
		return;
	/* One write(2), no stdio buffer: the test reads which point fired. */
	dprintf(STDERR_FILENO, "<2>bangerd: crash point %s reached (hit %lu): SIGKILL\n", name,
		crash_at.hits);
	raise(SIGKILL);
}

bool fault_point(const char *name)
{
	if (!armed_point_fires(&fail_at, name))
		return false;
	dprintf(STDERR_FILENO, "<2>bangerd: fault point %s reached (hit %lu): failing\n", name,
		fail_at.hits);
	return true;
}
