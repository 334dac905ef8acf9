/* CLOCK_MONOTONIC in the units its callers count in: one reading, three spellings. */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t monotonic_us(void)
{
	return monotonic_ns() / 1000u;
}

static inline uint64_t monotonic_ms(void)
{
	return monotonic_ns() / 1000000u;
}
