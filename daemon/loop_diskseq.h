/*
 * Which attach of a loop device a VM reported (DESIGN §2, §4). Loop
 * numbers are reused the moment they are free, so "/dev/loop5" names a
 * different disk after every detach and attach; the kernel's disk
 * sequence number (diskseq, Linux >= 5.15) names one attach and is never
 * reused. bangerd reads it when SetHandles reports a loop and records it
 * with the handles; a teardown then carries it to the helper, which
 * compares it with the device's own before it detaches anything.
 *
 * Read from sysfs, which needs no privilege; never opens the device.
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
