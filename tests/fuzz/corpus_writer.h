/*
 * What the two seed-corpus makers (make_corpus, make_varlink_corpus) share:
 * the one argument (the output directory), writing each seed there as a
 * file of its name, counting what was written and what failed, and the exit
 * status that count decides. Each maker only builds its seeds.
 *
 * A failure is counted and reported, never fatal: one bad seed must not hide
 * the others' errors, and the maker exits non-zero once all were tried.
 */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

#define CORPUS_PATH_MAX 4096

struct corpus {
	const char *program; /* prefixes every message */
	const char *dir;
	unsigned written;
	unsigned failures;
};

/* Count a failure and say what it was, prefixed with the maker's name. */
_printf_(2, 3) static inline void corpus_fail(struct corpus *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", c->program);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	c->failures++;
}

/* Write one seed as DIR/name. */
static inline void corpus_write(struct corpus *c, const char *name, const void *buf, size_t len)
{
	char path[CORPUS_PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", c->dir, name) >= sizeof(path)) {
		corpus_fail(c, "%s/%s: path too long", c->dir, name);
		return;
	}
	_cleanup_fclose_ FILE *f = fopen(path, "wbe");
	if (!f) {
		corpus_fail(c, "%s: %s", path, strerror(errno));
		return;
	}
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0) {
		corpus_fail(c, "%s: write failed: %s", path, strerror(errno));
		return;
	}
	c->written++;
}

/*
 * A maker's whole main: `program DIR`, write_seeds into DIR with scratch_size
 * bytes of zeroed scratch space (where a maker builds each seed), the count,
 * the exit status.
 */
static inline int corpus_main(int argc, char **argv, const char *program, size_t scratch_size,
			      void (*write_seeds)(struct corpus *c, void *scratch))
{
	struct corpus c = {.program = program};

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return EXIT_FAILURE;
	}
	c.dir = argv[1];
	_cleanup_free_ void *scratch = calloc(1, scratch_size);
	if (!scratch)
		corpus_fail(&c, "out of memory");
	else
		write_seeds(&c, scratch);
	printf("%s: wrote %u seeds to %s\n", program, c.written, c.dir);
	return c.failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
