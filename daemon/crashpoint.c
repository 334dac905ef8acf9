/*
 * See crashpoint.h. Built only with -Dcrash_points=true: a release bangerd
 * has no trace of this file. The one piece of global state is the armed
 * point, parsed from the environment before main() (so before privileges
 * are dropped or anything is read) and only counted afterwards.
 */
#include "crashpoint.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRASH_AT_ENV   "BANGER_CRASH_AT"
#define CRASH_NAME_MAX 64

static struct {
	char name[CRASH_NAME_MAX]; /* empty: no point is armed */
	unsigned long nth;
	unsigned long hits;
} crash_at;

/* A malformed spec is a broken test: refuse to start rather than run unarmed. */
static _Noreturn void crash_spec_invalid(const char *spec)
{
	dprintf(STDERR_FILENO, "<3>bangerd: %s=\"%s\": want name or name:N (N >= 1)\n",
		CRASH_AT_ENV, spec);
	_exit(2);
}

__attribute__((constructor)) static void crash_point_arm(void)
{
	const char *spec = getenv(CRASH_AT_ENV);
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
			crash_spec_invalid(spec);
	}
	if (len == 0 || len >= sizeof(crash_at.name))
		crash_spec_invalid(spec);
	memcpy(crash_at.name, spec, len);
	crash_at.name[len] = '\0';
	crash_at.nth = nth;
}

void crash_point(const char *name)
{
	if (!crash_at.name[0] || strcmp(name, crash_at.name) != 0 || ++crash_at.hits < crash_at.nth)
		return;
	/* One write(2), no stdio buffer: the test reads which point fired. */
	dprintf(STDERR_FILENO, "<2>bangerd: crash point %s reached (hit %lu): SIGKILL\n", name,
		crash_at.hits);
	raise(SIGKILL);
}
