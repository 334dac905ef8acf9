/*
 * bangerd's side of the policy flags (policy.h): its setters by name,
 * reading its configuration keys and building the helper's command line
 * from policy_flags[]. Kept apart from policy.c so that the helper, which
 * only parses the flags, does not link it.
 */
#include <stdint.h>
#include <string.h>

#include "policy.h"

int policy_set_tap_prefix(struct ps_policy *p, const char *prefix)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_TAP_PREFIX], p, prefix);
}

int policy_set_dm_prefix(struct ps_policy *p, const char *prefix)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_DM_PREFIX], p, prefix);
}

int policy_set_dm_uuid_prefix(struct ps_policy *p, const char *prefix)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_DM_UUID_PREFIX], p, prefix);
}

int policy_add_loop_root(struct ps_policy *p, const char *root)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_LOOP_ROOT], p, root);
}

int policy_add_api_sock_root(struct ps_policy *p, const char *root)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_API_SOCK_ROOT], p, root);
}

int policy_add_firecracker_name(struct ps_policy *p, const char *name)
{
	return policy_flag_set(&policy_flags[POLICY_FLAG_FIRECRACKER_NAME], p, name);
}

bool policy_equal(const struct ps_policy *a, const struct ps_policy *b)
{
	/* Fields are zero-filled after their terminators, so bytes compare as values. */
	return memcmp(a, b, sizeof(*a)) == 0;
}

void policy_flag_clear(const struct policy_flag *f, struct ps_policy *p)
{
	if (f->entry_size == 0)
		return;
	memset((char *)p + f->offset, 0, f->size);
	memset((char *)p + f->count_offset, 0, sizeof(uint32_t));
}

bool policy_flag_is_key(const struct policy_flag *f, const char *key)
{
	const char *flag = f->flag + 2;
	for (; *flag && *key; flag++, key++)
		if (*key != (*flag == '-' ? '_' : *flag))
			return false;
	return *flag == *key;
}

size_t policy_to_args(const struct ps_policy *p, const char **argv, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < POLICY_N_FLAGS; i++) {
		const struct policy_flag *f = &policy_flags[i];
		const char *base = (const char *)p + f->offset;
		uint32_t count = 1;
		if (f->entry_size)
			memcpy(&count, (const char *)p + f->count_offset, sizeof(count));
		for (uint32_t k = 0; k < count && n + 2 < max; k++) {
			argv[n++] = f->flag;
			argv[n++] = base + k * f->entry_size;
		}
	}
	argv[n] = NULL;
	return n;
}
