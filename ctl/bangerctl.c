/*
 * bangerctl: the command line of io.banger.Handles. One command per method;
 * it validates only what it must to build the call (the daemon judges the
 * rest and its errors are printed as they come), prints the answer as a
 * table, key: value lines or JSON, and says how it went in its exit status.
 * For `set` it opens a pidfd on the pid it is given and sends it with the
 * call, so that bangerd verifies exactly that process and no other that
 * might reuse the pid meanwhile. `metrics` prints GetStatus for Prometheus
 * (metrics.c). It never retries and never guesses.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <time.h>

#include "build_config.h"
#include "json.h"
#include "macro.h"
#include "metrics.h"
#include "varlink_client.h"

#define DEFAULT_SOCKET_PATH "/run/banger/bangerd.sock"
#define IFACE		    "io.banger.Handles."
/* More than bangerd accepts (8), so that the daemon, not us, names the limit. */
#define MAX_REPEATED_OPTION 16
#define KEY_WIDTH	    20

enum exit_status {
	EXIT_OK = 0,
	EXIT_NO = 1,	/* a "no" answer: alive of a VM that is dead or unknown */
	EXIT_USAGE = 2, /* bad command line */
	EXIT_FAILED =
	    3, /* the daemon said no, could not be reached, or the pid could not be opened */
};

/* Options a command may take, as bits, so a command can refuse the others. */
enum command_option {
	OPT_API_SOCK = 1 << 0,
	OPT_TAP = 1 << 1,
	OPT_LOOP_FILE = 1 << 2,
	OPT_LOOP = 1 << 3,
	OPT_DM = 1 << 4,
	OPT_ON_EXIT = 1 << 5,
	OPT_OUTPUT = 1 << 6,
};

struct repeated {
	const char *values[MAX_REPEATED_OPTION];
	size_t count;
};

struct ctl {
	const char *socket_path;
	bool json;
	unsigned given; /* enum command_option bits seen on the command line */
	const char *api_sock;
	const char *tap;
	const char *on_exit;
	const char *output; /* metrics --output FILE */
	struct repeated loop_files, loops, dm;
	char **args; /* positional arguments after the command name */
	int nargs;
	const struct command *cmd;
	int pidfd; /* sent with the call when >= 0 */
	struct varlink_client *client;
};

/* How a command talks to bangerd once connected: the exit status. */
typedef int (*run_fn)(struct ctl *ctl, yajl_gen call);

struct command {
	const char *name;
	const char *method; /* without the interface */
	const char *arg_names;
	int nargs; /* 1: the VM id; 2: the id and a pid */
	unsigned options;
	/* Check the arguments and write the parameters: EXIT_OK, or the status to exit with. */
	int (*build)(struct ctl *ctl, yajl_gen call);
	void (*print)(yajl_val params);	 /* the human form of a normal answer, or NULL for none */
	int (*verdict)(yajl_val params); /* the exit status of a normal answer, when not always 0 */
	run_fn run;			 /* run_call, run_stream (a "more" call) or run_metrics */
};

static const char usage_text[] =
    "NAME\n"
    "    bangerctl - control bangerd, the tracker of Firecracker microVM host resources\n"
    "\n"
    "SYNOPSIS\n"
    "    bangerctl [--socket PATH] [--json] COMMAND [ARGUMENT]... [OPTION]...\n"
    "    bangerctl --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    bangerctl calls one method of bangerd's Varlink interface io.banger.Handles\n"
    "    per command and prints the answer: a table or key: value lines, or with\n"
    "    --json the reply's parameters as one JSON object per line. Options may\n"
    "    come before or after the command.\n"
    "\n"
    "COMMANDS\n"
    "    register ID --api-sock PATH [--tap TAP] [--loop-file FILE]... [--dm NAME]...\n"
    "             [--on-exit teardown|keep]\n"
    "        Register VM ID before any of its resources exist (Register). PATH is\n"
    "        the api socket its firecracker will serve; TAP, each FILE (the backing\n"
    "        file of a loop device) and each device-mapper NAME are what the\n"
    "        manager is about to create. --on-exit says what bangerd does when the\n"
    "        VM's firecracker exits: tear its resources down (the default) or keep\n"
    "        them. Prints the new record.\n"
    "\n"
    "    set ID PID [--tap TAP] [--loop DEVICE]... [--dm NAME]...\n"
    "        Confirm the live handles of a running VM (SetHandles): PID is its\n"
    "        firecracker, DEVICE a /dev/loopN it uses. bangerctl opens a pidfd on\n"
    "        PID and passes it along, so bangerd verifies exactly that process.\n"
    "        Prints the record as bangerd verified it.\n"
    "\n"
    "    get ID\n"
    "        Print the live handles of VM ID (GetHandles).\n"
    "\n"
    "    alive ID\n"
    "        Print alive, dead or unknown, from bangerd's cache (IsAlive). Exits 0\n"
    "        only for alive.\n"
    "\n"
    "    clear ID\n"
    "        Forget the handles of a VM that stopped (ClearHandles).\n"
    "\n"
    "    teardown ID\n"
    "        Tear down the resources of a VM that is not running (Teardown).\n"
    "\n"
    "    unregister ID\n"
    "        Forget VM ID for good; refused while it runs (Unregister).\n"
    "\n"
    "    list\n"
    "        Print every VM as a table: ID STATE PID TAP LOOPS DM API-SOCK (List).\n"
    "        TAP, LOOPS and DM are the live handles, or the planned ones of a VM\n"
    "        that has none yet.\n"
    "\n"
    "    reconcile\n"
    "        Have bangerd check every VM against the processes that exist\n"
    "        (Reconcile).\n"
    "\n"
    "    watch\n"
    "        Print each event (registered, handles_set, cleared, unregistered,\n"
    "        persist_failed, persist_recovered, exited, torn_down) as it happens,\n"
    "        one per line, until bangerd ends the stream (Watch). The first line,\n"
    "        subscribed, says the watch is in place: no later event can be missed.\n"
    "\n"
    "    status\n"
    "        Print bangerd's version, uptime, VM counts, helper and counters\n"
    "        (GetStatus).\n"
    "\n"
    "    metrics [--output FILE]\n"
    "        Print GetStatus in the Prometheus text format (version 0.0.4), the\n"
    "        metric names listed in bangerd(8). With --output, write FILE\n"
    "        atomically instead (a temp file beside it, renamed over it; mode\n"
    "        0644), for node_exporter's textfile collector; when bangerd cannot\n"
    "        be asked, FILE then says banger_up 0 and bangerctl exits 3.\n"
    "\n"
    "OPTIONS\n"
    "    --socket PATH\n"
    "        The control socket of bangerd. Default: $BANGER_SOCKET, else\n"
    "        " DEFAULT_SOCKET_PATH ".\n"
    "\n"
    "    --json\n"
    "        Print the reply's parameters as compact JSON, one object per line\n"
    "        (for watch, one line per event).\n"
    "\n"
    "    -h, --help\n"
    "        Print this text and exit.\n"
    "\n"
    "    --version\n"
    "        Print bangerctl's version and exit.\n"
    "\n"
    "ENVIRONMENT\n"
    "    BANGER_SOCKET\n"
    "        The control socket when --socket is not given.\n"
    "\n"
    "EXIT STATUS\n"
    "    0   Success.\n"
    "    1   A \"no\" answer: alive found the VM dead or its state unknown.\n"
    "    2   Usage error: unknown command or option, missing or extra argument,\n"
    "        bad number.\n"
    "    3   The call failed: bangerd answered with an error (printed as\n"
    "        \"bangerctl: ERROR-NAME: what it means\"), could not be reached, or the\n"
    "        pid given to set could not be opened.\n"
    "\n"
    "EXAMPLES\n"
    "    bangerctl register vm1 --api-sock /srv/vms/vm1/api.sock --tap tap-vm1 \\\n"
    "        --loop-file /srv/images/vm1.ext4 --dm banger-vm1\n"
    "    bangerctl set vm1 \"$(pidof -s firecracker)\" --tap tap-vm1 --loop /dev/loop3 \\\n"
    "        --dm banger-vm1\n"
    "    bangerctl alive vm1 && echo running\n"
    "    bangerctl --json list | jq -r '.vms[].id'\n"
    "    bangerctl watch\n"
    "    bangerctl metrics --output /var/lib/prometheus/node-exporter/banger.prom\n"
    "    BANGER_SOCKET=/var/lib/banger-dev/run/bangerd.sock bangerctl status\n";

/* --- output ----------------------------------------------------------------- */

/* Text from the daemon goes to a terminal: control characters never pass. */
static void put_text(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s, f);
}

static _printf_(2, 3) void put_kv(const char *key, const char *fmt, ...)
{
	char value[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	printf("%s:%*s", key, (int)(KEY_WIDTH - strlen(key) - 1), "");
	put_text(stdout, value);
	putchar('\n');
}

/* A string member, or fallback when it is absent or not a string. */
static const char *get_string_or(yajl_val obj, const char *key, const char *fallback)
{
	const char *s;
	return json_get_string(obj, key, &s) == 0 ? s : fallback;
}

/* The strings of an array member joined by sep, or "-" when there are none. */
static void join_strings(yajl_val obj, const char *key, const char *sep, char *out, size_t size)
{
	yajl_val arr;
	size_t used = 0;
	out[0] = '\0';
	if (json_get_array(obj, key, &arr) == 0)
		for (size_t i = 0; i < arr->u.array.len; i++) {
			yajl_val v = arr->u.array.values[i];
			int n = snprintf(out + used, size - used, "%s%s", used ? sep : "",
					 YAJL_IS_STRING(v) ? v->u.string : "?");
			if (n < 0 || (size_t)n >= size - used)
				break;
			used += (size_t)n;
		}
	if (!out[0])
		snprintf(out, size, "-");
}

static void print_json(yajl_val value)
{
	_cleanup_(yajl_gen_freep) yajl_gen g = json_gen_new();
	const unsigned char *buf;
	size_t len;
	if (!g)
		return;
	json_gen_value(g, value);
	if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok) {
		fwrite(buf, 1, len, stdout);
		putchar('\n');
	}
}

static void print_handles(yajl_val h)
{
	char list[4096];
	int64_t n;
	if (json_get_int(h, "pid", &n) == 0)
		put_kv("pid", "%" PRId64, n);
	if (json_get_int(h, "start_time", &n) == 0)
		put_kv("start-time", "%" PRId64, n);
	put_kv("boot-id", "%s", get_string_or(h, "boot_id", "-"));
	put_kv("tap", "%s", get_string_or(h, "tap", "-"));
	join_strings(h, "loops", ", ", list, sizeof(list));
	put_kv("loops", "%s", list);
	join_strings(h, "dm", ", ", list, sizeof(list));
	put_kv("dm", "%s", list);
}

static void print_vm(yajl_val vm)
{
	yajl_val planned, handles;
	bool persisted;
	char list[4096];

	put_kv("id", "%s", get_string_or(vm, "id", "?"));
	put_kv("state", "%s", get_string_or(vm, "state", "?"));
	put_kv("api-sock", "%s", get_string_or(vm, "api_sock", "?"));
	put_kv("on-exit", "%s", get_string_or(vm, "on_exit", "?"));
	if (json_get_object(vm, "planned", &planned) == 0) {
		put_kv("planned tap", "%s", get_string_or(planned, "tap", "-"));
		join_strings(planned, "loop_files", ", ", list, sizeof(list));
		put_kv("planned loop-files", "%s", list);
		join_strings(planned, "dm", ", ", list, sizeof(list));
		put_kv("planned dm", "%s", list);
	}
	if (json_get_object(vm, "handles", &handles) == 0)
		print_handles(handles);
	if (json_get_bool(vm, "persisted", &persisted) == 0)
		put_kv("persisted", "%s", persisted ? "yes" : "no (bangerd keeps retrying)");
	const char *problem;
	if (json_get_string(vm, "problem", &problem) == 0)
		put_kv("problem", "%s", problem);
}

/* --- errors ----------------------------------------------------------------- */

/*
 * What each error means, with {member} standing for a member of its
 * parameters. An error not listed here, or one whose parameters lack a
 * member its sentence names, is shown with its parameters as JSON.
 */
static const struct {
	const char *name;
	const char *sentence;
} error_sentences[] = {
    {IFACE "NoSuchVM", "no VM has the id {id}"},
    {IFACE "VMExists", "VM {id} is registered already and {state}: {reason}"},
    {IFACE "InvalidID", "{id} is not a valid VM id: {reason}"},
    {IFACE "InvalidParameter", "{parameter}: {reason}"},
    {IFACE "NotFirecracker", "pid {pid} is not the firecracker of VM {id}: {reason}"},
    {IFACE "NoHandles", "VM {id} has no handles"},
    {IFACE "StillRunning", "VM {id} is still running (pid {pid})"},
    {IFACE "PolicyRefused", "refused by the helper's policy: {reason}"},
    {IFACE "HelperUnavailable", "the privileged helper is unavailable: {reason}"},
    {IFACE "PermissionDenied", "not allowed to call {method}"},
    {IFACE "StorageFailed", "could not write {file} of VM {id}: {reason}"},
    {IFACE "CorruptState", "{file} of VM {id} was unreadable; it was kept as {kept_as}"},
    {IFACE "OutOfMemory", "bangerd ran {reason} (its own failure, not the helper's: "
			  "nothing was torn down on it); try again"},
    {"org.varlink.service.InvalidParameter", "bangerd refused the parameter {parameter}"},
    {"org.varlink.service.MethodNotFound", "bangerd has no method {method}"},
    {"org.varlink.service.InterfaceNotFound", "bangerd has no interface {interface}"},
};

/* Fill template's {member}s from params; false when one is missing or it does not fit. */
static bool expand_sentence(const char *template, yajl_val params, char *out, size_t size)
{
	size_t used = 0;
	for (const char *p = template; *p;) {
		char piece[1024];
		if (*p == '{') {
			const char *end = strchr(p, '}');
			const char *s;
			int64_t n;
			char key[64];
			if (!end || (size_t)(end - p) > sizeof(key))
				return false;
			snprintf(key, sizeof(key), "%.*s", (int)(end - p - 1), p + 1);
			if (json_get_string(params, key, &s) == 0)
				snprintf(piece, sizeof(piece), "%s", s);
			else if (json_get_int(params, key, &n) == 0)
				snprintf(piece, sizeof(piece), "%" PRId64, n);
			else
				return false;
			p = end + 1;
		} else {
			size_t len = strcspn(p, "{");
			snprintf(piece, sizeof(piece), "%.*s", (int)len, p);
			p += len;
		}
		int n = snprintf(out + used, size - used, "%s", piece);
		if (n < 0 || (size_t)n >= size - used)
			return false;
		used += (size_t)n;
	}
	return true;
}

static void print_error_reply(const struct varlink_client_reply *reply)
{
	char sentence[2048];
	bool explained = false;
	for (size_t i = 0; i < ELEMENTSOF(error_sentences) && !explained; i++)
		if (strcmp(error_sentences[i].name, reply->error) == 0)
			explained = expand_sentence(error_sentences[i].sentence, reply->parameters,
						    sentence, sizeof(sentence));
	fputs("bangerctl: ", stderr);
	put_text(stderr, reply->error);
	fputs(": ", stderr);
	if (explained) {
		put_text(stderr, sentence);
	} else {
		_cleanup_(yajl_gen_freep) yajl_gen g = json_gen_new();
		const unsigned char *buf;
		size_t len;
		if (g)
			json_gen_value(g, reply->parameters);
		if (g && yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok)
			fwrite(buf, 1, len, stderr);
	}
	fputc('\n', stderr);
}

static _printf_(1, 2) int usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("bangerctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see bangerctl --help)\n", stderr);
	return EXIT_USAGE;
}

/* A failure of the connection itself: name the socket, since that is what to check. */
static int transport_error(const struct ctl *ctl, int r, const struct varlink_client_reply *reply)
{
	if (r == -ECONNRESET)
		fprintf(stderr, "bangerctl: %s: bangerd closed the connection without an answer\n",
			ctl->socket_path);
	else if (r == -EBADMSG)
		fprintf(stderr, "bangerctl: %s: bangerd sent a malformed reply: %s\n",
			ctl->socket_path, reply->why);
	else
		fprintf(stderr, "bangerctl: %s: %s\n", ctl->socket_path, strerror(-r));
	return EXIT_FAILED;
}

/* --- parameters, one builder per command that takes any ---------------------- */

static void gen_repeated(yajl_gen g, const char *key, const struct repeated *r)
{
	json_gen_string(g, key);
	yajl_gen_array_open(g);
	for (size_t i = 0; i < r->count; i++)
		json_gen_string(g, r->values[i]);
	yajl_gen_array_close(g);
}

static int build_id(struct ctl *ctl, yajl_gen g)
{
	json_gen_kv_string(g, "id", ctl->args[0]);
	return EXIT_OK;
}

static int build_register(struct ctl *ctl, yajl_gen g)
{
	if (!ctl->api_sock)
		return usage_error("register needs --api-sock PATH");
	if (ctl->on_exit && strcmp(ctl->on_exit, "teardown") != 0 &&
	    strcmp(ctl->on_exit, "keep") != 0)
		return usage_error("--on-exit takes teardown or keep, not '%s'", ctl->on_exit);
	json_gen_kv_string(g, "id", ctl->args[0]);
	json_gen_kv_string(g, "api_sock", ctl->api_sock);
	if (ctl->tap || ctl->loop_files.count || ctl->dm.count) {
		json_gen_string(g, "planned");
		yajl_gen_map_open(g);
		if (ctl->tap)
			json_gen_kv_string(g, "tap", ctl->tap);
		if (ctl->loop_files.count)
			gen_repeated(g, "loop_files", &ctl->loop_files);
		if (ctl->dm.count)
			gen_repeated(g, "dm", &ctl->dm);
		yajl_gen_map_close(g);
	}
	if (ctl->on_exit)
		json_gen_kv_string(g, "on_exit", ctl->on_exit);
	return EXIT_OK;
}

/* A pid as the kernel knows them: decimal, 1 to INT32_MAX, nothing else. */
static bool parse_pid(const char *s, int32_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0 || v > INT32_MAX)
		return false;
	*out = (int32_t)v;
	return true;
}

static int build_set(struct ctl *ctl, yajl_gen g)
{
	int32_t pid;
	if (!parse_pid(ctl->args[1], &pid))
		return usage_error("'%s' is not a pid (a positive integer)", ctl->args[1]);
	/*
	 * The pidfd names the process we were told about; the pid alone could
	 * name a newer process by the time the helper looks. Without pidfds
	 * (ENOSYS, kernels before 5.3) the pid is all there is.
	 */
	ctl->pidfd = pidfd_open(pid, 0);
	if (ctl->pidfd < 0 && errno != ENOSYS) {
		fprintf(stderr, "bangerctl: cannot open pid %" PRId32 ": %s\n", pid,
			strerror(errno));
		return EXIT_FAILED;
	}
	json_gen_kv_string(g, "id", ctl->args[0]);
	json_gen_kv_int(g, "pid", pid);
	if (ctl->tap)
		json_gen_kv_string(g, "tap", ctl->tap);
	if (ctl->loops.count)
		gen_repeated(g, "loops", &ctl->loops);
	if (ctl->dm.count)
		gen_repeated(g, "dm", &ctl->dm);
	return EXIT_OK;
}

/* --- answers, one printer per command that prints one ------------------------- */

static void print_vm_reply(yajl_val params)
{
	yajl_val vm;
	if (json_get_object(params, "vm", &vm) == 0)
		print_vm(vm);
}

static void print_get_reply(yajl_val params)
{
	yajl_val handles;
	if (json_get_object(params, "handles", &handles) == 0)
		print_handles(handles);
}

static void print_alive(yajl_val params)
{
	put_text(stdout, get_string_or(params, "alive", "unknown"));
	putchar('\n');
}

/* alive answers a question: anything but "alive" is a no. */
static int verdict_alive(yajl_val params)
{
	return strcmp(get_string_or(params, "alive", "unknown"), "alive") == 0 ? EXIT_OK : EXIT_NO;
}

enum list_column { COL_ID, COL_STATE, COL_PID, COL_TAP, COL_LOOPS, COL_DM, COL_API_SOCK, N_COLS };

static const char *const list_headers[N_COLS] = {"ID",	  "STATE", "PID",     "TAP",
						 "LOOPS", "DM",	   "API-SOCK"};

/* One row of the list table, from the live handles or else the planned resources. */
static void list_row(yajl_val vm, char cells[N_COLS][1024])
{
	yajl_val handles, planned;
	int64_t pid;
	bool has_handles = json_get_object(vm, "handles", &handles) == 0;
	bool has_planned = json_get_object(vm, "planned", &planned) == 0;
	yajl_val source = has_handles ? handles : has_planned ? planned : NULL;

	snprintf(cells[COL_ID], 1024, "%s", get_string_or(vm, "id", "?"));
	snprintf(cells[COL_STATE], 1024, "%s", get_string_or(vm, "state", "?"));
	if (has_handles && json_get_int(handles, "pid", &pid) == 0)
		snprintf(cells[COL_PID], 1024, "%" PRId64, pid);
	else
		snprintf(cells[COL_PID], 1024, "-");
	snprintf(cells[COL_TAP], 1024, "%s", source ? get_string_or(source, "tap", "-") : "-");
	join_strings(source, has_handles ? "loops" : "loop_files", ",", cells[COL_LOOPS], 1024);
	join_strings(source, "dm", ",", cells[COL_DM], 1024);
	snprintf(cells[COL_API_SOCK], 1024, "%s", get_string_or(vm, "api_sock", "?"));
}

static void print_row(char cells[N_COLS][1024], const size_t *widths)
{
	for (int c = 0; c < N_COLS; c++) {
		put_text(stdout, cells[c]);
		if (c + 1 < N_COLS)
			printf("%*s", (int)(widths[c] - strlen(cells[c]) + 2), "");
	}
	putchar('\n');
}

static void print_list(yajl_val params)
{
	yajl_val vms;
	size_t widths[N_COLS];
	if (json_get_array(params, "vms", &vms) < 0)
		return;
	size_t n = vms->u.array.len;
	_cleanup_free_ char(*cells)[N_COLS][1024] = calloc(n + 1, sizeof(*cells));
	if (!cells)
		return;
	for (int c = 0; c < N_COLS; c++) {
		snprintf(cells[0][c], 1024, "%s", list_headers[c]);
		widths[c] = strlen(list_headers[c]);
	}
	for (size_t i = 0; i < n; i++) {
		list_row(vms->u.array.values[i], cells[i + 1]);
		for (int c = 0; c < N_COLS; c++)
			if (strlen(cells[i + 1][c]) > widths[c])
				widths[c] = strlen(cells[i + 1][c]);
	}
	for (size_t i = 0; i <= n; i++)
		print_row(cells[i], widths);
	/* What a table cell cannot say: records not on disk yet, records that could not be read. */
	for (size_t i = 0; i < n; i++) {
		yajl_val vm = vms->u.array.values[i];
		bool persisted = true;
		const char *problem;
		json_get_bool(vm, "persisted", &persisted);
		if (!persisted) {
			put_text(stdout, get_string_or(vm, "id", "?"));
			fputs(": not persisted yet (bangerd keeps retrying)\n", stdout);
		}
		if (json_get_string(vm, "problem", &problem) == 0) {
			put_text(stdout, get_string_or(vm, "id", "?"));
			fputs(": ", stdout);
			put_text(stdout, problem);
			putchar('\n');
		}
	}
}

static void format_duration(int64_t usec, char *out, size_t size)
{
	int64_t s = usec / 1000000;
	if (s >= 86400)
		snprintf(out, size, "%" PRId64 "d %02" PRId64 "h %02" PRId64 "m %02" PRId64 "s",
			 s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
	else if (s >= 3600)
		snprintf(out, size, "%" PRId64 "h %02" PRId64 "m %02" PRId64 "s", s / 3600,
			 s % 3600 / 60, s % 60);
	else if (s >= 60)
		snprintf(out, size, "%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
	else
		snprintf(out, size, "%" PRId64 ".%03" PRId64 "s", s, usec % 1000000 / 1000);
}

static void put_int_kv(const char *key, yajl_val obj, const char *member)
{
	int64_t n;
	if (json_get_int(obj, member, &n) == 0)
		put_kv(key, "%" PRId64, n);
	else
		put_kv(key, "?");
}

static void print_status(yajl_val params)
{
	yajl_val counts, counters;
	int64_t uptime;
	bool privileged;
	char text[64];

	put_kv("version", "%s", get_string_or(params, "version", "?"));
	if (json_get_int(params, "uptime_usec", &uptime) == 0) {
		format_duration(uptime, text, sizeof(text));
		put_kv("uptime", "%s", text);
	}
	if (json_get_object(params, "counts", &counts) == 0) {
		put_int_kv("vms", counts, "vms");
		put_int_kv("starting", counts, "starting");
		put_int_kv("running", counts, "running");
		put_int_kv("stopped", counts, "stopped");
	}
	put_int_kv("helper pid", params, "helper_pid");
	if (json_get_bool(params, "helper_privileged", &privileged) == 0)
		put_kv("helper privileged", "%s", privileged ? "yes" : "no");
	put_kv("helper state", "%s", get_string_or(params, "helper_state", "?"));
	const char *problem = get_string_or(params, "helper_problem", NULL);
	if (problem)
		put_kv("helper problem", "%s", problem);
	if (json_get_object(params, "counters", &counters) == 0) {
		put_int_kv("calls", counters, "calls");
		put_int_kv("errors", counters, "errors");
		put_int_kv("connections", counters, "connections");
		put_int_kv("connections refused", counters, "connections_refused");
		put_int_kv("connections dropped", counters, "connections_dropped");
		put_int_kv("unread output bytes", counters, "unread_output_bytes");
		put_int_kv("fds closing", counters, "fds_closing");
		put_int_kv("persist failures", counters, "persist_failures");
		put_int_kv("events", counters, "events");
		put_int_kv("helper replacements", counters, "helper_replacements");
	}
}

/* One event line: UTC time to the microsecond, kind, then VM id, pid and detail when given. */
static void print_event(yajl_val event)
{
	int64_t usec, pid;
	char when[64] = "?";
	if (json_get_int(event, "time_usec", &usec) == 0) {
		time_t sec = (time_t)(usec / 1000000);
		struct tm tm;
		if (gmtime_r(&sec, &tm)) {
			size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
			snprintf(when + n, sizeof(when) - n, ".%06" PRId64 "Z", usec % 1000000);
		}
	}
	printf("%s  ", when);
	const char *kind = get_string_or(event, "kind", "?");
	put_text(stdout, kind);
	const char *id;
	if (json_get_string(event, "id", &id) == 0) { /* every kind but "subscribed" names a VM */
		printf("%*s", strlen(kind) < 17 ? (int)(19 - strlen(kind)) : 2, "");
		put_text(stdout, id);
	}
	if (json_get_int(event, "pid", &pid) == 0)
		printf("  pid %" PRId64, pid);
	const char *detail;
	if (json_get_string(event, "detail", &detail) == 0) {
		fputs("  ", stdout);
		put_text(stdout, detail);
	}
	putchar('\n');
}

static void print_event_reply(yajl_val params)
{
	yajl_val event;
	if (json_get_object(params, "event", &event) == 0)
		print_event(event);
}

/* --- running a command -------------------------------------------------------- */

/* Print an answer the way the command line asked for. */
static void print_answer(const struct ctl *ctl, yajl_val params)
{
	if (ctl->json)
		print_json(params);
	else if (ctl->cmd->print)
		ctl->cmd->print(params);
}

/* Send one call, wait for its answer: EXIT_OK with reply filled, else the failure, said. */
static int call_answered(struct ctl *ctl, yajl_gen call, struct varlink_client_reply *reply)
{
	int r = varlink_client_call(ctl->client, call, ctl->pidfd >= 0 ? &ctl->pidfd : NULL,
				    ctl->pidfd >= 0 ? 1 : 0, reply);
	if (r < 0)
		return transport_error(ctl, r, reply);
	if (reply->error) {
		print_error_reply(reply);
		varlink_client_reply_clear(reply);
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

/* One call, one answer. */
static int run_call(struct ctl *ctl, yajl_gen call)
{
	struct varlink_client_reply reply = {.why = ""};
	int r = call_answered(ctl, call, &reply);
	if (r != EXIT_OK)
		return r;
	print_answer(ctl, reply.parameters);
	int status = ctl->cmd->verdict ? ctl->cmd->verdict(reply.parameters) : EXIT_OK;
	varlink_client_reply_clear(&reply);
	return status;
}

/* A "more" call: print each answer as it comes, until the daemon ends the stream. */
static int run_stream(struct ctl *ctl, yajl_gen call)
{
	struct varlink_client_reply reply = {.why = ""};
	int r = varlink_client_send(ctl->client, call, true, NULL, 0);
	if (r < 0)
		return transport_error(ctl, r, &reply);
	/* Each event is a line someone may be waiting for: never sit on one in a buffer. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		r = varlink_client_read_reply(ctl->client, &reply);
		if (r < 0)
			return transport_error(ctl, r, &reply);
		if (reply.error) {
			print_error_reply(&reply);
			varlink_client_reply_clear(&reply);
			return EXIT_FAILED;
		}
		/* The last reply, when bangerd ends the stream, carries no event. */
		if (reply.parameters->u.object.len > 0)
			print_answer(ctl, reply.parameters);
		bool more = reply.continues;
		varlink_client_reply_clear(&reply);
		if (!more)
			return EXIT_OK;
	}
}

/* metrics: GetStatus for Prometheus, on stdout or atomically into --output. */
static int run_metrics(struct ctl *ctl, yajl_gen call)
{
	struct varlink_client_reply reply = {.why = ""};
	int r, status = call_answered(ctl, call, &reply);
	if (status != EXIT_OK)
		return status;
	if (ctl->json) {
		print_json(reply.parameters);
	} else if (!ctl->output) {
		metrics_format(stdout, reply.parameters);
	} else if ((r = metrics_write_file(ctl->output, reply.parameters)) < 0) {
		fprintf(stderr, "bangerctl: cannot write %s: %s\n", ctl->output, strerror(-r));
		status = EXIT_FAILED;
	}
	varlink_client_reply_clear(&reply);
	return status;
}

static const struct command commands[] = {
    {"register", "Register", "ID", 1, OPT_API_SOCK | OPT_TAP | OPT_LOOP_FILE | OPT_DM | OPT_ON_EXIT,
     build_register, print_vm_reply, NULL, run_call},
    {"set", "SetHandles", "ID PID", 2, OPT_TAP | OPT_LOOP | OPT_DM, build_set, print_vm_reply, NULL,
     run_call},
    {"get", "GetHandles", "ID", 1, 0, build_id, print_get_reply, NULL, run_call},
    {"alive", "IsAlive", "ID", 1, 0, build_id, print_alive, verdict_alive, run_call},
    {"clear", "ClearHandles", "ID", 1, 0, build_id, NULL, NULL, run_call},
    {"teardown", "Teardown", "ID", 1, 0, build_id, NULL, NULL, run_call},
    {"unregister", "Unregister", "ID", 1, 0, build_id, NULL, NULL, run_call},
    {"list", "List", "", 0, 0, NULL, print_list, NULL, run_call},
    {"reconcile", "Reconcile", "", 0, 0, NULL, NULL, NULL, run_call},
    {"watch", "Watch", "", 0, 0, NULL, print_event_reply, NULL, run_stream},
    {"status", "GetStatus", "", 0, 0, NULL, print_status, NULL, run_call},
    {"metrics", "GetStatus", "", 0, OPT_OUTPUT, NULL, NULL, NULL, run_metrics},
};

/* --- command line ----------------------------------------------------------- */

enum long_option {
	LONG_SOCKET = 256,
	LONG_JSON,
	LONG_VERSION,
	LONG_API_SOCK,
	LONG_TAP,
	LONG_LOOP_FILE,
	LONG_LOOP,
	LONG_DM,
	LONG_ON_EXIT,
	LONG_OUTPUT,
};

static const struct option long_options[] = {
    {"socket", required_argument, NULL, LONG_SOCKET},
    {"json", no_argument, NULL, LONG_JSON},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, LONG_VERSION},
    {"api-sock", required_argument, NULL, LONG_API_SOCK},
    {"tap", required_argument, NULL, LONG_TAP},
    {"loop-file", required_argument, NULL, LONG_LOOP_FILE},
    {"loop", required_argument, NULL, LONG_LOOP},
    {"dm", required_argument, NULL, LONG_DM},
    {"on-exit", required_argument, NULL, LONG_ON_EXIT},
    {"output", required_argument, NULL, LONG_OUTPUT},
    {NULL, 0, NULL, 0},
};

static int add_repeated(struct repeated *r, const char *name, const char *value)
{
	if (r->count >= MAX_REPEATED_OPTION)
		return usage_error("%s given more than %d times", name, MAX_REPEATED_OPTION);
	r->values[r->count++] = value;
	return EXIT_OK;
}

/* Set a single-valued option; giving it twice is a mistake worth pointing out. */
static int set_once(const char **field, const char *name, const char *value)
{
	if (*field)
		return usage_error("%s given twice", name);
	*field = value;
	return EXIT_OK;
}

/*
 * The options that carry a value: the bit a command must allow, and where
 * the value goes (a const char * of struct ctl, or, for one that may be given
 * again, a struct repeated), as systemd's config tables say it with offsetof.
 */
static const struct value_option {
	int id;	      /* enum long_option */
	unsigned bit; /* enum command_option */
	const char *name;
	bool repeated;
	size_t field; /* offsetof(struct ctl, ...) */
} value_options[] = {
    {LONG_API_SOCK, OPT_API_SOCK, "--api-sock", false, offsetof(struct ctl, api_sock)},
    {LONG_TAP, OPT_TAP, "--tap", false, offsetof(struct ctl, tap)},
    {LONG_LOOP_FILE, OPT_LOOP_FILE, "--loop-file", true, offsetof(struct ctl, loop_files)},
    {LONG_LOOP, OPT_LOOP, "--loop", true, offsetof(struct ctl, loops)},
    {LONG_DM, OPT_DM, "--dm", true, offsetof(struct ctl, dm)},
    {LONG_ON_EXIT, OPT_ON_EXIT, "--on-exit", false, offsetof(struct ctl, on_exit)},
    {LONG_OUTPUT, OPT_OUTPUT, "--output", false, offsetof(struct ctl, output)},
};

/* The value option of a getopt_long id, or of one enum command_option bit; NULL if none. */
static const struct value_option *value_option_of(int id, unsigned bit)
{
	for (size_t i = 0; i < ELEMENTSOF(value_options); i++)
		if ((id && value_options[i].id == id) || (bit && value_options[i].bit == bit))
			return &value_options[i];
	return NULL;
}

static int set_value_option(struct ctl *ctl, const struct value_option *o, const char *value)
{
	char *field = (char *)ctl + o->field;

	ctl->given |= o->bit;
	if (o->repeated)
		return add_repeated((struct repeated *)field, o->name, value);
	return set_once((const char **)field, o->name, value);
}

/* Parse argv into ctl; EXIT_OK to go on, -1 after --help/--version, or EXIT_USAGE. */
static int parse_command_line(int argc, char **argv, struct ctl *ctl)
{
	const struct value_option *o;
	int opt, status = EXIT_OK;

	opterr = 0;
	while (status == EXIT_OK &&
	       (opt = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(usage_text, stdout);
			return -1;
		case LONG_VERSION:
			printf("bangerctl %s\n", BANGER_VERSION);
			return -1;
		case LONG_SOCKET:
			ctl->socket_path = optarg;
			break;
		case LONG_JSON:
			ctl->json = true;
			break;
		case ':':
			return usage_error("%s needs an argument", argv[optind - 1]);
		default:
			o = value_option_of(opt, 0);
			if (!o)
				return usage_error("unknown option '%s'", argv[optind - 1]);
			status = set_value_option(ctl, o, optarg);
		}
	}
	if (status != EXIT_OK)
		return status;
	ctl->args = argv + optind;
	ctl->nargs = argc - optind;
	return EXIT_OK;
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Take the command ctl->args names and check its arguments and options against it. */
static int select_command(struct ctl *ctl)
{
	if (ctl->nargs == 0)
		return usage_error("no command given");
	const struct command *cmd = find_command(ctl->args[0]);
	if (!cmd)
		return usage_error("unknown command '%s'", ctl->args[0]);
	ctl->cmd = cmd;
	ctl->args++;
	ctl->nargs--;
	if (ctl->nargs != cmd->nargs)
		return cmd->nargs ? usage_error("%s takes %s", cmd->name, cmd->arg_names)
				  : usage_error("%s takes no arguments", cmd->name);
	unsigned stray = ctl->given & ~cmd->options;
	if (stray)
		return usage_error("%s does not apply to %s",
				   value_option_of(0, stray & -stray)->name, cmd->name);
	return EXIT_OK;
}

/*
 * The whole call, built before connecting: everything that can be wrong with
 * the command line is found first. On EXIT_OK *out holds the call.
 */
static int build_call(struct ctl *ctl, yajl_gen *out)
{
	char method[128];
	snprintf(method, sizeof(method), IFACE "%s", ctl->cmd->method);
	_cleanup_(yajl_gen_freep) yajl_gen call = varlink_client_call_begin(method);
	if (!call) {
		fprintf(stderr, "bangerctl: out of memory\n");
		return EXIT_FAILED;
	}
	int status = ctl->cmd->build ? ctl->cmd->build(ctl, call) : EXIT_OK;
	if (status == EXIT_OK)
		*out = TAKE_PTR(call);
	return status;
}

/*
 * Connect to bangerd (--socket, else $BANGER_SOCKET, else the default) and run
 * the command's call, which this takes over.
 */
static int connect_and_run(struct ctl *ctl, yajl_gen call_in)
{
	_cleanup_(yajl_gen_freep) yajl_gen call = call_in;
	_cleanup_(varlink_client_freep) struct varlink_client *client = NULL;

	if (!ctl->socket_path)
		ctl->socket_path = getenv("BANGER_SOCKET");
	if (!ctl->socket_path || !ctl->socket_path[0])
		ctl->socket_path = DEFAULT_SOCKET_PATH;
	int r = varlink_client_connect(ctl->socket_path, &client);
	if (r < 0) {
		fprintf(stderr, "bangerctl: cannot connect to %s: %s\n", ctl->socket_path,
			strerror(-r));
		return EXIT_FAILED;
	}
	ctl->client = client;
	int status = ctl->cmd->run(ctl, TAKE_PTR(call));
	ctl->client = NULL;
	return status;
}

/* After the command ran: what must happen however it went; the exit status. */
static int finish(struct ctl *ctl, int status)
{
	int r;

	safe_close(ctl->pidfd);
	/* A scraper must not take the last file's figures for today's: say bangerd is down. */
	if (status == EXIT_FAILED && ctl->output && (r = metrics_write_file(ctl->output, NULL)) < 0)
		fprintf(stderr, "bangerctl: cannot write %s: %s\n", ctl->output, strerror(-r));
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "bangerctl: writing the answer failed\n");
		return EXIT_FAILED;
	}
	return status;
}

int main(int argc, char **argv)
{
	struct ctl ctl = {.pidfd = -1};
	yajl_gen call = NULL;

	int status = parse_command_line(argc, argv, &ctl);
	if (status < 0)
		return EXIT_OK; /* --help or --version */
	if (status == EXIT_OK)
		status = select_command(&ctl);
	if (status == EXIT_OK)
		status = build_call(&ctl, &call);
	if (status != EXIT_OK) {
		safe_close(ctl.pidfd);
		return status;
	}
	return finish(&ctl, connect_and_run(&ctl, call));
}
