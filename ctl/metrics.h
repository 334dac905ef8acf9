/*
 * bangerd's GetStatus as Prometheus metrics (text format 0.0.4): the names
 * are listed in bangerd(8).
 */
#pragma once

#include <stdio.h>
#include <yajl/yajl_tree.h>

/* The metrics of a GetStatus reply's parameters; status NULL: bangerd did not answer. */
void metrics_format(FILE *f, yajl_val status);

/*
 * The same, written to path atomically (a temp file beside it, fsynced,
 * renamed over it: a scraper never reads half a file), mode 0644.
 * Returns 0 or -errno.
 */
int metrics_write_file(const char *path, yajl_val status);
