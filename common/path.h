/*
 * Pure string checks on paths and names; no I/O. Policy decisions in the
 * helper are built on these, so they are strict: a path is accepted only
 * in its one normal spelling (absolute, no "." or ".." components, no
 * doubled or trailing slash), which makes "is under root" a prefix test
 * that cannot be fooled by "/roots/a/../../etc".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

bool path_is_normal_absolute(const char *path);

/* True when path is root itself or lies below it; both must be normal. */
bool path_is_under(const char *path, const char *root);

/* Last component of a path ("/usr/bin/x" -> "x"); the path itself if it has no slash. */
const char *path_basename(const char *path);

/* True when a fixed-size field holds a terminated string followed only by NULs. */
bool field_is_clean_string(const char *field, size_t size);

/* True when every byte of buf is zero. */
bool bytes_are_zero(const void *buf, size_t size);

/* Copy a string into a fixed-size field, zero-filling the rest; -ENAMETOOLONG if it does not fit.
 */
int field_set(char *field, size_t size, const char *value);
