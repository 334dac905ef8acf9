/*
 * Timing and percentiles shared by banger's C benchmarks: one clock
 * (CLOCK_MONOTONIC, never the wall clock, which may step during a run) and
 * one definition of a percentile (nearest rank), so that figures printed by
 * different benchmarks mean the same thing.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define NS_PER_S  1000000000ull

uint64_t now_ns(void);

/* A growing array of durations in nanoseconds. */
struct samples {
	uint64_t *v;
	size_t n, cap;
};

void samples_add(struct samples *s, uint64_t ns);
/* Sort once before asking for percentiles. */
void samples_sort(struct samples *s);
/* Nearest-rank percentile (1 <= pct <= 100) of sorted samples; 0 when there are none. */
uint64_t samples_percentile(const struct samples *s, unsigned pct);
void samples_free(struct samples *s);
