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

/* A name prefix must be non-empty (an empty one would allow everything) and printable. */
static int set_prefix(char *field, size_t size, const char *prefix)
{
	if (prefix[0] == '\0')
		return -EINVAL;
	for (const char *s = prefix; *s; s++)
		if (*s <= ' ' || *s > '~' || *s == '/')
			return -EINVAL;
	return field_set(field, size, prefix);
}

int policy_set_tap_prefix(struct ps_policy *p, const char *prefix)
{
	/* Leave room for at least one character after the prefix within IFNAMSIZ - 1. */
	if (strlen(prefix) >= PS_IFNAME_MAX - 1)
		return -ENAMETOOLONG;
	return set_prefix(p->tap_prefix, sizeof(p->tap_prefix), prefix);
}

int policy_set_dm_prefix(struct ps_policy *p, const char *prefix)
{
	return set_prefix(p->dm_prefix, sizeof(p->dm_prefix), prefix);
}

int policy_set_dm_uuid_prefix(struct ps_policy *p, const char *prefix)
{
	return set_prefix(p->dm_uuid_prefix, sizeof(p->dm_uuid_prefix), prefix);
}

static int add_root(char (*roots)[PS_PATH_MAX], uint32_t *n, const char *root)
{
	if (!path_is_normal_absolute(root) || strcmp(root, "/") == 0)
		return -EINVAL; /* "/" as a root would make the policy a no-op */
	for (uint32_t i = 0; i < *n; i++)
		if (strcmp(roots[i], root) == 0)
			return 0;
	if (*n >= PS_POLICY_MAX_ROOTS)
		return -E2BIG;
	int r = field_set(roots[*n], PS_PATH_MAX, root);
	if (r < 0)
		return r;
	(*n)++;
	return 0;
}

int policy_add_loop_root(struct ps_policy *p, const char *root)
{
	return add_root(p->loop_roots, &p->n_loop_roots, root);
}

int policy_add_api_sock_root(struct ps_policy *p, const char *root)
{
	return add_root(p->api_sock_roots, &p->n_api_sock_roots, root);
}

int policy_add_firecracker_name(struct ps_policy *p, const char *name)
{
	if (name[0] == '\0' || strchr(name, '/'))
		return -EINVAL;
	for (uint32_t i = 0; i < p->n_firecracker_names; i++)
		if (strcmp(p->firecracker_names[i], name) == 0)
			return 0;
	if (p->n_firecracker_names >= PS_POLICY_MAX_NAMES)
		return -E2BIG;
	int r = field_set(p->firecracker_names[p->n_firecracker_names], PS_EXE_NAME_MAX, name);
	if (r < 0)
		return r;
	p->n_firecracker_names++;
	return 0;
}

int policy_finish(struct ps_policy *p, char *why, size_t why_size)
{
	if (p->n_firecracker_names == 0)
		policy_add_firecracker_name(p, POLICY_DEFAULT_FIRECRACKER_NAME);
	const char *missing = NULL;
	if (p->tap_prefix[0] == '\0')
		missing = "tap prefix";
	else if (p->dm_prefix[0] == '\0')
		missing = "dm prefix";
	else if (p->dm_uuid_prefix[0] == '\0')
		missing = "dm uuid prefix";
	else if (p->n_loop_roots == 0)
		missing = "loop root";
	else if (p->n_api_sock_roots == 0)
		missing = "api socket root";
	if (missing) {
		snprintf(why, why_size, "policy has no %s", missing);
		return -EINVAL;
	}
	return 0;
}

#define SINGLE(field)                                                                              \
	offsetof(struct ps_policy, field), sizeof(((struct ps_policy *)0)->field), 0, 0
#define LIST(field, count)                                                                         \
	offsetof(struct ps_policy, field), sizeof(((struct ps_policy *)0)->field),                 \
	    sizeof(((struct ps_policy *)0)->field[0]), offsetof(struct ps_policy, count)

const struct policy_flag policy_flags[POLICY_N_FLAGS] = {
    {"--tap-prefix", "PREFIX", "tap devices banger may delete", policy_set_tap_prefix,
     SINGLE(tap_prefix)},
    {"--dm-prefix", "PREFIX", "DM names banger may remove", policy_set_dm_prefix,
     SINGLE(dm_prefix)},
    {"--dm-uuid-prefix", "PREFIX", "DM uuids banger may remove", policy_set_dm_uuid_prefix,
     SINGLE(dm_uuid_prefix)},
    {"--loop-root", "DIR", "loop backing files must lie below (repeatable)", policy_add_loop_root,
     LIST(loop_roots, n_loop_roots)},
    {"--api-sock-root", "DIR", "firecracker api sockets must lie below (repeatable)",
     policy_add_api_sock_root, LIST(api_sock_roots, n_api_sock_roots)},
    {"--firecracker-name", "NAME", "executable names that count as firecracker (repeatable)",
     policy_add_firecracker_name, LIST(firecracker_names, n_firecracker_names)},
};

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
