/* See vm.h. */
#include "vm.h"

#include <errno.h>
#include <string.h>

#include "macro.h"

static const char *const state_names[] = {
    [VM_STARTING] = "starting",
    [VM_RUNNING] = "running",
    [VM_STOPPED] = "stopped",
};

static const char *const on_exit_names[] = {
    [VM_ON_EXIT_TEARDOWN] = "teardown",
    [VM_ON_EXIT_KEEP] = "keep",
};

const char *vm_state_name(enum vm_state s)
{
	return (size_t)s < ELEMENTSOF(state_names) ? state_names[s] : "unknown";
}

int vm_state_from_name(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(state_names); i++)
		if (strcmp(state_names[i], name) == 0)
			return (int)i;
	return -EINVAL;
}

const char *vm_on_exit_name(enum vm_on_exit e)
{
	return (size_t)e < ELEMENTSOF(on_exit_names) ? on_exit_names[e] : "unknown";
}

int vm_on_exit_from_name(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(on_exit_names); i++)
		if (strcmp(on_exit_names[i], name) == 0)
			return (int)i;
	return -EINVAL;
}

static bool id_char(char c, bool first)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '_' || c == '.' || c == '-');
}

bool vm_id_is_valid(const char *id, const char **why)
{
	size_t n = strlen(id);
	const char *reason = NULL;
	if (n == 0)
		reason = "empty";
	else if (n > VM_ID_MAX)
		reason = "longer than 64 characters";
	else if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
		reason = "'.' and '..' are not ids";
	else
		for (size_t i = 0; i < n && !reason; i++)
			if (!id_char(id[i], i == 0))
				reason = i == 0
					     ? "must start with a letter or digit"
					     : "only letters, digits, '_', '.' and '-' are allowed";
	if (why)
		*why = reason;
	return reason == NULL;
}

void vm_record_mirror_handles(struct vm_record *r, const struct vm_handles *h)
{
	memcpy(r->mirror.tap, h->tap, sizeof(r->mirror.tap));
	r->mirror.n_loops = h->n_loops;
	memcpy(r->mirror.loops, h->loops, sizeof(r->mirror.loops));
	r->mirror.n_dm = h->n_dm;
	memcpy(r->mirror.dm, h->dm, sizeof(r->mirror.dm));
}
