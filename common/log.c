/*
 * See log.h. Writes one line per call with a single write(2) so that lines
 * from the daemon and the helper, which share a stderr, never interleave;
 * a journal entry is one datagram, so entries never interleave either.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* Every entry would say it came from journal_send(): the location is noise. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static struct {
	const char *progname;
	enum log_level max_level;
	bool journal; /* stderr is the journal: send native entries */
} log_state = {"banger", LOG_LEVEL_INFO, false};

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

bool log_open_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	int end = 0;
	struct stat st;
	log_state.journal = e && sscanf(e, "%llu:%llu%n", &dev, &ino, &end) == 2 &&
			    e[end] == '\0' && fstat(STDERR_FILENO, &st) == 0 &&
			    (unsigned long long)st.st_dev == dev &&
			    (unsigned long long)st.st_ino == ino;
	return log_state.journal;
}

bool log_journal_active(void)
{
	return log_state.journal;
}

/* "NAME=value" into buf at *off; false when it does not fit. */
static bool journal_field(struct iovec *iov, char *buf, size_t size, size_t *off, const char *name,
			  const char *value)
{
	int n = snprintf(buf + *off, size - *off, "%s=%s", name, value);
	if (n < 0 || (size_t)n >= size - *off)
		return false;
	iov->iov_base = buf + *off;
	iov->iov_len = (size_t)n;
	*off += (size_t)n + 1;
	return true;
}

/* One native entry; false when the journal did not take it (the caller prints the line). */
static bool journal_send(enum log_level level, int errnum, const char *message,
			 const char *message_id, const struct log_field *fields, size_t n_fields)
{
	struct iovec iov[5 + LOG_FIELDS_MAX];
	char buf[8192], num[16];
	size_t n = 0, off = 0;
	bool ok = journal_field(&iov[n++], buf, sizeof(buf), &off, "MESSAGE", message);
	snprintf(num, sizeof(num), "%d", (int)level);
	ok = ok && journal_field(&iov[n++], buf, sizeof(buf), &off, "PRIORITY", num);
	ok = ok && journal_field(&iov[n++], buf, sizeof(buf), &off, "SYSLOG_IDENTIFIER",
				 log_state.progname);
	if (ok && errnum > 0) {
		snprintf(num, sizeof(num), "%d", errnum);
		ok = journal_field(&iov[n++], buf, sizeof(buf), &off, "ERRNO", num);
	}
	if (ok && message_id)
		ok = journal_field(&iov[n++], buf, sizeof(buf), &off, "MESSAGE_ID", message_id);
	for (size_t i = 0; ok && i < n_fields && i < LOG_FIELDS_MAX; i++)
		if (fields[i].value)
			ok = journal_field(&iov[n++], buf, sizeof(buf), &off, fields[i].name,
					   fields[i].value);
	return ok && sd_journal_sendv(iov, (int)n) >= 0;
}

_printf_(6, 0) static void log_vemit(enum log_level level, int errnum, const char *message_id,
				     const struct log_field *fields, size_t n_fields,
				     const char *fmt, va_list ap)
{
	char message[3968], line[4096];
	int n = vsnprintf(message, sizeof(message), fmt, ap);
	if (n >= 0 && (size_t)n < sizeof(message) && errnum != 0)
		snprintf(message + n, sizeof(message) - (size_t)n, ": %s", strerror(errnum));
	if (log_state.journal && journal_send(level, errnum, message, message_id, fields, n_fields))
		return;
	/* The process name is one of ours and short: a line always fits, newline and all. */
	n = snprintf(line, sizeof(line), "<%d>%s: %s\n", (int)level, log_state.progname, message);
	if (n > 0 && (size_t)n < sizeof(line)) {
		/* A log line that cannot be written has nowhere else to go. */
		ssize_t w = write(STDERR_FILENO, line, (size_t)n);
		(void)w;
	}
}

void log_struct(enum log_level level, int errnum, const char *message_id,
		const struct log_field *fields, size_t n_fields, const char *fmt, ...)
{
	if (level > log_state.max_level)
		return;
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	log_vemit(level, errnum, message_id, fields, n_fields, fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_fatal(int status, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vemit(LOG_LEVEL_ERR, errnum, NULL, NULL, 0, fmt, ap);
	va_end(ap);
	exit(status);
}
