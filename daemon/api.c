/*
 * io.banger.Handles over Varlink: each handler decodes and validates every
 * parameter at the top, checks access, calls the service, and ends the
 * call exactly once. Nothing here touches the disk or the cache directly.
 * Mutating calls are logged with the caller's uid/pid and the call id that
 * the helper's audit line carries too (call=SetHandles#17, with vm= the VM's id).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "build_config.h"
#include "clock.h"
#include "daemon.h"
#include "json.h"
#include "log.h"
#include "message_id.h"
#include "path.h"
#include "reconcile.h"
#include "service.h"
#include "service_calls.h"
#include "varlink.h"
#include "vm.h"

#define IFACE "io.banger.Handles."

/* The interface text, compiled in from proto/io.banger.Handles.varlink. */
extern const char banger_handles_description[];

/* --- replies -------------------------------------------------------------- */

static void error_with(struct varlink_call *c, const char *error, const char *k1, const char *v1,
		       const char *k2, const char *v2)
{
	char name[128];
	snprintf(name, sizeof(name), IFACE "%s", error);
	yajl_gen g = varlink_params_begin();
	if (g && k1)
		json_gen_kv_string(g, k1, v1);
	if (g && k2)
		json_gen_kv_string(g, k2, v2);
	varlink_error(c, name, varlink_params_end(g));
}

static void error_no_such_vm(struct varlink_call *c, const char *id)
{
	error_with(c, "NoSuchVM", "id", id, NULL, NULL);
}

static void error_invalid(struct varlink_call *c, const char *parameter, const char *reason)
{
	error_with(c, "InvalidParameter", "parameter", parameter, "reason", reason);
}

static void gen_handles(yajl_gen g, const struct vm_handles *h)
{
	yajl_gen_map_open(g);
	json_gen_kv_int(g, "pid", h->pid);
	json_gen_kv_int(g, "start_time", (int64_t)h->start_time);
	json_gen_kv_string(g, "boot_id", h->boot_id);
	if (h->tap[0])
		json_gen_kv_string(g, "tap", h->tap);
	/* Handles restored from an older bangerd's handles.json have none. */
	if (h->tap_ifindex)
		json_gen_kv_int(g, "tap_ifindex", h->tap_ifindex);
	json_gen_kv_string_array(g, "loops", h->loops[0], PS_PATH_MAX, h->n_loops);
	/* Handles restored from an older bangerd's handles.json have none. */
	if (vm_loops_have_diskseq(h->loop_diskseq, h->n_loops))
		json_gen_kv_uint_array(g, "loop_diskseq", h->loop_diskseq, h->n_loops);
	json_gen_kv_string_array(g, "dm", h->dm[0], PS_DM_NAME_MAX, h->n_dm);
	yajl_gen_map_close(g);
}

static void gen_planned(yajl_gen g, const struct vm_record *r)
{
	json_gen_string(g, "planned");
	yajl_gen_map_open(g);
	if (r->planned.tap[0])
		json_gen_kv_string(g, "tap", r->planned.tap);
	json_gen_kv_string_array(g, "loop_files", r->planned.loop_files[0], PS_PATH_MAX,
				 r->planned.n_loop_files);
	json_gen_kv_string_array(g, "dm", r->planned.dm[0], PS_DM_NAME_MAX, r->planned.n_dm);
	yajl_gen_map_close(g);
}

static void gen_vm(yajl_gen g, const struct vm_entry *e)
{
	struct service_vm v;
	const struct vm_record *r = &v.rec;
	service_vm_get(e, &v);
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "id", r->id);
	json_gen_kv_string(g, "state", vm_state_name(r->state));
	json_gen_kv_string(g, "api_sock", r->api_sock);
	json_gen_kv_string(g, "on_exit", vm_on_exit_name(r->on_exit));
	if (r->has_planned)
		gen_planned(g, r);
	if (v.has_handles) {
		json_gen_string(g, "handles");
		gen_handles(g, &v.h);
	}
	json_gen_kv_bool(g, "persisted", v.persisted);
	if (v.problem)
		json_gen_kv_string(g, "problem", v.problem);
	yajl_gen_map_close(g);
}

/* Which parameters each error of the service carries, in the order they are written. */
enum {
	P_ID = 1 << 0,
	P_STATE = 1 << 1,
	P_PID = 1 << 2,
	P_LIMIT = 1 << 3,
	P_FILE = 1 << 4,
	P_KEPT_AS = 1 << 5,
	P_PARAMETER = 1 << 6,
	P_REASON = 1 << 7,
};

static const struct {
	const char *name;
	unsigned params;
} service_errors[] = {
    [SERVICE_NO_SUCH_VM] = {"NoSuchVM", P_ID},
    [SERVICE_VM_EXISTS] = {"VMExists", P_ID | P_STATE | P_REASON},
    [SERVICE_TOO_MANY_VMS] = {"TooManyVMs", P_LIMIT},
    [SERVICE_STORAGE_FAILED] = {"StorageFailed", P_ID | P_FILE | P_REASON},
    [SERVICE_POLICY_REFUSED] = {"PolicyRefused", P_REASON},
    [SERVICE_NOT_FIRECRACKER] = {"NotFirecracker", P_ID | P_PID | P_REASON},
    [SERVICE_STILL_RUNNING] = {"StillRunning", P_ID | P_PID},
    [SERVICE_NO_HANDLES] = {"NoHandles", P_ID},
    [SERVICE_CORRUPT_STATE] = {"CorruptState", P_ID | P_FILE | P_KEPT_AS},
    [SERVICE_HELPER_UNAVAILABLE] = {"HelperUnavailable", P_REASON},
    [SERVICE_OUT_OF_MEMORY] = {"OutOfMemory", P_REASON},
    [SERVICE_INVALID_PARAMETER] = {"InvalidParameter", P_PARAMETER | P_REASON},
};

static void gen_opt_string(yajl_gen g, bool wanted, const char *key, const char *value)
{
	if (wanted && value)
		json_gen_kv_string(g, key, value);
}

static void error_of_result(struct varlink_call *c, const struct service_result *res)
{
	unsigned p = service_errors[res->error].params;
	char name[128];
	snprintf(name, sizeof(name), IFACE "%s", service_errors[res->error].name);
	if (p == P_REASON && !res->reason) {
		varlink_error(c, name, NULL);
		return;
	}
	yajl_gen g = varlink_params_begin();
	if (g) {
		gen_opt_string(g, p & P_ID, "id", res->id);
		gen_opt_string(g, p & P_STATE, "state", res->state);
		if (p & P_PID)
			json_gen_kv_int(g, "pid", res->pid);
		if (p & P_LIMIT)
			json_gen_kv_int(g, "limit", res->limit);
		gen_opt_string(g, p & P_FILE, "file", res->file);
		gen_opt_string(g, p & P_KEPT_AS, "kept_as", res->kept_as);
		gen_opt_string(g, p & P_PARAMETER, "parameter", res->parameter);
		gen_opt_string(g, p & P_REASON, "reason", res->reason);
	}
	varlink_error(c, name, varlink_params_end(g));
}

static void gen_teardown_results(yajl_gen g, const struct ps_teardown_reply *reply)
{
	yajl_gen_array_open(g);
	for (uint32_t i = 0; reply && i < reply->count; i++) {
		const struct ps_teardown_result *t = &reply->results[i];
		yajl_gen_map_open(g);
		json_gen_kv_string(g, "kind", ps_resource_kind_name((int)t->kind));
		json_gen_kv_string(g, "name", t->name);
		json_gen_kv_string(g, "status", ps_teardown_status_name((int)t->status));
		if (t->reason)
			json_gen_kv_string(g, "reason", ps_reason_name(t->reason));
		if (t->err)
			json_gen_kv_int(g, "errno", -t->err);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
}

/* A Reconcile's reply: each VM and what became of it, then the orphans. */
static void gen_reconcile_report(yajl_gen g, const struct reconcile_report *report)
{
	json_gen_string(g, "vms");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < report->n_vms; i++) {
		const struct rc_vm *v = &report->vms[i];
		yajl_gen_map_open(g);
		json_gen_kv_string(g, "id", v->id);
		json_gen_kv_string(g, "action", reconcile_action_name(v->action));
		if (v->pid > 0)
			json_gen_kv_int(g, "pid", v->pid);
		if (v->reason)
			json_gen_kv_string(g, "reason", v->reason);
		if (v->results) {
			json_gen_string(g, "results");
			gen_teardown_results(g, v->results);
		}
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	json_gen_string(g, "orphans");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < report->n_orphans; i++) {
		yajl_gen_map_open(g);
		json_gen_kv_int(g, "pid", report->orphans[i].pid);
		json_gen_kv_string(g, "api_sock", report->orphans[i].api_sock);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
}

/* A successful result's parameters: a reconcile's report, the VM, its handles, or a teardown's
 * results. */
static void gen_result(yajl_gen g, const struct service_result *res)
{
	if (res->report) {
		gen_reconcile_report(g, res->report);
	} else if (res->handles) {
		json_gen_string(g, "handles");
		gen_handles(g, res->handles);
	} else if (res->teardown) {
		json_gen_string(g, "results");
		gen_teardown_results(g, res->results);
	} else {
		json_gen_string(g, "vm");
		gen_vm(g, res->vm);
		if (res->persisted >= 0)
			json_gen_kv_bool(g, "persisted", res->persisted);
	}
}

/* The one place a result of the service becomes a reply. */
static void api_answer(void *call, const struct service_result *res)
{
	struct varlink_call *c = call;
	if (res->error != SERVICE_OK) {
		error_of_result(c, res);
	} else if (!res->report && !res->handles && !res->teardown && !res->vm) {
		varlink_reply(c, NULL, false);
	} else {
		yajl_gen g = varlink_params_begin();
		if (g)
			gen_result(g, res);
		varlink_reply(c, varlink_params_end(g), false);
	}
}

/* One reply of a Watch stream. */
static void reply_event(struct varlink_call *c, const struct service_event *ev)
{
	yajl_gen g = varlink_params_begin();
	if (!g)
		return;
	json_gen_string(g, "event");
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "kind", ev->kind);
	if (ev->id)
		json_gen_kv_string(g, "id", ev->id);
	json_gen_kv_int(g, "time_usec", (int64_t)ev->time_usec);
	if (ev->pid > 0)
		json_gen_kv_int(g, "pid", ev->pid);
	if (ev->detail)
		json_gen_kv_string(g, "detail", ev->detail);
	yajl_gen_map_close(g);
	varlink_reply(c, varlink_params_end(g), true);
}

/* Every event goes to every Watch call. */
static void api_on_event(const struct service_event *ev, void *userdata)
{
	struct daemon *d = userdata;
	struct watcher *w;
	TAILQ_FOREACH(w, &d->watchers, link)
	reply_event(w->call, ev);
}

void api_attach(struct daemon *d)
{
	d->answer = api_answer;
	service_set_event_sink(d, api_on_event, d);
}

/* --- decoding --------------------------------------------------------------- */

static bool check_keys(struct varlink_call *c, yajl_val params, const char *const *allowed)
{
	const char *unknown = json_unknown_key(params, allowed);
	if (unknown) {
		varlink_error_invalid_parameter(c, unknown);
		return false;
	}
	return true;
}

/* The id parameter: present, a string, and a valid id. */
static bool get_id(struct varlink_call *c, yajl_val params, const char **id)
{
	const char *why;
	if (json_get_string(params, "id", id) < 0) {
		varlink_error_invalid_parameter(c, "id");
		return false;
	}
	if (!vm_id_is_valid(*id, &why)) {
		/* Echo no more of a bad id than fits a log line, in printable ASCII. */
		char shown[80];
		error_with(c, "InvalidID", "id", json_printable(*id, shown, sizeof(shown)),
			   "reason", why);
		return false;
	}
	return true;
}

static struct vm_entry *find_vm(struct daemon *d, struct varlink_call *c, const char *id)
{
	struct vm_entry *e = service_find(d, id);
	if (!e)
		error_no_such_vm(c, id);
	return e;
}

static bool ifname_ok(const char *s)
{
	if (s[0] == '\0' || strlen(s) >= PS_IFNAME_MAX)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s > '~' || *s == '/' || *s == ':')
			return false;
	return true;
}

static bool dm_name_ok(const char *s)
{
	if (s[0] == '\0' || strlen(s) >= PS_DM_NAME_MAX || strcmp(s, ".") == 0 ||
	    strcmp(s, "..") == 0)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s > '~' || *s == '/')
			return false;
	return true;
}

/* Optional tap name into field; false (error sent) when present and bad. */
static bool get_tap(struct varlink_call *c, yajl_val obj, const char *label, char *field)
{
	const char *tap;
	int r = json_get_string(obj, "tap", &tap);
	if (r == -ENOENT)
		return true;
	if (r < 0 || !ifname_ok(tap)) {
		error_invalid(c, label, "a network interface name of 1 to 15 printable characters");
		return false;
	}
	field_set(field, PS_IFNAME_MAX, tap);
	return true;
}

/*
 * An optional array of strings into fixed fields, each checked by item_ok;
 * false (error sent) when present and bad.
 */
static bool get_strings(struct varlink_call *c, yajl_val obj, const char *key, const char *label,
			char *fields, size_t field_size, size_t max, bool (*item_ok)(const char *),
			const char *expected, uint32_t *count)
{
	yajl_val arr;
	int r = json_get_array(obj, key, &arr);
	if (r == -ENOENT)
		return true;
	if (r == 0)
		r = json_copy_string_array(arr, fields, field_size, max, count);
	for (uint32_t i = 0; r == 0 && i < *count; i++)
		if (!item_ok(fields + (size_t)i * field_size))
			r = -EINVAL;
	if (r < 0) {
		error_invalid(c, label, expected);
		return false;
	}
	return true;
}

static bool get_paths(struct varlink_call *c, yajl_val obj, const char *key, const char *label,
		      char *fields, uint32_t *count)
{
	return get_strings(c, obj, key, label, fields, PS_PATH_MAX, VM_MAX_LOOPS,
			   path_is_normal_absolute, "up to 8 absolute paths in normal form", count);
}

static bool get_dm(struct varlink_call *c, yajl_val obj, const char *label, char *fields,
		   uint32_t *count)
{
	return get_strings(c, obj, "dm", label, fields, PS_DM_NAME_MAX, VM_MAX_DM, dm_name_ok,
			   "up to 8 device-mapper names without '/'", count);
}

/* --- access ------------------------------------------------------------------ */

bool api_may_mutate(const struct varlink_peer *p, void *userdata)
{
	return service_may_mutate(userdata, p->uid, p->gid, p->groups, p->ngroups);
}

/* bangerd's id of a call, "SetHandles#17": the method without its interface, and the call's number.
 */
static void call_name(struct varlink_call *c, char *buf, size_t size)
{
	const char *method = varlink_call_method(c);
	const char *dot = strrchr(method, '.');
	snprintf(buf, size, "%s#%llu", dot ? dot + 1 : method,
		 (unsigned long long)varlink_call_id(c));
}

/*
 * Denials are logged at most DENIALS_LOGGED_PER_SEC a second: a reader looping on a
 * mutation must not flood the journal, whose own rate limit would then drop the
 * admissions and events an operator audits. The rest are counted, and the next denial
 * logged says how many went unlogged before it.
 */
#define DENIALS_LOGGED_PER_SEC 10

static bool denial_logged(unsigned long *unlogged)
{
	static uint64_t second;
	static unsigned logged;
	static unsigned long skipped;
	uint64_t now = monotonic_ms() / 1000;
	if (now != second) {
		second = now;
		logged = 0;
	}
	if (logged == DENIALS_LOGGED_PER_SEC) {
		skipped++;
		return false;
	}
	logged++;
	*unlogged = skipped;
	skipped = 0;
	return true;
}

/* Mutating calls: check access and log who asked. Returns false after answering PermissionDenied.
 */
static bool admit_mutation(struct daemon *d, struct varlink_call *c, const char *what)
{
	const struct varlink_peer *p = varlink_call_peer(c);
	const char *method = varlink_call_method(c);
	bool admitted = api_may_mutate(p, d);
	/* The call id the helper's audit entries name too (caller_of()). */
	char call[PS_CALL_MAX], uid[12], pid[12];
	call_name(c, call, sizeof(call));
	snprintf(uid, sizeof(uid), "%u", (unsigned)p->uid);
	snprintf(pid, sizeof(pid), "%d", (int)p->pid);
	const struct log_field fields[] = {
	    {"BANGER_CALL", call},
	    {"BANGER_VM_ID", what[0] ? what : NULL},
	    {"BANGER_CALLER_UID", uid},
	    {"BANGER_CALLER_PID", pid},
	    {"BANGER_RESULT", admitted ? "admitted" : "denied"},
	};
	unsigned long unlogged;
	if (!admitted && denial_logged(&unlogged)) {
		char before[64] = "";
		if (unlogged)
			snprintf(before, sizeof(before), " (%lu denials before it not logged)",
				 unlogged);
		log_struct(LOG_LEVEL_NOTICE, 0, BANGER_MID_CALL_DENIED, fields, ELEMENTSOF(fields),
			   "call #%llu %s denied to uid %u pid %d%s",
			   (unsigned long long)varlink_call_id(c), method, (unsigned)p->uid,
			   (int)p->pid, before);
	}
	if (!admitted) {
		error_with(c, "PermissionDenied", "method", method, NULL, NULL);
		return false;
	}
	log_struct(LOG_LEVEL_INFO, 0, BANGER_MID_CALL_ADMITTED, fields, ELEMENTSOF(fields),
		   "call #%llu from uid %u pid %d: %s %s", (unsigned long long)varlink_call_id(c),
		   (unsigned)p->uid, (int)p->pid, method, what);
	return true;
}

/*
 * The common head of the methods that take only an id: decode, validate,
 * find the VM, and (mutating) admit the caller. NULL after an error reply.
 */
static struct vm_entry *vm_of_call(struct daemon *d, struct varlink_call *c, yajl_val params,
				   bool mutating)
{
	const char *id;
	if (!check_keys(c, params, (const char *const[]){"id", NULL}) || !get_id(c, params, &id))
		return NULL;
	struct vm_entry *e = find_vm(d, c, id);
	if (e && mutating && !admit_mutation(d, c, id))
		return NULL;
	return e;
}

static struct ps_caller caller_of(struct varlink_call *c)
{
	const struct varlink_peer *p = varlink_call_peer(c);
	struct ps_caller caller = {.uid = (uint32_t)p->uid, .gid = (uint32_t)p->gid, .pid = p->pid};
	call_name(c, caller.call, sizeof(caller.call));
	return caller;
}

/* --- methods ------------------------------------------------------------------ */

/* Register's record: false (error sent) when a parameter is missing or bad. */
static bool get_record(struct varlink_call *c, yajl_val params, struct vm_record *rec)
{
	const char *id, *api_sock, *on_exit = NULL;
	yajl_val planned = NULL;

	if (!check_keys(c, params,
			(const char *const[]){"id", "api_sock", "planned", "on_exit", NULL}) ||
	    !get_id(c, params, &id))
		return false;
	memset(rec, 0, sizeof(*rec));
	field_set(rec->id, sizeof(rec->id), id);
	if (json_get_string(params, "api_sock", &api_sock) < 0 ||
	    !path_is_normal_absolute(api_sock) ||
	    field_set(rec->api_sock, sizeof(rec->api_sock), api_sock) < 0) {
		error_invalid(c, "api_sock", "an absolute path in normal form, under 108 bytes");
		return false;
	}
	int r = json_get_string(params, "on_exit", &on_exit);
	int on_exit_value = r == -ENOENT ? VM_ON_EXIT_TEARDOWN
			    : r == 0	 ? vm_on_exit_from_name(on_exit)
					 : -EINVAL;
	if (on_exit_value < 0) {
		error_invalid(c, "on_exit", "teardown or keep");
		return false;
	}
	rec->on_exit = (enum vm_on_exit)on_exit_value;
	rec->state = VM_STARTING;
	r = json_get_object(params, "planned", &planned);
	if (r == -EINVAL) {
		varlink_error_invalid_parameter(c, "planned");
		return false;
	}
	if (r < 0)
		return true;
	rec->has_planned = true;
	return check_keys(c, planned, (const char *const[]){"tap", "loop_files", "dm", NULL}) &&
	       get_tap(c, planned, "planned.tap", rec->planned.tap) &&
	       get_paths(c, planned, "loop_files", "planned.loop_files", rec->planned.loop_files[0],
			 &rec->planned.n_loop_files) &&
	       get_dm(c, planned, "planned.dm", rec->planned.dm[0], &rec->planned.n_dm);
}

static void method_register(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct vm_record rec;
	if (!get_record(c, params, &rec))
		return;
	const char *refused = service_register_refusal(d, &rec);
	if (refused) {
		error_with(c, "PolicyRefused", "reason", refused, NULL, NULL);
		return;
	}
	if (admit_mutation(d, c, rec.id))
		service_register_call(d, &rec, c);
}

/* Only a pidfd may travel on to the helper: its close never blocks, unlike a client's socket. */
static bool fd_is_pidfd(int fd)
{
	char path[64], target[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[pidfd]") == 0;
}

static void method_set_handles(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	const char *id;
	int64_t pid;
	struct vm_handles h;

	if (!check_keys(c, params,
			(const char *const[]){"id", "pid", "tap", "loops", "dm", NULL}) ||
	    !get_id(c, params, &id))
		return;
	memset(&h, 0, sizeof(h));
	if (json_get_int(params, "pid", &pid) < 0 || pid <= 0 || pid > INT32_MAX) {
		error_invalid(c, "pid", "a process id (a positive integer)");
		return;
	}
	h.pid = (int32_t)pid;
	if (!get_tap(c, params, "tap", h.tap) ||
	    !get_paths(c, params, "loops", "loops", h.loops[0], &h.n_loops) ||
	    !get_dm(c, params, "dm", h.dm[0], &h.n_dm))
		return;
	struct vm_entry *e = find_vm(d, c, id);
	if (!e || !admit_mutation(d, c, id))
		return;
	/* A client that spawned firecracker may pass its pidfd: then that process is verified. */
	int pidfd = varlink_call_take_fd(c, 0);
	if (pidfd >= 0 && (varlink_call_nfds(c) > 1 || !fd_is_pidfd(pidfd))) {
		varlink_server_close_fd(d->server, pidfd);
		error_invalid(c, "pid", "the one fd SetHandles takes is the firecracker's pidfd");
		return;
	}
	struct ps_caller caller = caller_of(c);
	service_set_handles_call(d, e, &h, pidfd, &caller, c);
}

static void method_get_handles(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct vm_entry *e = vm_of_call(d, c, params, false);
	if (e)
		service_get_handles_call(d, e, c);
}

static void method_is_alive(struct varlink_call *c, yajl_val params, void *userdata)
{
	static const char *const names[] = {
	    [VM_DEAD] = "dead", [VM_ALIVE] = "alive", [VM_UNKNOWN] = "unknown"};
	struct daemon *d = userdata;
	struct vm_entry *e = vm_of_call(d, c, params, false);
	if (!e)
		return;
	yajl_gen g = varlink_params_begin();
	if (g)
		json_gen_kv_string(g, "alive", names[service_liveness(e)]);
	varlink_reply(c, varlink_params_end(g), false);
}

static void method_clear_handles(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct vm_entry *e = vm_of_call(d, c, params, true);
	if (e)
		service_clear_handles_call(d, e, c);
}

static void method_unregister(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct vm_entry *e = vm_of_call(d, c, params, true);
	if (e)
		service_unregister_call(d, e, c);
}

static void method_teardown(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct vm_entry *e = vm_of_call(d, c, params, true);
	if (!e)
		return;
	struct ps_caller caller = caller_of(c);
	service_teardown_call(d, e, &caller, c);
}

static void method_reconcile(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	if (!check_keys(c, params, (const char *const[]){NULL}) || !admit_mutation(d, c, ""))
		return;
	struct ps_caller caller = caller_of(c);
	service_reconcile_call(d, &caller, c);
}

static void method_list(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	size_t n;
	if (!check_keys(c, params, (const char *const[]){NULL}))
		return;
	_cleanup_free_ struct vm_entry **all = service_list(d, &n);
	yajl_gen g = varlink_params_begin();
	if (!all || !g) {
		if (g)
			yajl_gen_free(g);
		error_with(c, "OutOfMemory", "reason", "out of memory listing the VMs", NULL, NULL);
		return;
	}
	json_gen_string(g, "vms");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < n; i++)
		gen_vm(g, all[i]);
	yajl_gen_array_close(g);
	varlink_reply(c, varlink_params_end(g), false);
}

static void on_watch_cancel(struct varlink_call *c, void *ud)
{
	struct daemon *d = ud;
	struct watcher *w;
	TAILQ_FOREACH(w, &d->watchers, link)
	if (w->call == c)
		break;
	if (w) {
		TAILQ_REMOVE(&d->watchers, w, link);
		free(w);
	}
	varlink_reply(c, NULL, false); /* ends the call; the client is gone */
}

static void method_watch(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	if (!check_keys(c, params, (const char *const[]){NULL}))
		return;
	if (!varlink_call_more(c)) {
		varlink_error(c, "org.varlink.service.ExpectedMore", NULL);
		return;
	}
	struct watcher *w = calloc(1, sizeof(*w));
	if (!w) {
		error_with(c, "OutOfMemory", "reason", "out of memory for the watcher", NULL, NULL);
		return;
	}
	w->call = c;
	TAILQ_INSERT_TAIL(&d->watchers, w, link);
	varlink_call_on_cancel(c, on_watch_cancel, d);
	/* Confirm at once, so a client knows no event after this point can pass it by. */
	reply_event(
	    c, &(struct service_event){.kind = "subscribed", .time_usec = service_realtime_usec()});
}

void api_end_watchers(struct daemon *d)
{
	for (struct watcher *w; (w = TAILQ_FIRST(&d->watchers));) {
		TAILQ_REMOVE(&d->watchers, w, link);
		varlink_call_on_cancel(w->call, NULL, NULL);
		varlink_reply(w->call, NULL, false);
		free(w);
	}
}

static void gen_method_counters(yajl_gen g, const struct daemon *d)
{
	const struct varlink_method_stats *m =
	    varlink_server_method_stats(d->server, &banger_handles_interface);
	json_gen_string(g, "methods");
	yajl_gen_array_open(g);
	for (size_t i = 0; m && i < banger_handles_interface.n_methods; i++) {
		yajl_gen_map_open(g);
		json_gen_kv_string(g, "method", banger_handles_interface.methods[i].name);
		json_gen_kv_int(g, "calls", (int64_t)m[i].calls);
		json_gen_kv_int(g, "errors", (int64_t)m[i].errors);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
}

static void gen_reconcile_counters(yajl_gen g, const struct daemon_counters *n)
{
	json_gen_string(g, "reconciles");
	yajl_gen_map_open(g);
	json_gen_kv_int(g, "runs", (int64_t)n->reconciles);
	json_gen_kv_int(g, "failed", (int64_t)n->reconciles_failed);
	json_gen_kv_int(g, "duration_usec_total", (int64_t)n->reconcile_usec_total);
	json_gen_kv_int(g, "duration_usec_last", (int64_t)n->reconcile_usec_last);
	json_gen_string(g, "vms");
	yajl_gen_map_open(g);
	for (size_t i = 0; i < RECONCILE_ACTIONS; i++)
		json_gen_kv_int(g, reconcile_action_name(i), (int64_t)n->reconcile_vms[i]);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}

static void gen_teardown_counters(yajl_gen g, const struct daemon_counters *n)
{
	json_gen_string(g, "teardown_results");
	yajl_gen_map_open(g);
	for (int status = PS_TEARDOWN_REMOVED; status <= PS_TEARDOWN_FAILED; status++)
		json_gen_kv_int(g, ps_teardown_status_name(status),
				(int64_t)n->teardown_results[status]);
	yajl_gen_map_close(g);
	json_gen_kv_int(g, "teardowns_unanswered", (int64_t)n->teardowns_unanswered);
}

static void gen_server_counters(yajl_gen g, struct varlink_server *server)
{
	struct varlink_stats st;
	varlink_server_stats(server, &st);
	json_gen_kv_int(g, "calls", (int64_t)st.calls);
	json_gen_kv_int(g, "errors", (int64_t)st.errors);
	json_gen_kv_int(g, "connections", (int64_t)st.connections);
	json_gen_kv_int(g, "connections_refused", (int64_t)st.connections_refused);
	json_gen_kv_int(g, "connections_dropped", (int64_t)st.connections_dropped);
	json_gen_kv_int(g, "unread_output_bytes", (int64_t)st.output_bytes);
	json_gen_kv_int(g, "fds_closing", (int64_t)varlink_server_fds_closing(server));
}

static void gen_counters(yajl_gen g, const struct service_status *st, struct varlink_server *server)
{
	json_gen_string(g, "counters");
	yajl_gen_map_open(g);
	gen_server_counters(g, server);
	json_gen_kv_int(g, "persist_failures", (int64_t)st->persist_failures);
	json_gen_kv_int(g, "events", (int64_t)st->events);
	json_gen_kv_int(g, "helper_replacements", (int64_t)st->helper_replacements);
	json_gen_kv_int(g, "exits", (int64_t)st->counters->exits);
	json_gen_kv_int(g, "persist_retries", (int64_t)st->counters->persist_retries);
	gen_teardown_counters(g, st->counters);
	gen_reconcile_counters(g, st->counters);
	yajl_gen_map_close(g);
}

static void gen_vm_counts(yajl_gen g, const struct service_status *st)
{
	json_gen_string(g, "counts");
	yajl_gen_map_open(g);
	json_gen_kv_int(g, "vms", (int64_t)st->vms);
	json_gen_kv_int(g, "starting", st->by_state[VM_STARTING]);
	json_gen_kv_int(g, "running", st->by_state[VM_RUNNING]);
	json_gen_kv_int(g, "stopped", st->by_state[VM_STOPPED]);
	json_gen_kv_int(g, "liveness_unknown", st->liveness_unknown);
	yajl_gen_map_close(g);
}

static void method_get_status(struct varlink_call *c, yajl_val params, void *userdata)
{
	struct daemon *d = userdata;
	struct service_status st;
	if (!check_keys(c, params, (const char *const[]){NULL}))
		return;
	service_status(d, &st);
	yajl_gen g = varlink_params_begin();
	if (g) {
		json_gen_kv_string(g, "version", BANGER_VERSION);
		json_gen_kv_int(g, "uptime_usec", st.uptime_usec);
		gen_vm_counts(g, &st);
		json_gen_kv_int(g, "helper_pid", st.helper_pid);
		json_gen_kv_bool(g, "helper_privileged", st.helper_privileged);
		json_gen_kv_string(g, "helper_state", st.helper_state);
		if (st.helper_problem)
			json_gen_kv_string(g, "helper_problem", st.helper_problem);
		gen_counters(g, &st, d->server);
		gen_method_counters(g, d);
	}
	varlink_reply(c, varlink_params_end(g), false);
}

static const struct varlink_method handles_methods[] = {
    {"Register", method_register, 0},
    /* A client that spawned firecracker may pass its pidfd (as sd-varlink does). */
    {"SetHandles", method_set_handles, VARLINK_METHOD_TAKES_FDS},
    {"GetHandles", method_get_handles, 0},
    {"IsAlive", method_is_alive, 0},
    {"ClearHandles", method_clear_handles, 0},
    {"Teardown", method_teardown, 0},
    {"Unregister", method_unregister, 0},
    {"List", method_list, 0},
    {"Reconcile", method_reconcile, 0},
    {"Watch", method_watch, 0},
    {"GetStatus", method_get_status, 0},
};

const struct varlink_interface banger_handles_interface = {
    .name = "io.banger.Handles",
    .description = banger_handles_description,
    .methods = handles_methods,
    .n_methods = ELEMENTSOF(handles_methods),
};
