/* common/beneath.c: a path opens only beneath its root, through no symlink and no "..". */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beneath.h"
#include "testlib.h"

int main(void)
{
	char dir[] = "/tmp/banger-beneath-XXXXXX", p[256], root[256], out[256];
	CHECK(mkdtemp(dir), "mkdtemp");
	t_pathf(root, sizeof(root), "%s/root", dir);
	t_pathf(out, sizeof(out), "%s/outside", dir);
	CHECK(mkdir(root, 0755) == 0 && mkdir(out, 0755) == 0, "mkdir");
	t_pathf(p, sizeof(p), "%s/sub", root);
	CHECK(mkdir(p, 0755) == 0, "mkdir sub");
	t_pathf(p, sizeof(p), "%s/sub/file", root);
	close(open(p, O_CREAT | O_WRONLY, 0600));
	t_pathf(p, sizeof(p), "%s/file", out);
	close(open(p, O_CREAT | O_WRONLY, 0600));
	t_pathf(p, sizeof(p), "%s/link", root);
	CHECK(symlink(out, p) == 0, "symlink");

	int (*const opens[])(const char *, const char *, int) = {open_beneath, open_beneath_walk};
	for (size_t i = 0; i < 2; i++) {
		int (*op)(const char *, const char *, int) = opens[i];
		t_pathf(p, sizeof(p), "%s/sub/file", root);
		int fd = op(root, p, O_PATH);
		CHECK(fd >= 0, "[%zu] a file beneath the root opens: %s", i, strerror(-fd));
		close(fd);
		t_pathf(p, sizeof(p), "%s/link/file", root);
		CHECK(op(root, p, O_PATH) == -ELOOP, "[%zu] no symlink on the way", i);
		t_pathf(p, sizeof(p), "%s/link", root);
		CHECK(op(root, p, O_PATH) == -ELOOP, "[%zu] no symlink at the end", i);
		t_pathf(p, sizeof(p), "%s/sub/../../outside/file", root);
		CHECK(op(root, p, O_PATH) == -EXDEV, "[%zu] no dots", i);
		t_pathf(p, sizeof(p), "%s/file", out);
		CHECK(op(root, p, O_PATH) == -EXDEV, "[%zu] not under the root", i);
		CHECK(op(root, root, O_PATH) == -EXDEV, "[%zu] not the root itself", i);
		t_pathf(p, sizeof(p), "%s/sub/none", root);
		CHECK(op(root, p, O_PATH) == -ENOENT, "[%zu] absent", i);
	}
	t_pathf(p, sizeof(p), "rm -rf '%s'", dir);
	CHECK(system(p) == 0, "cleanup");
	return 0;
}
