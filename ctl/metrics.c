/*
 * `bangerctl metrics`: a GetStatus reply in the Prometheus text exposition
 * format (version 0.0.4), for node_exporter's textfile collector or any
 * scraper. Cardinality is bounded by construction: labels take only the
 * fixed names the interface declares (states, teardown results, reconcile
 * actions, method names), never a VM id. A member an older bangerd does not
 * send is left out with its whole family, never printed as 0: absent and
 * zero mean different things to an alert. Never prints a sample it could
 * not read.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomicfile.h"
#include "json.h"
#include "macro.h"
#include "metrics.h"

#define METRICS_FILE_MODE 0644 /* node_exporter reads it as its own user */
#define PATH_DEPTH	  3

/* One sample per family, read from the reply at path (objects, then the member). */
struct scalar_metric {
	const char *name;
	const char *type;
	const char *help;
	const char *path[PATH_DEPTH + 1];
	double scale; /* the reply's unit to the metric's (usec to seconds) */
};

/* One sample per key of an object: label="key". */
struct labelled_metric {
	const char *name;
	const char *type;
	const char *help;
	const char *path[PATH_DEPTH + 1]; /* the object holding the keys */
	const char *label;
	const char *keys[8];
};

static const struct scalar_metric scalars[] = {
    {"banger_uptime_seconds", "gauge", "Time since bangerd started.", {"uptime_usec"}, 1e-6},
    {"banger_vms_liveness_unknown",
     "gauge",
     "VMs whose liveness cannot be told now (IsAlive answers unknown).",
     {"counts", "liveness_unknown"},
     1},
    {"banger_helper_pid",
     "gauge",
     "The pid of the privileged helper doing the work.",
     {"helper_pid"},
     1},
    {"banger_helper_replacements_total",
     "counter",
     "Stuck helpers replaced by a new one (split mode).",
     {"counters", "helper_replacements"},
     1},
    {"banger_vm_exits_total",
     "counter",
     "Firecracker exits bangerd saw on a pidfd.",
     {"counters", "exits"},
     1},
    {"banger_teardowns_unanswered_total",
     "counter",
     "Teardowns the helper never answered (what it removed is not known).",
     {"counters", "teardowns_unanswered"},
     1},
    {"banger_persist_failures_total",
     "counter",
     "Writes of vm.json or handles.json that failed (bangerd retries them).",
     {"counters", "persist_failures"},
     1},
    {"banger_persist_retries_total",
     "counter",
     "Failed writes tried again.",
     {"counters", "persist_retries"},
     1},
    {"banger_reconciles_failed_total",
     "counter",
     "Reconciles cut short by the helper (stuck or gone).",
     {"counters", "reconciles", "failed"},
     1},
    {"banger_reconcile_last_duration_seconds",
     "gauge",
     "How long the last reconcile took.",
     {"counters", "reconciles", "duration_usec_last"},
     1e-6},
    {"banger_events_total",
     "counter",
     "Events bangerd emitted (what Watch streams carry).",
     {"counters", "events"},
     1},
    {"banger_connections",
     "gauge",
     "Open connections to the control socket.",
     {"counters", "connections"},
     1},
    {"banger_connections_refused_total",
     "counter",
     "Connections refused over a connection limit.",
     {"counters", "connections_refused"},
     1},
    {"banger_connections_dropped_total",
     "counter",
     "Connections dropped: idle, stalled, over an output limit, or sending fds they may not.",
     {"counters", "connections_dropped"},
     1},
    {"banger_unread_output_bytes",
     "gauge",
     "Replies not yet taken by their clients.",
     {"counters", "unread_output_bytes"},
     1},
    {"banger_fds_closing",
     "gauge",
     "Client fds handed to the closer thread, not closed yet.",
     {"counters", "fds_closing"},
     1},
};

static const struct labelled_metric labelled[] = {
    {"banger_vms",
     "gauge",
     "VMs by the state of their record.",
     {"counts"},
     "state",
     {"starting", "running", "stopped"}},
    {"banger_teardown_resources_total",
     "counter",
     "Resources of every answered teardown, by what became of them.",
     {"counters", "teardown_results"},
     "result",
     {"removed", "absent", "refused", "busy", "failed"}},
    {"banger_reconcile_vms_total",
     "counter",
     "VMs in reconcile reports, by what each came to.",
     {"counters", "reconciles", "vms"},
     "action",
     {"kept", "torn_down", "failed", "unknown", "clean", "retained"}},
};

static const char *const helper_states[] = {"ok", "stuck", "gone"};

/* path: objects, then the member; NULL when any step is missing. */
static yajl_val lookup(yajl_val v, const char *const *path)
{
	for (size_t i = 0; v && path[i]; i++) {
		if (!YAJL_IS_OBJECT(v))
			return NULL;
		yajl_val next = NULL;
		for (size_t k = 0; k < v->u.object.len; k++)
			if (strcmp(v->u.object.keys[k], path[i]) == 0)
				next = v->u.object.values[k];
		v = next;
	}
	return v;
}

static bool get_integer(yajl_val obj, const char *const *path, int64_t *out)
{
	yajl_val v = lookup(obj, path);
	if (!v || !YAJL_IS_INTEGER(v))
		return false;
	*out = YAJL_GET_INTEGER(v);
	return true;
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the format wants it: backslash, double quote and newline escaped. */
static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void sample(FILE *f, const char *name, const char *label, const char *value, double v)
{
	fputs(name, f);
	if (label) {
		fprintf(f, "{%s=\"", label);
		put_label_value(f, value);
		fputs("\"}", f);
	}
	if (v == (double)(int64_t)v)
		fprintf(f, " %" PRId64 "\n", (int64_t)v);
	else
		fprintf(f, " %.6f\n", v);
}

static void put_scalar(FILE *f, yajl_val status, const struct scalar_metric *m)
{
	int64_t n;
	if (!get_integer(status, m->path, &n))
		return;
	family(f, m->name, m->type, m->help);
	sample(f, m->name, NULL, NULL, (double)n * m->scale);
}

static void put_labelled(FILE *f, yajl_val status, const struct labelled_metric *m)
{
	yajl_val obj = lookup(status, m->path);
	int64_t n;
	bool any = false;
	for (size_t i = 0; obj && i < ELEMENTSOF(m->keys) && m->keys[i]; i++) {
		if (!get_integer(obj, (const char *const[]){m->keys[i], NULL}, &n))
			continue;
		if (!any)
			family(f, m->name, m->type, m->help);
		any = true;
		sample(f, m->name, m->label, m->keys[i], (double)n);
	}
}

static void put_helper(FILE *f, yajl_val status)
{
	const char *state;
	bool privileged;
	if (json_get_string(status, "helper_state", &state) == 0) {
		family(f, "banger_helper_state", "gauge",
		       "The privileged helper's state: 1 for the current one.");
		for (size_t i = 0; i < ELEMENTSOF(helper_states); i++)
			sample(f, "banger_helper_state", "state", helper_states[i],
			       strcmp(state, helper_states[i]) == 0);
	}
	if (json_get_bool(status, "helper_privileged", &privileged) == 0) {
		family(f, "banger_helper_privileged", "gauge",
		       "1 when the helper holds its capabilities, 0 when it runs without.");
		sample(f, "banger_helper_privileged", NULL, NULL, privileged);
	}
}

/* A summary without quantiles: the count and total time of every reconcile. */
static void put_reconcile_duration(FILE *f, yajl_val status)
{
	int64_t runs, usec;
	if (!get_integer(status, (const char *const[]){"counters", "reconciles", "runs", NULL},
			 &runs) ||
	    !get_integer(
		status,
		(const char *const[]){"counters", "reconciles", "duration_usec_total", NULL},
		&usec))
		return;
	family(f, "banger_reconcile_duration_seconds", "summary",
	       "Reconciles since start (at start-up, after a helper replacement, on demand) and "
	       "their total time.");
	sample(f, "banger_reconcile_duration_seconds_sum", NULL, NULL, (double)usec * 1e-6);
	sample(f, "banger_reconcile_duration_seconds_count", NULL, NULL, (double)runs);
}

/*
 * Calls and errors per method of io.banger.Handles; method="other" holds the
 * rest of bangerd's totals (org.varlink.service, names that are no method).
 */
static void put_methods(FILE *f, yajl_val status)
{
	static const char *const kinds[2][3] = {
	    {"banger_calls_total", "calls", "Varlink calls by method."},
	    {"banger_call_errors_total", "errors",
	     "Varlink calls answered with an error, by method."},
	};
	yajl_val methods = lookup(status, (const char *const[]){"methods", NULL});
	if (!methods || !YAJL_IS_ARRAY(methods))
		return;
	for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
		const char *member = kinds[k][1];
		int64_t total, n, listed = 0;
		family(f, kinds[k][0], "counter", kinds[k][2]);
		for (size_t i = 0; i < methods->u.array.len; i++) {
			yajl_val m = methods->u.array.values[i];
			const char *name;
			if (json_get_string(m, "method", &name) < 0 ||
			    json_get_int(m, member, &n) < 0)
				continue;
			listed += n;
			sample(f, kinds[k][0], "method", name, (double)n);
		}
		if (get_integer(status, (const char *const[]){"counters", member, NULL}, &total))
			sample(f, kinds[k][0], "method", "other",
			       (double)(total > listed ? total - listed : 0));
	}
}

void metrics_format(FILE *f, yajl_val status)
{
	const char *version;
	family(f, "banger_up", "gauge", "1 when bangerd answered GetStatus, 0 when it did not.");
	sample(f, "banger_up", NULL, NULL, status != NULL);
	if (!status)
		return;
	if (json_get_string(status, "version", &version) == 0) {
		family(f, "banger_info", "gauge", "bangerd's version, as a label.");
		sample(f, "banger_info", "version", version, 1);
	}
	for (size_t i = 0; i < ELEMENTSOF(scalars); i++)
		put_scalar(f, status, &scalars[i]);
	for (size_t i = 0; i < ELEMENTSOF(labelled); i++)
		put_labelled(f, status, &labelled[i]);
	put_helper(f, status);
	put_reconcile_duration(f, status);
	put_methods(f, status);
}

int metrics_write_file(const char *path, yajl_val status)
{
	_cleanup_free_ char *text = NULL, *dir_copy = strdup(path), *base_copy = strdup(path);
	size_t len = 0;
	if (!dir_copy || !base_copy)
		return -ENOMEM;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -errno;
	metrics_format(f, status);
	if (fclose(f) != 0)
		return -ENOMEM;
	const char *base = basename(base_copy);
	if (!base[0] || strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -EINVAL;
	_cleanup_close_ int dirfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	return atomic_write_at(dirfd, base, text, len, METRICS_FILE_MODE);
}
