/* See policy.h. */
#include "policy.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "path.h"

void policy_init(struct ps_policy *p)
{
	memset(p, 0, sizeof(*p));
}

#define SINGLE(field, kind)                                                                        \
	kind, offsetof(struct ps_policy, field), sizeof(((struct ps_policy *)0)->field), 0, 0
#define LIST(field, count, kind)                                                                   \
	kind, offsetof(struct ps_policy, field), sizeof(((struct ps_policy *)0)->field),           \
	    sizeof(((struct ps_policy *)0)->field[0]), offsetof(struct ps_policy, count)

/* In the order of the POLICY_FLAG_* names (policy.h). */
const struct policy_flag policy_flags[POLICY_N_FLAGS] = {
    {"--tap-prefix", "PREFIX", "tap devices banger may delete", SINGLE(tap_prefix, POLICY_PREFIX)},
    {"--dm-prefix", "PREFIX", "DM names banger may remove", SINGLE(dm_prefix, POLICY_PREFIX)},
    {"--dm-uuid-prefix", "PREFIX", "DM uuids banger may remove",
     SINGLE(dm_uuid_prefix, POLICY_PREFIX)},
    {"--loop-root", "DIR", "loop backing files must lie below (repeatable)",
     LIST(loop_roots, n_loop_roots, POLICY_ROOT)},
    {"--api-sock-root", "DIR", "firecracker api sockets must lie below (repeatable)",
     LIST(api_sock_roots, n_api_sock_roots, POLICY_ROOT)},
    {"--firecracker-name", "NAME", "executable names that count as firecracker (repeatable)",
     LIST(firecracker_names, n_firecracker_names, POLICY_NAME)},
};

/* May value be a setting of this kind, in a field of size bytes? 0 or -errno. */
static int check_value(enum policy_kind kind, const char *value, size_t size)
{
	size_t len = strlen(value);

	if (kind == POLICY_ROOT) /* "/" as a root would make the policy a no-op */
		return path_is_normal_absolute(value) && strcmp(value, "/") != 0 ? 0 : -EINVAL;
	if (kind == POLICY_NAME)
		return len > 0 && !strchr(value, '/') ? 0 : -EINVAL;
	/* A prefix leaves room for a name after it, and an empty one would allow everything. */
	if (len + 2 > size)
		return -ENAMETOOLONG;
	for (const char *s = value; *s; s++)
		if (*s <= ' ' || *s > '~' || *s == '/')
			return -EINVAL;
	return len > 0 ? 0 : -EINVAL;
}

int policy_flag_set(const struct policy_flag *f, struct ps_policy *p, const char *value)
{
	char *field = (char *)p + f->offset;
	size_t size = f->entry_size ? f->entry_size : f->size;
	uint32_t n;

	int r = check_value(f->kind, value, size);
	if (r < 0 || f->entry_size == 0)
		return r < 0 ? r : field_set(field, size, value);
	memcpy(&n, (char *)p + f->count_offset, sizeof(n));
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(field + i * size, value) == 0)
			return 0; /* given twice: one entry */
	if (n >= f->size / size)
		return -E2BIG;
	r = field_set(field + n * size, size, value);
	n += r == 0;
	memcpy((char *)p + f->count_offset, &n, sizeof(n));
	return r;
}

int policy_finish(struct ps_policy *p, char *why, size_t why_size)
{
	if (p->n_firecracker_names == 0) {
		field_set(p->firecracker_names[0], PS_EXE_NAME_MAX,
			  POLICY_DEFAULT_FIRECRACKER_NAME);
		p->n_firecracker_names = 1;
	}
	/* A setting is missing when its (first) string is empty. */
	for (size_t i = 0; i < POLICY_N_FLAGS; i++) {
		if (((const char *)p + policy_flags[i].offset)[0] == '\0') {
			snprintf(why, why_size, "policy has no %s", policy_flags[i].flag);
			return -EINVAL;
		}
	}
	return 0;
}

static const char *root_of(const char (*roots)[PS_PATH_MAX], uint32_t n, const char *path)
{
	for (uint32_t i = 0; i < n; i++)
		if (path_is_under(path, roots[i]) && strcmp(path, roots[i]) != 0)
			return roots[i];
	return NULL;
}

const char *policy_api_sock_root(const struct ps_policy *p, const char *path)
{
	return root_of(p->api_sock_roots, p->n_api_sock_roots, path);
}

const char *policy_loop_root(const struct ps_policy *p, const char *path)
{
	return root_of(p->loop_roots, p->n_loop_roots, path);
}

bool policy_api_sock_allowed(const struct ps_policy *p, const char *path)
{
	return policy_api_sock_root(p, path) != NULL;
}

bool policy_loop_file_allowed(const struct ps_policy *p, const char *path)
{
	return policy_loop_root(p, path) != NULL;
}

bool policy_firecracker_name_allowed(const struct ps_policy *p, const char *exe_basename)
{
	for (uint32_t i = 0; i < p->n_firecracker_names; i++)
		if (strcmp(p->firecracker_names[i], exe_basename) == 0)
			return true;
	return false;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return prefix[0] != '\0' && strncmp(s, prefix, strlen(prefix)) == 0;
}

bool policy_tap_name_allowed(const struct ps_policy *p, const char *ifname)
{
	return has_prefix(ifname, p->tap_prefix) && strlen(ifname) < PS_IFNAME_MAX &&
	       !strchr(ifname, '/');
}

bool policy_dm_name_allowed(const struct ps_policy *p, const char *name)
{
	return has_prefix(name, p->dm_prefix) && !strchr(name, '/');
}

bool policy_dm_uuid_allowed(const struct ps_policy *p, const char *uuid)
{
	return has_prefix(uuid, p->dm_uuid_prefix);
}
