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
	CHECK(policy_finish(&p, why, sizeof(why)) < 0 && strstr(why, "--tap-prefix"), "incomplete");
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

	/* The flags bangerd passes parse back, through the same table, to the same policy. */
	const char *argv[POLICY_MAX_ARGS + 1];
	size_t n = policy_to_args(&p, argv, POLICY_MAX_ARGS);
	CHECK(n == 2 * 6 && argv[n] == NULL, "args: %zu", n);
	policy_init(&q);
	for (size_t i = 0; i < n; i += 2) {
		const struct policy_flag *f = NULL;
		for (size_t k = 0; k < POLICY_N_FLAGS; k++)
			if (strcmp(policy_flags[k].flag, argv[i]) == 0)
				f = &policy_flags[k];
		CHECK(f && policy_flag_set(f, &q, argv[i + 1]) == 0, "flag %s %s", argv[i],
		      argv[i + 1]);
	}
	CHECK(policy_equal(&p, &q), "round trip");

	/* The config file's keys are the flags with '_' for '-'; a list can be emptied. */
	static const char *const keys[POLICY_N_FLAGS] = {"tap_prefix",	   "dm_prefix",
							 "dm_uuid_prefix", "loop_root",
							 "api_sock_root",  "firecracker_name"};
	for (size_t k = 0; k < POLICY_N_FLAGS; k++) {
		CHECK(policy_flag_is_key(&policy_flags[k], keys[k]), "key %s", keys[k]);
		CHECK(!policy_flag_is_key(&policy_flags[k], "loop_roo") &&
			  !policy_flag_is_key(&policy_flags[k], "firecracker_names"),
		      "prefixes of keys are no keys");
	}
	CHECK(policy_flag_is_key(&policy_flags[3], "loop_root") &&
		  !policy_flag_is_key(&policy_flags[3], "loop-root"),
	      "a file key is spelt with '_'");
	policy_flag_clear(&policy_flags[3], &q);
	CHECK(q.n_loop_roots == 0 && q.loop_roots[0][0] == '\0', "list cleared");
	policy_flag_clear(&policy_flags[0], &q);
	CHECK(strcmp(q.tap_prefix, "bgt") == 0, "a single value is not cleared");
	return 0;
}
