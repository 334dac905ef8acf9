/*
 * Logging for both daemons, after OpenBSD bgpd's log.c: log_warn() appends
 * strerror(errno), log_warnx() does not. Lines go to stderr with the
 * syslog-level prefix journald understands ("<3>"), so the same binary logs
 * well under systemd and in a terminal. The only global state is the
 * process name, the verbosity and whether stderr is the journal, set once
 * at start-up.
 *
 * When stderr is the journal (systemd's documented check: $JOURNAL_STREAM
 * names stderr's device and inode), every line is sent as a native journal
 * entry instead (sd_journal_sendv): MESSAGE is the line without its prefix,
 * with PRIORITY, SYSLOG_IDENTIFIER and ERRNO, and log_struct() adds a
 * MESSAGE_ID (message_id.h) and fields such as BANGER_VM_ID. Anywhere else,
 * and whenever the journal cannot take an entry, the same text line goes
 * to stderr as before: tests and terminals see no difference.
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

/*
 * Send entries to the journal from now on when stderr is the journal.
 * Returns whether it is. Call it once the process holds the fds it keeps
 * (the journal's socket is opened on the first entry and must survive).
 */
bool log_open_journal(void);
/* Whether entries go to the journal (log_open_journal() found stderr to be it). */
bool log_journal_active(void);

/* One journal field: name in the journal's grammar (BANGER_VM_ID); a NULL value is left out. */
struct log_field {
	const char *name;
	const char *value;
};

#define LOG_FIELDS_MAX 40 /* fields of one entry beyond these are left out */

/*
 * A line with a MESSAGE_ID and fields: on stderr exactly the line
 * log_emit() would write (the fields are not printed), in the journal one
 * entry that carries them. Values are the caller's bounded, printable
 * words (ids, names, numbers).
 */
void log_struct(enum log_level level, int errnum, const char *message_id,
		const struct log_field *fields, size_t n_fields, const char *fmt, ...)
    _printf_(6, 7);

/* log_struct(level, 0, id, LOG_FIELDS({"BANGER_VM_ID", id}, ...), "fmt", ...) */
#define LOG_FIELDS(...)                                                                            \
	((const struct log_field[]){__VA_ARGS__}),                                                 \
	    (sizeof((const struct log_field[]){__VA_ARGS__}) / sizeof(struct log_field))

/* A line without MESSAGE_ID or fields. */
#define log_emit(level, errnum, ...) log_struct((level), (errnum), NULL, NULL, 0, __VA_ARGS__)

/* errnum is a positive errno value; the line ends with ": strerror(errnum)". */
#define log_errno(level, errnum, ...) log_emit((level), (errnum), __VA_ARGS__)

#define log_warn(...)	log_emit(LOG_LEVEL_WARNING, errno, __VA_ARGS__)
#define log_warnx(...)	log_emit(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_errx(...)	log_emit(LOG_LEVEL_ERR, 0, __VA_ARGS__)
#define log_notice(...) log_emit(LOG_LEVEL_NOTICE, 0, __VA_ARGS__)
#define log_info(...)	log_emit(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)	log_emit(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)

/* Log at error level (with errnum's strerror unless 0) and exit(status). */
_noreturn_ void log_fatal(int status, int errnum, const char *fmt, ...) _printf_(3, 4);
#define fatal(status, ...)  log_fatal((status), errno, __VA_ARGS__)
#define fatalx(status, ...) log_fatal((status), 0, __VA_ARGS__)
