/*
 * See log.h. Writes one line per call with a single write(2) so that lines
 * from the daemon and the helper, which share a stderr, never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>

static struct {
	const char *progname;
	enum log_level max_level;
} log_state = {"banger", LOG_LEVEL_INFO};

void log_init(const char *progname, enum log_level max_level)
{
	log_state.progname = progname;
	log_state.max_level = max_level;
}

void log_set_level(enum log_level max_level)
{
	log_state.max_level = max_level;
}

static const char *const level_names[] = {
    [LOG_LEVEL_ERR] = "error", [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
    [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
};

int log_level_from_string(const char *s)
{
	for (size_t i = LOG_LEVEL_ERR; i < ELEMENTSOF(level_names); i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	return -EINVAL;
}

const char *log_level_name(int level)
{
	return level >= LOG_LEVEL_ERR && level <= LOG_LEVEL_DEBUG ? level_names[level] : NULL;
}

_printf_(3, 0) static void log_vemit(enum log_level level, int errnum, const char *fmt, va_list ap)
{
	char line[4096];
	int n = snprintf(line, sizeof(line), "<%d>%s: ", (int)level, log_state.progname);
	if (n < 0)
		return;
	size_t len = (size_t)n;
	int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (m > 0)
		len += (size_t)m;
	if (len >= sizeof(line))
		len = sizeof(line) - 1;
	if (errnum != 0) {
		m = snprintf(line + len, sizeof(line) - len, ": %s", strerror(errnum));
		if (m > 0)
			len += (size_t)m;
		if (len >= sizeof(line))
			len = sizeof(line) - 1;
	}
	line[len++] = '\n';
	/* A log line that cannot be written has nowhere else to go. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void log_emit(enum log_level level, int errnum, const char *fmt, ...)
{
	if (level > log_state.max_level)
		return;
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	log_vemit(level, errnum, fmt, ap);
	va_end(ap);
	errno = saved;
}

void fatal(int status, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	log_vemit(LOG_LEVEL_ERR, saved, fmt, ap);
	va_end(ap);
	exit(status);
}

void fatalx(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vemit(LOG_LEVEL_ERR, 0, fmt, ap);
	va_end(ap);
	exit(status);
}
