/*
 * common/log.c: the text line on stderr stays what it was, and when stderr
 * is the journal ($JOURNAL_STREAM names its device and inode) each line is
 * one native entry with MESSAGE_ID and the BANGER_* fields instead. The
 * journal here is a datagram socket of our own at the path sd_journal_sendv
 * sends to, in a private mount namespace (tmpfs on /run), read back and
 * parsed as journald would: "NAME=value\n", or for a value with a newline
 * "NAME\n", a 64-bit little-endian length, the value and "\n".
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "message_id.h"
#include "testlib.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static int stderr_pipe[2];

/* What stderr got since the last call (it is a non-blocking pipe). */
static const char *stderr_text(void)
{
	static char buf[8192];
	ssize_t n = read(stderr_pipe[0], buf, sizeof(buf) - 1);
	CHECK(n >= 0 || errno == EAGAIN, "read stderr: %s", strerror(errno));
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

struct entry {
	char names[32][64];
	char values[32][512];
	size_t n;
};

static void entry_parse(struct entry *e, const char *p, size_t len)
{
	const char *end = p + len;
	e->n = 0;
	while (p < end) {
		CHECK(e->n < 32, "too many fields");
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		CHECK(nl, "field without its newline");
		const char *eq = memchr(p, '=', (size_t)(nl - p));
		char *name = e->names[e->n], *value = e->values[e->n];
		if (eq) {
			CHECK((size_t)(eq - p) < 64 && (size_t)(nl - eq - 1) < 512,
			      "field too long");
			memcpy(name, p, (size_t)(eq - p));
			name[eq - p] = '\0';
			memcpy(value, eq + 1, (size_t)(nl - eq - 1));
			value[nl - eq - 1] = '\0';
			p = nl + 1;
		} else { /* binary: NAME\n, le64 length, value, \n */
			uint64_t vlen = 0;
			CHECK((size_t)(nl - p) < 64 && end - nl - 1 >= 8, "binary field header");
			memcpy(name, p, (size_t)(nl - p));
			name[nl - p] = '\0';
			for (int i = 7; i >= 0; i--)
				vlen = (vlen << 8) | (uint8_t)nl[1 + i];
			CHECK(vlen < 512 && (uint64_t)(end - nl - 9) >= vlen + 1, "binary length");
			memcpy(value, nl + 9, vlen);
			value[vlen] = '\0';
			CHECK(nl[9 + vlen] == '\n', "binary field ends with a newline");
			p = nl + 10 + vlen;
		}
		e->n++;
	}
}

/* The value of name, or NULL; fails when the field comes twice. */
static const char *entry_get(const struct entry *e, const char *name)
{
	const char *found = NULL;
	for (size_t i = 0; i < e->n; i++)
		if (strcmp(e->names[i], name) == 0) {
			CHECK(!found, "%s twice", name);
			found = e->values[i];
		}
	return found;
}

static void entry_recv(int sock, struct entry *e)
{
	static char buf[16384];
	ssize_t n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n > 0, "no journal entry arrived: %s", n < 0 ? strerror(errno) : "empty");
	entry_parse(e, buf, (size_t)n);
}

static void expect_field(const struct entry *e, const char *name, const char *want)
{
	const char *got = entry_get(e, name);
	CHECK(got && strcmp(got, want) == 0, "%s is %s, want %s", name, got ? got : "(absent)",
	      want);
}

static void set_journal_stream(int fd)
{
	struct stat st;
	char v[64];
	CHECK(fstat(fd, &st) == 0, "fstat");
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	CHECK(setenv("JOURNAL_STREAM", v, 1) == 0, "setenv");
}

static void log_probe_entry(void)
{
	log_struct(LOG_LEVEL_NOTICE, 0, BANGER_MID_HELPER_PROBE,
		   LOG_FIELDS({"BANGER_VM_ID", "vm7"}, {"BANGER_CALL", "SetHandles#17"},
			      {"BANGER_REASON", NULL}, {"BANGER_RESULT", "ok"}),
		   "audit req=%d op=probe", 4);
}

int main(void)
{
	/* fd 2 becomes the pipe under test; the test's own messages keep the real stderr. */
	FILE *report = fdopen(dup(STDERR_FILENO), "w");
	CHECK(report, "fdopen");
	setvbuf(report, NULL, _IONBF, 0);
	stderr = report;
	CHECK(pipe2(stderr_pipe, O_NONBLOCK | O_CLOEXEC) == 0, "pipe");
	CHECK(dup2(stderr_pipe[1], STDERR_FILENO) == STDERR_FILENO, "dup2");
	log_init("test-log", LOG_LEVEL_INFO);

	/* 1. Not the journal: no JOURNAL_STREAM, then one that names another file. */
	unsetenv("JOURNAL_STREAM");
	CHECK(!log_open_journal(), "no JOURNAL_STREAM is no journal");
	log_probe_entry();
	CHECK(strcmp(stderr_text(), "<5>test-log: audit req=4 op=probe\n") == 0,
	      "the text line is unchanged: %s", stderr_text());
	set_journal_stream(STDIN_FILENO);
	CHECK(!log_open_journal(), "a JOURNAL_STREAM that is not stderr is no journal");
	CHECK(setenv("JOURNAL_STREAM", "12:34x", 1) == 0 && !log_open_journal(), "malformed");
	log_info("plain %s", "line");
	log_debug("below the level");
	CHECK(strcmp(stderr_text(), "<6>test-log: plain line\n") == 0, "plain line");

	/* 2. A journal of our own where sd_journal_sendv looks for it. */
	if (unshare(CLONE_NEWNS) < 0)
		SKIP("needs root (a mount namespace for a journal socket of its own)");
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "make / private");
	CHECK(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") == 0, "tmpfs on /run");
	CHECK(mkdir("/run/systemd", 0755) == 0 && mkdir("/run/systemd/journal", 0755) == 0,
	      "mkdir");
	int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET};
	CHECK(sock >= 0 && bind(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s: %s",
	      JOURNAL_SOCKET, strerror(errno));
	set_journal_stream(STDERR_FILENO);
	CHECK(log_open_journal() && log_journal_active(), "stderr is the journal");

	struct entry e;
	log_probe_entry();
	entry_recv(sock, &e);
	expect_field(&e, "MESSAGE", "audit req=4 op=probe");
	expect_field(&e, "PRIORITY", "5");
	expect_field(&e, "SYSLOG_IDENTIFIER", "test-log");
	expect_field(&e, "MESSAGE_ID", BANGER_MID_HELPER_PROBE);
	expect_field(&e, "BANGER_VM_ID", "vm7");
	expect_field(&e, "BANGER_CALL", "SetHandles#17");
	expect_field(&e, "BANGER_RESULT", "ok");
	CHECK(!entry_get(&e, "BANGER_REASON"), "a NULL value is left out");
	CHECK(e.n == 7, "7 fields (no CODE_FILE= of log.c), got %zu", e.n);
	CHECK(stderr_text()[0] == '\0', "nothing on stderr when the journal took it");

	errno = ENOENT;
	log_warn("cannot open %s", "x\ny");
	entry_recv(sock, &e);
	expect_field(&e, "MESSAGE", "cannot open x\ny: No such file or directory");
	expect_field(&e, "PRIORITY", "4");
	expect_field(&e, "ERRNO", "2");
	CHECK(!entry_get(&e, "MESSAGE_ID"), "a plain line has no MESSAGE_ID");

	/*
	 * 3. The journal does not take the entry (its socket file is there, nobody reads it:
	 * ECONNREFUSED): the same text line as before, on stderr. (With no socket file at all,
	 * libsystemd drops the entry silently: no journald, and no stderr stream either.)
	 */
	close(sock);
	log_probe_entry();
	CHECK(strcmp(stderr_text(), "<5>test-log: audit req=4 op=probe\n") == 0,
	      "falls back to the text line: %s", stderr_text());
	return 0;
}
