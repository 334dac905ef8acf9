/* common/path.c: the string rules the helper's policy stands on. */
#include <string.h>

#include "path.h"
#include "testlib.h"

int main(void)
{
	const char *normal[] = {"/", "/a", "/a/b", "/a.b/..c", "/run/banger/x.sock"};
	const char *abnormal[] = {"",	  "a",	  "a/b",   "//a",     "/a/", "/a//b",
				  "/./a", "/a/.", "/a/..", "/a/../b", "/..", "/dev/loop1/../sda"};
	for (size_t i = 0; i < sizeof(normal) / sizeof(*normal); i++)
		CHECK(path_is_normal_absolute(normal[i]), "%s is normal", normal[i]);
	for (size_t i = 0; i < sizeof(abnormal) / sizeof(*abnormal); i++)
		CHECK(!path_is_normal_absolute(abnormal[i]), "%s is not normal", abnormal[i]);

	CHECK(path_is_under("/srv/vms/a.sock", "/srv/vms"), "below");
	CHECK(path_is_under("/srv/vms", "/srv/vms"), "itself");
	CHECK(!path_is_under("/srv/vmsX/a.sock", "/srv/vms"), "sibling with the root as prefix");
	CHECK(!path_is_under("/srv/vms/../etc", "/srv/vms"), "dot-dot escape");
	CHECK(!path_is_under("/srv", "/srv/vms"), "above");
	CHECK(strcmp(path_basename("/usr/bin/firecracker"), "firecracker") == 0, "basename");

	char field[8];
	CHECK(field_set(field, sizeof(field), "abc") == 0 &&
		  field_is_clean_string(field, sizeof(field)),
	      "set and clean");
	CHECK(field_set(field, sizeof(field), "12345678") < 0, "too long refused");
	memcpy(field, "ab\0cd\0\0", 8);
	CHECK(!field_is_clean_string(field, sizeof(field)), "embedded NUL");
	memcpy(field, "abcdefgh", 8);
	CHECK(!field_is_clean_string(field, sizeof(field)), "unterminated");
	return 0;
}
