/*
 * Small idioms every banger file uses: scope-bound cleanup in the style of
 * systemd's src/basic/, and explicit ownership moves. Nothing here may
 * allocate or log.
 */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define _cleanup_(f)	   __attribute__((cleanup(f)))
#define _cleanup_free_	   _cleanup_(freep)
#define _cleanup_close_	   _cleanup_(closep)
#define _cleanup_fclose_   _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)
#define _unused_	   __attribute__((unused))
#define _noreturn_	   __attribute__((noreturn))
#define _printf_(a, b)	   __attribute__((format(printf, a, b)))
#define _warn_unused_	   __attribute__((warn_unused_result))

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* close() that keeps errno: cleanup runs on error paths that return -errno. */
static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* Hand ownership of a resource to the caller; the local cleanup then sees nothing. */
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd_ = (fd);                                                                   \
		(fd) = -1;                                                                         \
		_fd_;                                                                              \
	})

#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p_ = (p);                                                           \
		(p) = NULL;                                                                        \
		_p_;                                                                               \
	})

/* errno as a negative return value, never 0 even if a libc call forgot to set it. */
static inline int negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}
