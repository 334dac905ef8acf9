/* common/atomicfile.c: replace-or-nothing writes, capped reads that refuse symlinks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"
#include "macro.h"
#include "testlib.h"

/* Entries of the dir other than . and .., for "no temp file left behind". */
static int count_entries(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd >= 0, "open dir");
	DIR *d = fdopendir(fd);
	CHECK(d, "fdopendir");
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void check_content(int dirfd, const char *name, const char *expected)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = read_file_at(dirfd, name, 1024, &data, &len);
	CHECK(r == 0, "read %s: %s", name, strerror(-r));
	CHECK(len == strlen(expected) && strcmp(data, expected) == 0, "%s holds '%s', not '%s'",
	      name, data, expected);
}

int main(void)
{
	char *dir = t_make_temp_dir("atomicfile");
	_cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	CHECK(dirfd >= 0, "open %s", dir);

	/* Write, then replace; the mode is exactly what was asked for, whatever the umask. */
	umask(077);
	CHECK(atomic_write_at(dirfd, "f.json", "first", 5, 0644) == 0, "first write");
	check_content(dirfd, "f.json", "first");
	CHECK(fstatat(dirfd, "f.json", &st, 0) == 0 && (st.st_mode & 07777) == 0644, "mode %o",
	      st.st_mode & 07777);
	CHECK(atomic_write_at(dirfd, "f.json", "second!", 7, 0600) == 0, "replace");
	check_content(dirfd, "f.json", "second!");
	CHECK(atomic_write_at(dirfd, "empty", "", 0, 0600) == 0, "empty file");
	check_content(dirfd, "empty", "");
	CHECK(count_entries(dirfd) == 2, "only the two files");

	/* A failed rename (a directory holds the name) leaves it and no temp behind. */
	CHECK(mkdirat(dirfd, "taken", 0700) == 0, "mkdir");
	CHECK(atomic_write_at(dirfd, "taken", "x", 1, 0600) == -EISDIR, "over a directory");
	CHECK(fstatat(dirfd, "taken", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode),
	      "directory still there");
	CHECK(count_entries(dirfd) == 3, "no temp file left");
	check_content(dirfd, "f.json", "second!");

	/* Names are one component. */
	CHECK(atomic_write_at(dirfd, "taken/x", "x", 1, 0600) == -EINVAL, "slash refused");
	CHECK(atomic_write_at(dirfd, "..", "x", 1, 0600) == -EINVAL, "dot-dot refused");

	/* Reads: the cap is exact, a missing file and a symlink are told apart. */
	_cleanup_free_ char *data = NULL;
	size_t len;
	CHECK(read_file_at(dirfd, "f.json", 7, &data, &len) == 0 && len == 7, "at the cap");
	CHECK(read_file_at(dirfd, "f.json", 6, &data, &len) == -EFBIG, "over the cap");
	CHECK(read_file_at(dirfd, "missing", 1024, &data, &len) == -ENOENT, "missing");
	CHECK(symlinkat("f.json", dirfd, "link") == 0, "symlink");
	CHECK(read_file_at(dirfd, "link", 1024, &data, &len) == -ELOOP, "symlink not followed");
	CHECK(read_file_at(dirfd, "taken", 1024, &data, &len) == -EISDIR, "directory");
	CHECK(mkfifoat(dirfd, "fifo", 0600) == 0, "mkfifo");
	CHECK(read_file_at(dirfd, "fifo", 1024, &data, &len) == -EINVAL, "fifo, without hanging");

	/* A write over a symlink replaces the link, never writes through it. */
	CHECK(atomic_write_at(dirfd, "link", "new", 3, 0600) == 0, "write over link");
	CHECK(fstatat(dirfd, "link", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode),
	      "link replaced by a file");
	check_content(dirfd, "f.json", "second!");

	t_cleanup_dir(dir);
	free(dir);
	return 0;
}
