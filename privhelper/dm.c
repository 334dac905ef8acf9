/*
 * Device-mapper teardown with libdevmapper. Removes a DM device only when
 * its name carries the policy's DM prefix and the uuid the kernel reports
 * for it carries the DM uuid prefix; the remove then names the device by
 * that uuid, so a rename between the check and the remove cannot redirect
 * it. A busy device gets a bounded number of retries, never an open-ended
 * wait, and never a forced (deferred or suspended) removal. libdevmapper's
 * own messages go to the debug log: stderr carries the audit stream.
 */
#include <assert.h>
#include <errno.h>
#include <libdevmapper.h>
#include <linux/dm-ioctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "path.h"
#include "policy.h"
#include "teardown.h"

static_assert(PS_DM_NAME_MAX == DM_NAME_LEN && PS_DM_UUID_MAX == DM_UUID_LEN,
	      "the wire's DM fields are the kernel's");

#define DM_CONTROL_PATH "/dev/mapper/control"
#define DM_MODULE_PATH	"/sys/module/dm_mod"

/*
 * A DM device still held open (a process on its way out, a udev probe)
 * usually lets go within moments. Bound: DM_REMOVE_RETRIES attempts,
 * DM_REMOVE_RETRY_DELAY_MS apart, so about 1 s per device before it is
 * reported busy and left standing; the helper answers one request at a
 * time and must not stall on one stuck device.
 */
#define DM_REMOVE_RETRIES	 10
#define DM_REMOVE_RETRY_DELAY_MS 100

static void dm_task_destroyp(struct dm_task **t)
{
	if (*t)
		dm_task_destroy(*t);
}

_printf_(5, 6) static void dm_log_to_debug(int level, const char *file, int line,
					   int dm_errno_or_class, const char *f, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, f);
	vsnprintf(msg, sizeof(msg), f, ap);
	va_end(ap);
	log_debug("libdevmapper %s:%d level %d class %d: %s", file, line, level, dm_errno_or_class,
		  msg);
}

static int dm_task_errno(struct dm_task *t)
{
	int e = dm_task_get_errno(t);
	return e > 0 ? -e : -EIO;
}

bool dm_name_check(const struct ps_policy *p, struct ps_teardown_result *r)
{
	size_t len = strnlen(r->name, DM_NAME_LEN);
	enum ps_reason reason;

	if (len == 0 || len >= DM_NAME_LEN || strchr(r->name, '/') || strcmp(r->name, ".") == 0 ||
	    strcmp(r->name, "..") == 0)
		reason = PS_REASON_BAD_NAME;
	else if (!policy_dm_name_allowed(p, r->name))
		reason = PS_REASON_MISSING_PREFIX;
	else
		return true;
	teardown_set(r, PS_TEARDOWN_REFUSED, reason, 0);
	return false;
}

/* Without a control node and without the module, no DM device can exist. */
static bool dm_subsystem_present(void)
{
	return access(DM_CONTROL_PATH, F_OK) == 0 || access(DM_MODULE_PATH, F_OK) == 0;
}

/*
 * DM_DEVICE_INFO by name (or, with name NULL, by uuid). Returns 1 when the
 * device exists (its uuid copied to uuid_out when given), 0 when it does
 * not, or -errno.
 */
static int dm_device_info(const char *name, const char *uuid, struct dm_info *info, char *uuid_out,
			  size_t uuid_size)
{
	_cleanup_(dm_task_destroyp) struct dm_task *t = dm_task_create(DM_DEVICE_INFO);

	if (!t)
		return -ENOMEM;
	if (!(name ? dm_task_set_name(t, name) : dm_task_set_uuid(t, uuid)))
		return -EINVAL;
	if (!dm_task_run(t))
		return dm_task_errno(t) == -ENXIO ? 0 : dm_task_errno(t);
	if (!dm_task_get_info(t, info))
		return -EIO;
	if (!info->exists)
		return 0;
	const char *u = dm_task_get_uuid(t);
	if (uuid_out && field_set(uuid_out, uuid_size, u ? u : "") < 0)
		return -ENAMETOOLONG;
	return 1;
}

/* One DM_DEVICE_REMOVE, udev-synchronised (libdevmapper falls back when udev is not running). */
static int dm_remove_once(const char *uuid)
{
	_cleanup_(dm_task_destroyp) struct dm_task *t = dm_task_create(DM_DEVICE_REMOVE);
	uint32_t cookie = 0;
	int r = 0;

	if (!t)
		return -ENOMEM;
	if (!dm_task_set_uuid(t, uuid) || !dm_task_set_cookie(t, &cookie, 0))
		return -EINVAL;
	if (!dm_task_run(t))
		r = dm_task_errno(t);
	/* Also after a failure: the wait is what releases the cookie. */
	(void)dm_udev_wait(cookie);
	return r;
}

static void dm_remove_retry(const char *uuid, struct ps_teardown_result *r)
{
	struct dm_info info;

	for (int attempt = 0; attempt < DM_REMOVE_RETRIES; attempt++) {
		if (attempt > 0)
			sleep_ms(DM_REMOVE_RETRY_DELAY_MS);
		int err = dm_device_info(NULL, uuid, &info, NULL, 0);
		if (err > 0 && info.open_count > 0)
			continue;
		if (err > 0)
			err = dm_remove_once(uuid);
		else if (err == 0)
			err = -ENXIO;
		if (err == 0)
			teardown_set(r, PS_TEARDOWN_REMOVED, 0, 0);
		else if (err == -ENXIO)
			teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
		else if (err != -EBUSY)
			teardown_set(r, PS_TEARDOWN_FAILED, 0, err);
		if (err != -EBUSY)
			return;
	}
	teardown_set(r, PS_TEARDOWN_BUSY, 0, -EBUSY);
}

void dm_teardown(const struct ps_policy *p, struct ps_teardown_result *r)
{
	struct dm_info info;
	char uuid[DM_UUID_LEN];

	if (!dm_subsystem_present()) {
		teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
		return;
	}
	dm_log_with_errno_init(dm_log_to_debug);
	/* The name checked against the policy is the name the kernel sees. */
	dm_set_name_mangling_mode(DM_STRING_MANGLING_NONE);
	int exists = dm_device_info(r->name, NULL, &info, uuid, sizeof(uuid));
	if (exists < 0)
		teardown_set(r, PS_TEARDOWN_FAILED, 0, exists);
	else if (exists == 0)
		teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
	else if (!policy_dm_uuid_allowed(p, uuid))
		teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_MISSING_UUID_PREFIX, 0);
	else
		dm_remove_retry(uuid, r);
	if (r->status == PS_TEARDOWN_REMOVED)
		log_debug("dm %s (uuid %s) removed", r->name, uuid);
}
