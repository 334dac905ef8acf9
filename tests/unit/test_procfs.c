/* privhelper/procfs.c: finding the api socket in argv exactly, never by substring. */
#include <string.h>

#include "procfs.h"
#include "testlib.h"

static int find(const char *argv, size_t len, const char **path)
{
	return argv_find_api_sock(argv, len, path);
}

#define ARGV(s) s, sizeof(s)

int main(void)
{
	const char *p;
	CHECK(find(ARGV("firecracker\0--api-sock\0/run/a.sock"), &p) == 0 &&
		  strcmp(p, "/run/a.sock") == 0,
	      "split form");
	CHECK(find(ARGV("firecracker\0--api-sock=/run/a.sock"), &p) == 0 &&
		  strcmp(p, "/run/a.sock") == 0,
	      "equals form");
	CHECK(find(ARGV("firecracker\0--id\0x"), &p) == 0 &&
		  strcmp(p, FIRECRACKER_DEFAULT_API_SOCK) == 0,
	      "default");
	CHECK(find(ARGV("firecracker\0--api-sock"), &p) < 0, "flag without value");
	CHECK(find(ARGV("firecracker\0--api-sock=\0"), &p) < 0, "empty value");
	CHECK(find(ARGV("firecracker\0--api-sock\0/a\0--api-sock\0/b"), &p) < 0, "ambiguous");
	CHECK(find(ARGV("firecracker\0--api-socket\0/run/a.sock"), &p) == 0 &&
		  strcmp(p, FIRECRACKER_DEFAULT_API_SOCK) == 0,
	      "a longer flag is not --api-sock");
	/* The value of --api-sock is consumed: "--api-sock --api-sock=/x" names "--api-sock=/x". */
	CHECK(find(ARGV("fc\0--api-sock\0--api-sock=/x"), &p) == 0 &&
		  strcmp(p, "--api-sock=/x") == 0,
	      "value consumed");
	return 0;
}
