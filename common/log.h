/*
 * Logging for both daemons, after OpenBSD bgpd's log.c: log_warn() appends
 * strerror(errno), log_warnx() does not. Lines go to stderr with the
 * syslog-level prefix journald understands ("<3>"), so the same binary logs
 * well under systemd and in a terminal. The only global state is the
 * process name and the verbosity, set once at start-up.
 */
#pragma once

#include <stdbool.h>

#include "macro.h"

enum log_level {
	LOG_LEVEL_ERR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_NOTICE = 5,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

void log_init(const char *progname, enum log_level max_level);
void log_set_level(enum log_level max_level);
int log_level_from_string(const char *s);
/* "error" ... "debug", as log_level_from_string() takes them; NULL for no level. */
const char *log_level_name(int level);

void log_emit(enum log_level level, int errnum, const char *fmt, ...) _printf_(3, 4);

/* errnum is a positive errno value; the line ends with ": strerror(errnum)". */
#define log_errno(level, errnum, ...) log_emit((level), (errnum), __VA_ARGS__)

#define log_warn(...)	log_emit(LOG_LEVEL_WARNING, errno, __VA_ARGS__)
#define log_warnx(...)	log_emit(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_errx(...)	log_emit(LOG_LEVEL_ERR, 0, __VA_ARGS__)
#define log_notice(...) log_emit(LOG_LEVEL_NOTICE, 0, __VA_ARGS__)
#define log_info(...)	log_emit(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)	log_emit(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)

/* Log at error level and exit(status). */
_noreturn_ void fatal(int status, const char *fmt, ...) _printf_(2, 3);
_noreturn_ void fatalx(int status, const char *fmt, ...) _printf_(2, 3);
