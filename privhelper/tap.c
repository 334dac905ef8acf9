/*
 * Tap teardown over rtnetlink (libnl-route-3). Removes a link only when
 * its name carries the policy's tap prefix AND the kernel says it is a tun
 * device in TAP mode: a veth, bridge or tun-mode device that happens to
 * carry the prefix is refused, never deleted. The delete names the link by
 * the ifindex that was checked, so a name that changes hands between the
 * look-up and the delete cannot redirect it.
 *
 * A tap name is free again the moment its link is gone, so a stale
 * record's name may belong to another VM's tap by now, one that carries
 * the prefix and is a tap too. When the request carries the ifindex
 * bangerd recorded for the tap, the link the name leads to must have that
 * one (the kernel does not hand a number out again until its counter
 * wraps); another means the link we were asked about is gone, and the tap
 * is reported absent and left alone. The delete then names that very
 * ifindex. Without one (records of an older bangerd, a planned tap) the
 * prefix and kind checks alone decide, as before.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "policy.h"
#include "procfs.h"
#include "teardown.h"

#define TAP_LINK_KIND "tun" /* IFLA_INFO_KIND of tun and tap devices alike */

static void nl_socket_freep(struct nl_sock **sk)
{
	if (*sk)
		nl_socket_free(*sk);
}

static void rtnl_link_putp(struct rtnl_link **link)
{
	if (*link)
		rtnl_link_put(*link);
}

/* libnl answers with its own codes (NLE_*); the wire carries errnos. Others are EIO. */
static int nlerr_to_errno(int nlerr)
{
	static const int errnos[][2] = {
	    {NLE_OBJ_NOTFOUND, ENODEV}, {NLE_NODEV, ENODEV},	     {NLE_PERM, EPERM},
	    {NLE_NOACCESS, EACCES},	{NLE_NOMEM, ENOMEM},	     {NLE_BUSY, EBUSY},
	    {NLE_INVAL, EINVAL},	{NLE_OPNOTSUPP, EOPNOTSUPP},
	};
	for (size_t i = 0; i < ELEMENTSOF(errnos); i++)
		if (errnos[i][0] == abs(nlerr))
			return -errnos[i][1];
	return -EIO;
}

bool tap_name_check(const struct ps_policy *p, struct ps_teardown_result *r)
{
	if (policy_tap_name_allowed(p, r->name))
		return true;
	teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_MISSING_PREFIX, 0);
	return false;
}

/*
 * Whether the link named name is still ifindex, read from sysfs (libnl 3.7
 * does not decode IFLA_TUN_TYPE). Returns 0, -ESTALE when the name now
 * names another link, or -errno (-ENOENT: no such link any more).
 */
static int tap_sysfs_open(const char *name, int ifindex, int *dirfd)
{
	char path[64], value[32];

	snprintf(path, sizeof(path), "/sys/class/net/%s", name);
	_cleanup_close_ int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	int r = read_line_at(fd, "ifindex", value, sizeof(value));
	if (r < 0)
		return r;
	if (strtol(value, NULL, 10) != ifindex)
		return -ESTALE;
	*dirfd = TAKE_FD(fd);
	return 0;
}

/* 1 when the link is a tun device in TAP mode, 0 when not, or -errno. */
static int tap_is_tap(const char *name, int ifindex, const char *kind)
{
	char flags[32];
	_cleanup_close_ int dirfd = -1;

	if (!kind || strcmp(kind, TAP_LINK_KIND) != 0)
		return 0;
	int r = tap_sysfs_open(name, ifindex, &dirfd);
	if (r < 0)
		return r;
	r = read_line_at(dirfd, "tun_flags", flags, sizeof(flags));
	if (r < 0)
		return r;
	return (strtoul(flags, NULL, 16) & IFF_TAP) != 0;
}

static int tap_delete(struct nl_sock *sk, const char *name, int ifindex)
{
	_cleanup_(rtnl_link_putp) struct rtnl_link *victim = rtnl_link_alloc();
	_cleanup_close_ int dirfd = -1;

	if (!victim)
		return -ENOMEM;
	/* Last look right before the delete: the name must still lead to the link we checked. */
	int r = tap_sysfs_open(name, ifindex, &dirfd);
	if (r < 0)
		return r;
	rtnl_link_set_ifindex(victim, ifindex);
	r = rtnl_link_delete(sk, victim);
	return r < 0 ? nlerr_to_errno(r) : 0;
}

/* The end state a delete (or a failed look-up) leaves: gone already counts as done. */
static void tap_set_outcome(struct ps_teardown_result *r, int err)
{
	if (err == 0)
		teardown_set(r, PS_TEARDOWN_REMOVED, 0, 0);
	else if (err == -ENODEV || err == -ENOENT)
		teardown_set(r, PS_TEARDOWN_ABSENT, 0, 0);
	else
		teardown_set(r, PS_TEARDOWN_FAILED, 0, err);
}

void tap_teardown(const struct ps_policy *p, struct ps_teardown_result *r)
{
	(void)p; /* the prefix was checked on the name; here the kernel's facts are */
	_cleanup_(nl_socket_freep) struct nl_sock *sk = nl_socket_alloc();
	_cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;

	int err = sk ? nl_connect(sk, NETLINK_ROUTE) : -NLE_NOMEM;
	if (err >= 0)
		err = rtnl_link_get_kernel(sk, 0, r->name, &link);
	if (err < 0) {
		tap_set_outcome(r, nlerr_to_errno(err));
		return;
	}
	int ifindex = rtnl_link_get_ifindex(link);
	if (r->ifindex != 0) {
		r->ifindex_found = (uint32_t)ifindex;
		if (r->ifindex_found != r->ifindex) {
			teardown_set(r, PS_TEARDOWN_ABSENT, PS_REASON_IFINDEX_CHANGED, 0);
			return;
		}
	}
	int is_tap = tap_is_tap(r->name, ifindex, rtnl_link_get_type(link));
	if (is_tap == 0) {
		teardown_set(r, PS_TEARDOWN_REFUSED, PS_REASON_WRONG_LINK_KIND, 0);
		return;
	}
	err = is_tap < 0 ? is_tap : tap_delete(sk, r->name, ifindex);
	if (err == 0)
		log_debug("tap %s (ifindex %d) deleted", r->name, ifindex);
	tap_set_outcome(r, err);
}
