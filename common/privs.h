/*
 * Reading back what the kernel says about this process's privileges, so
 * that both daemons check the result of a privilege change instead of
 * trusting the calls that made it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct privs_status {
	uint64_t cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb;
	bool no_new_privs;
	uint32_t uid[4], gid[4]; /* real, effective, saved, filesystem */
};

/* Parse /proc/self/status. Returns 0 or -errno. */
int privs_read_self(struct privs_status *st);
