/* See privs.h. */
#include "privs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"

int privs_read_self(struct privs_status *st)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	unsigned seen = 0;

	if (!f)
		return negative_errno();
	memset(st, 0, sizeof(*st));
	while (fgets(line, sizeof(line), f)) {
		unsigned nnp;
		if (sscanf(line, "CapInh: %" SCNx64, &st->cap_inh) == 1 ||
		    sscanf(line, "CapPrm: %" SCNx64, &st->cap_prm) == 1 ||
		    sscanf(line, "CapEff: %" SCNx64, &st->cap_eff) == 1 ||
		    sscanf(line, "CapBnd: %" SCNx64, &st->cap_bnd) == 1 ||
		    sscanf(line, "CapAmb: %" SCNx64, &st->cap_amb) == 1)
			seen++;
		else if (sscanf(line, "NoNewPrivs: %u", &nnp) == 1) {
			st->no_new_privs = nnp != 0;
			seen++;
		} else if (sscanf(line, "Uid: %u %u %u %u", &st->uid[0], &st->uid[1], &st->uid[2],
				  &st->uid[3]) == 4 ||
			   sscanf(line, "Gid: %u %u %u %u", &st->gid[0], &st->gid[1], &st->gid[2],
				  &st->gid[3]) == 4)
			seen++;
	}
	return seen == 8 ? 0 : -EPROTO;
}
