/*
 * Named crash points, for tests only (meson -Dcrash_points=true; off by
 * default). Off, CRASH_POINT() compiles to nothing: no call, no getenv, no
 * branch. On, the point named by BANGER_CRASH_AT=name[:N] (read once, before
 * main) makes bangerd SIGKILL itself the Nth time it is reached (the first
 * by default): a real crash, with no atexit handlers and nothing flushed.
 * BANGER_CRASH_HOLD=name with BANGER_CRASH_HOLD_FIFO=path holds the thread
 * that reaches the point instead, until a byte arrives in the fifo, so that a
 * test can look at what clients see in between (crashpoint.c).
 *
 * FAULT_POINT(name) is true the Nth time it is reached when BANGER_FAIL_AT=name[:N]
 * names it (false in every other build and case): the code around it then takes its
 * failure path (an allocation that failed), which no test could reach otherwise.
 *
 * Each point sits where a crash tests one rule of DESIGN §2: a point placed
 * just before a cache change claims the disk already holds what the cache is
 * about to; tests/integration/test_crash.py restarts bangerd after each one
 * and checks what the rule promises. A crash point must never change what
 * the code around it does.
 */
#pragma once

#include <stdbool.h>

#ifdef BANGER_CRASH_POINTS
void crash_point(const char *name);
bool fault_point(const char *name);
#define CRASH_POINT(name) crash_point(name)
#define FAULT_POINT(name) fault_point(name)
#else
#define CRASH_POINT(name) ((void)0)
#define FAULT_POINT(name) false
#endif
