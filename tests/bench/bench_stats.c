/* See bench_stats.h. */
#include "bench_stats.h"

#include <stdlib.h>
#include <time.h>

#include "testlib.h"

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

void samples_add(struct samples *s, uint64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		CHECK(s->v, "realloc of %zu samples", s->cap);
	}
	s->v[s->n++] = ns;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

void samples_sort(struct samples *s)
{
	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), compare_u64);
}

uint64_t samples_percentile(const struct samples *s, unsigned pct)
{
	if (s->n == 0 || pct == 0 || pct > 100)
		return 0;
	size_t rank = (pct * s->n + 99) / 100; /* ceil(pct/100 * n), in integers */
	return s->v[rank - 1];
}

void samples_free(struct samples *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}
