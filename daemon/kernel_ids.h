/*
 * Which loop attach and which tap link a VM reported (DESIGN §2, §4): the
 * kernel's numbers for them, read when SetHandles names them.
 *
 * Loops: Loop
 * numbers are reused the moment they are free, so "/dev/loop5" names a
 * different disk after every detach and attach; the kernel's disk
 * sequence number (diskseq, Linux >= 5.15) names one attach and is never
 * reused. bangerd reads it when SetHandles reports a loop and records it
 * with the handles; a teardown then carries it to the helper, which
 * compares it with the device's own before it detaches anything.
 *
 * Taps: a name is free the moment its link is deleted, and the next link
 * created under it is another VM's; the ifindex names one link, and the
 * kernel hands a number out again only after its counter wraps. A teardown
 * carries it, and the helper deletes the link of that ifindex or nothing.
 *
 * Read from sysfs, which needs no privilege; never opens a device.
 */
#pragma once

#include <stdint.h>

/*
 * The diskseq of the attached loop device dev, which must be spelled
 * /dev/loopN (N without sign or leading zero). 0 with *seq set; -EINVAL
 * when dev is not so spelled; -ENXIO when loopN does not exist or has no
 * backing file (a VM cannot be using it); -EAGAIN when it kept being
 * re-attached while we looked; or another -errno from sysfs.
 */
int loop_diskseq_read(const char *dev, uint64_t *seq);

/*
 * The ifindex of the network interface named name (checked by the caller:
 * 1 to 15 printable characters, no '/'). 0 with *ifindex set; -ENXIO when
 * no interface has that name (a VM cannot be using it); or another -errno.
 */
int tap_ifindex_read(const char *name, uint32_t *ifindex);
