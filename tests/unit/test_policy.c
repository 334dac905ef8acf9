/* proto/policy.c: what the helper may touch, and the flags that carry it. */
#include <errno.h>
#include <string.h>

#include "policy.h"
#include "testlib.h"

int main(void)
{
	struct ps_policy p, q;
	char why[256];

	policy_init(&p);
	CHECK(policy_finish(&p, why, sizeof(why)) < 0 && strstr(why, "tap prefix"), "incomplete");
	CHECK(policy_set_tap_prefix(&p, "") == -EINVAL, "empty prefix allows everything: refused");
	CHECK(policy_set_tap_prefix(&p, "averyverylongpfx") < 0, "prefix leaves no room");
	CHECK(policy_set_tap_prefix(&p, "a/b") == -EINVAL, "slash");
	CHECK(policy_set_tap_prefix(&p, "bgt") == 0, "tap");
	CHECK(policy_set_dm_prefix(&p, "banger-") == 0, "dm");
	CHECK(policy_set_dm_uuid_prefix(&p, "BANGER-") == 0, "uuid");
	CHECK(policy_add_loop_root(&p, "/") == -EINVAL, "/ as root refused");
	CHECK(policy_add_loop_root(&p, "/srv/../etc") == -EINVAL, "abnormal root refused");
	CHECK(policy_add_loop_root(&p, "/srv/images") == 0, "loop root");
	CHECK(policy_add_api_sock_root(&p, "/run/vms") == 0, "api root");
	CHECK(policy_finish(&p, why, sizeof(why)) == 0, "complete: %s", why);
	CHECK(p.n_firecracker_names == 1 && strcmp(p.firecracker_names[0], "firecracker") == 0,
	      "default name");

	CHECK(policy_api_sock_allowed(&p, "/run/vms/a/api.sock"), "inside");
	CHECK(!policy_api_sock_allowed(&p, "/run/vms"), "the root itself is no socket");
	CHECK(!policy_api_sock_allowed(&p, "/run/vmsx/a"), "sibling");
	CHECK(!policy_api_sock_allowed(&p, "/run/vms/../x"), "escape");
	CHECK(policy_tap_name_allowed(&p, "bgt0") && !policy_tap_name_allowed(&p, "eth0"), "tap");
	CHECK(!policy_tap_name_allowed(&p, "bgt0123456789abcdef"), "over-long tap name");
	CHECK(policy_dm_name_allowed(&p, "banger-vm1") && !policy_dm_name_allowed(&p, "banger-a/b"),
	      "dm");
	CHECK(policy_loop_file_allowed(&p, "/srv/images/a.img") &&
		  !policy_loop_file_allowed(&p, "/srv/imagesX/a.img"),
	      "loop");

	/* The flags bangerd passes parse back to the same policy. */
	const char *argv[POLICY_MAX_ARGS + 1];
	size_t n = policy_to_args(&p, argv, POLICY_MAX_ARGS);
	CHECK(n > 0 && argv[n] == NULL, "args");
	policy_init(&q);
	for (size_t i = 0; i < n; i += 2) {
		const char *flag = argv[i], *v = argv[i + 1];
		int r = strcmp(flag, "--tap-prefix") == 0	? policy_set_tap_prefix(&q, v)
			: strcmp(flag, "--dm-prefix") == 0	? policy_set_dm_prefix(&q, v)
			: strcmp(flag, "--dm-uuid-prefix") == 0 ? policy_set_dm_uuid_prefix(&q, v)
			: strcmp(flag, "--loop-root") == 0	? policy_add_loop_root(&q, v)
			: strcmp(flag, "--api-sock-root") == 0	? policy_add_api_sock_root(&q, v)
			: strcmp(flag, "--firecracker-name") == 0
			    ? policy_add_firecracker_name(&q, v)
			    : -EINVAL;
		CHECK(r == 0, "flag %s", flag);
	}
	CHECK(policy_equal(&p, &q), "round trip");
	return 0;
}
