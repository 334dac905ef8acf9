/*
 * reconcile.c: DESIGN §3. After every start and on demand: one SCAN for
 * every record, then each VM kept, adopted, torn down or left unknown.
 */
#pragma once

#include <stddef.h>
#include <yajl/yajl_gen.h>

#include "privsep.h"

struct daemon;

/* Report actions of a reconcile, per VM: kept, torn_down, failed, unknown, clean, retained. */
#define RECONCILE_ACTIONS 6

/*
 * done runs once every VM is decided; report is its
 * JSON. err < 0 when the helper failed it (why names the operation and wait).
 */
typedef void (*reconcile_done_fn)(struct daemon *d, int err, const char *why, yajl_gen report,
				  void *userdata);
int reconcile_start(struct daemon *d, const struct ps_caller *caller, reconcile_done_fn done,
		    void *userdata);
/* The name of a report action (0 to RECONCILE_ACTIONS - 1): "kept", "torn_down", ... */
const char *reconcile_action_name(size_t action);
