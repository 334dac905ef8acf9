/*
 * reconcile.c: DESIGN §3. After every start and on demand: one SCAN for
 * every record, then each VM kept, adopted, torn down or left unknown.
 */
#pragma once

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "privsep.h"
#include "vm.h"

struct daemon;

/* Report actions of a reconcile, per VM: kept, torn_down, failed, unknown, clean, retained. */
#define RECONCILE_ACTIONS 6

/* What became of each VM; the first RECONCILE_ACTIONS are a report's. */
enum rc_action {
	RC_KEPT,
	RC_TORN_DOWN,
	RC_FAILED,
	RC_UNKNOWN,
	RC_CLEAN,
	RC_RETAINED,
	RC_TEAR_DOWN, /* decided dead, teardown not sent yet: never in a report */
};

/* One VM of a reconcile, as decided. */
struct rc_vm {
	char id[VM_ID_MAX + 1];
	enum rc_action action;
	int32_t pid;
	const char *reason;
	char why[128];			   /* a reason made for this VM (reason points here) */
	struct ps_teardown_reply *results; /* after a teardown, or NULL */
	bool scanned;			   /* its api socket is in the SCAN */
};

/* What a reconcile found; it lives as long as the done callback runs. */
struct reconcile_report {
	const struct rc_vm *vms; /* sorted by id */
	size_t n_vms;
	const struct ps_scan_entry *orphans; /* processes under a socket that no record owns */
	size_t n_orphans;
};

/*
 * done runs once every VM is decided, with the report (NULL when err < 0:
 * the helper failed it, and why names the operation and wait).
 */
typedef void (*reconcile_done_fn)(struct daemon *d, int err, const char *why,
				  const struct reconcile_report *report, void *userdata);
int reconcile_start(struct daemon *d, const struct ps_caller *caller, reconcile_done_fn done,
		    void *userdata);
/* The name of a report action (0 to RECONCILE_ACTIONS - 1): "kept", "torn_down", ... */
const char *reconcile_action_name(size_t action);
