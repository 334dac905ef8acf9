/* See privdrop.h. */
#include "privdrop.h"

#include <cap-ng.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "privs.h"

int privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, char *why, size_t why_size)
{
	errno = 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		snprintf(why, why_size, "user '%s' not found%s%s", user, errno ? ": " : "",
			 errno ? strerror(errno) : "");
		return -ENOENT;
	}
	if (pw->pw_uid == 0 || pw->pw_gid == 0) {
		snprintf(why, why_size, "user '%s' has uid or gid 0: bangerd must not run as root",
			 user);
		return -EPERM;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

static int check_dropped(uid_t uid, gid_t gid, char *why, size_t why_size)
{
	struct privs_status st;
	if (privs_read_self(&st) < 0) {
		snprintf(why, why_size, "cannot read back /proc/self/status");
		return -EPROTO;
	}
	for (int i = 0; i < 4; i++)
		if (st.uid[i] != uid || st.gid[i] != gid) {
			snprintf(why, why_size, "uid/gid not fully changed");
			return -EPERM;
		}
	if (st.cap_inh || st.cap_prm || st.cap_eff || st.cap_bnd || st.cap_amb ||
	    !st.no_new_privs) {
		snprintf(why, why_size,
			 "capabilities remain (prm %llx eff %llx bnd %llx) or no_new_privs unset",
			 (unsigned long long)st.cap_prm, (unsigned long long)st.cap_eff,
			 (unsigned long long)st.cap_bnd);
		return -EPERM;
	}
	if (getgroups(0, NULL) != 0) {
		snprintf(why, why_size, "supplementary groups remain");
		return -EPERM;
	}
	/* The real test: root must be out of reach. */
	if (setuid(0) == 0 || setgid(0) == 0 || errno != EPERM) {
		snprintf(why, why_size, "could regain root after dropping privileges");
		return -EPERM;
	}
	return 0;
}

int privdrop_to(uid_t uid, gid_t gid, char *why, size_t why_size)
{
	capng_clear(CAPNG_SELECT_ALL);
	int r = capng_change_id((int)uid, (int)gid, CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
	if (r < 0) {
		snprintf(why, why_size, "capng_change_id(%u, %u) failed with %d", uid, gid, r);
		return -EPERM;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(why, why_size, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return negative_errno();
	}
	return check_dropped(uid, gid, why, why_size);
}

int privdrop_unprivileged(char *why, size_t why_size)
{
	/* Under bangerd.service there is nothing to drop: no capset(2) then (the unit forbids it).
	 */
	capng_get_caps_process();
	if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE) {
		capng_clear(CAPNG_SELECT_CAPS);
		if (capng_apply(CAPNG_SELECT_CAPS) < 0) {
			snprintf(why, why_size, "dropping capabilities failed");
			return -EPERM;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(why, why_size, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return negative_errno();
	}
	return 0;
}
