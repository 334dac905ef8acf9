/*
 * The privsep protocol between bangerd and banger-privhelper (DESIGN §5).
 *
 * SOCK_SEQPACKET: one message is one datagram, a fixed header followed by
 * a payload whose layout is fixed per type. Strings live in fixed-size
 * fields that must be NUL-terminated and zero-filled after the terminator,
 * so a receiver never parses a length it did not check. Both ends are built
 * from this one header; the version in every header guards the layout.
 *
 * The decoder trusts nothing: it checks magic, version, direction, exact
 * payload size, declared against received fd count, string fields, counts
 * and reserved bytes. A message that fails is a protocol violation.
 */
#pragma once

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fdpass.h"
#include "macro.h"

#define PS_MAGIC 0x52474e42u /* "BNGR" in little-endian byte order */
/*
 * 3: the caller names bangerd's call and the VM apart; 4: loops carry their recorded diskseq;
 * 5: the tap carries its recorded ifindex
 */
#define PS_PROTOCOL_VERSION 6

/* An api socket path must fit sockaddr_un.sun_path, or firecracker could not bind it. */
#define PS_SOCK_PATH_MAX 108
#define PS_PATH_MAX	 256 /* a loop backing file or a policy root */
#define PS_DM_NAME_MAX	 128 /* DM_NAME_LEN */
#define PS_DM_UUID_MAX	 129 /* DM_UUID_LEN */
#define PS_IFNAME_MAX	 16  /* IFNAMSIZ */
#define PS_EXE_NAME_MAX	 64
#define PS_CALL_MAX	 32 /* bangerd's call id, "SetHandles#17" */
#define PS_VM_ID_MAX	 64 /* bangerd's VM ids: [A-Za-z0-9][A-Za-z0-9_.-]{0,63} */

#define PS_POLICY_MAX_ROOTS 16
#define PS_POLICY_MAX_NAMES 4

#define PS_SCAN_PART_MAX	128 /* sockets per SCAN request part */
#define PS_SCAN_MAX_PARTS	512 /* so at most 65,536 sockets per scan */
#define PS_SCAN_MAX_SOCKETS	(PS_SCAN_PART_MAX * PS_SCAN_MAX_PARTS)
#define PS_SCAN_REPLY_MAX	64 /* entries (and pidfds) per SCAN reply part */
#define PS_TEARDOWN_MAX_DM	8
#define PS_TEARDOWN_MAX_LOOPS	8
#define PS_TEARDOWN_MAX_RESULTS (PS_TEARDOWN_MAX_DM + PS_TEARDOWN_MAX_LOOPS + 1)

static_assert(PS_SCAN_REPLY_MAX <= FDPASS_MAX_FDS, "a SCAN reply part must fit one SCM_RIGHTS");

enum ps_type {
	PS_HELLO = 1,
	PS_HELLO_REPLY = 2,
	PS_PROBE = 3,
	PS_PROBE_REPLY = 4,
	PS_SCAN = 5,
	PS_SCAN_REPLY = 6,
	PS_TEARDOWN = 7,
	PS_TEARDOWN_REPLY = 8,
};

/* Who a message is for: requests go to the helper, replies to the daemon. */
enum ps_direction {
	PS_TO_HELPER,
	PS_TO_DAEMON,
};

/* Every request's reply is the next type number. */
#define PS_REPLY_TO(type) ((uint16_t)((type) + 1))

struct ps_header {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint64_t request_id;
	uint32_t payload_len;
	uint32_t nfds; /* fds attached; must equal what the kernel delivered */
};
static_assert(sizeof(struct ps_header) == 24, "header layout");

/*
 * The client that caused a request, sent along by bangerd so that the
 * helper's audit line names it. pid 0 means bangerd acted on its own
 * (reconcile, exit watching). call is bangerd's id for the call or task
 * ("SetHandles#17", "startup"), the one its own log lines carry; vm is the
 * VM the request is about, empty when it is about none or many (SCAN).
 * Both are printable ASCII without spaces (vm: a VM id's own grammar), so
 * that each can become a log field of its own.
 */
struct ps_caller {
	uint32_t uid;
	uint32_t gid;
	int32_t pid;
	uint32_t reserved;
	char call[PS_CALL_MAX];
	char vm[PS_VM_ID_MAX + 8]; /* the id, its NUL, zero fill */
};

/* The helper's policy, fixed on its command line; HELLO_REPLY echoes it. */
struct ps_policy {
	char tap_prefix[PS_IFNAME_MAX];
	char dm_prefix[PS_DM_NAME_MAX];
	char dm_uuid_prefix[PS_DM_UUID_MAX];
	char reserved[7];
	uint32_t n_loop_roots;
	uint32_t n_api_sock_roots;
	uint32_t n_firecracker_names;
	uint32_t reserved2;
	char loop_roots[PS_POLICY_MAX_ROOTS][PS_PATH_MAX];
	char api_sock_roots[PS_POLICY_MAX_ROOTS][PS_PATH_MAX];
	char firecracker_names[PS_POLICY_MAX_NAMES][PS_EXE_NAME_MAX];
};

struct ps_hello {
	struct ps_caller caller;
	uint32_t protocol_version;
	uint32_t reserved;
};

#define PS_HELLO_PRIVILEGED 0x1u /* the helper runs as root with its capabilities */

struct ps_hello_reply {
	uint32_t protocol_version;
	int32_t helper_pid;
	uint32_t helper_uid;
	uint32_t flags;
	struct ps_policy policy;
};

#define PS_PROBE_HAS_PIDFD 0x1u

struct ps_probe {
	struct ps_caller caller;
	int32_t pid; /* ignored when a pidfd is attached: the pidfd names the process */
	uint32_t flags;
	uint64_t start_time; /* clock ticks since boot (stat field 22); 0 = don't check */
	char api_sock[PS_SOCK_PATH_MAX];
	uint32_t reserved;
};

enum ps_probe_status {
	PS_PROBE_RUNNING = 1,
	PS_PROBE_NOT_RUNNING = 2,
	PS_PROBE_REFUSED = 3,
	PS_PROBE_FAILED = 4, /* could not tell: err says why (EACCES without privilege, ...) */
};

/* Why a resource or process was judged as it was; shared by every reply. */
enum ps_reason {
	PS_REASON_NONE = 0,
	PS_REASON_NO_PROCESS,
	PS_REASON_NOT_FIRECRACKER,
	PS_REASON_API_SOCK_MISMATCH,
	PS_REASON_START_TIME_MISMATCH,
	PS_REASON_OUTSIDE_ROOTS,
	PS_REASON_EXITED_DURING_PROBE,
	PS_REASON_PIDFD_INVALID,
	PS_REASON_MISSING_PREFIX,
	PS_REASON_MISSING_UUID_PREFIX,
	PS_REASON_WRONG_LINK_KIND,
	PS_REASON_BAD_NAME,
	PS_REASON_DEPENDENCY_BUSY,
	PS_REASON_BACKING_CHANGED, /* a loop's backing file is not the file its status names */
	PS_REASON_NO_LISTENER,	   /* holds no listening socket bound to the api socket's node */
	PS_REASON_DISKSEQ_CHANGED, /* the loop was re-attached since its diskseq was recorded */
	PS_REASON_IFINDEX_CHANGED, /* the tap's name now names another link than the recorded */
	PS_REASON_MAX_,
};

struct ps_probe_reply {
	int32_t status; /* enum ps_probe_status */
	int32_t reason; /* enum ps_reason */
	int32_t err;	/* 0 or a negative errno */
	int32_t pid;
	uint64_t start_time;
};

/*
 * A scan may name more sockets than one datagram holds, so its request comes
 * in parts 0..nparts-1 that share one request id and follow each other
 * directly; the helper walks /proc once after the last part. Unused entries
 * are all zero.
 */
struct ps_scan {
	struct ps_caller caller;
	uint32_t part;
	uint32_t nparts;
	uint32_t count;
	/*
	 * How long the walk of /proc may take, 1..PS_SCAN_BUDGET_MAX_MS, the same in every
	 * part: what it has not inspected by then counts as uninspected, so that a host full
	 * of processes (or of one process's fds) makes the answer incomplete, never late.
	 */
	uint32_t budget_ms;
	char sockets[PS_SCAN_PART_MAX][PS_SOCK_PATH_MAX];
};

enum ps_scan_kind {
	/* index names the requested socket; exactly one process holds its listener; pidfd attached
	 */
	PS_SCAN_MATCH = 1,
	/* a firecracker listening on a socket under the roots that no requested socket is */
	PS_SCAN_ORPHAN = 2,
	/* one of several processes that all hold index's listener: never adopted, no pidfd */
	PS_SCAN_AMBIGUOUS = 3,
	/* index's socket could not be looked at (err says why): its liveness is unknown */
	PS_SCAN_UNKNOWN = 4,
};

struct ps_scan_entry {
	uint32_t kind;
	uint32_t index;
	int32_t pid; /* 0 only for PS_SCAN_UNKNOWN */
	uint32_t has_pidfd;
	uint64_t start_time;
	char api_sock[PS_SOCK_PATH_MAX]; /* ORPHAN: the host path verified to be its socket */
	int32_t err;			 /* UNKNOWN: a negative errno; otherwise 0 */
};

#define PS_SCAN_LAST	      0x1u
#define PS_SCAN_CUT_SHORT     0x2u /* the walk ran out of its budget (uninspected > 0) */
#define PS_SCAN_BUDGET_MAX_MS 600000u

/* Replies to one scan come in parts; the one flagged PS_SCAN_LAST ends it. */
struct ps_scan_reply {
	uint32_t part;
	uint32_t flags;
	uint32_t count;
	int32_t err;
	/*
	 * Processes the helper could not inspect (EACCES). When non-zero, a
	 * socket that matched nothing may still belong to a live process, so
	 * the daemon must read "not found" as unknown, never as dead.
	 */
	uint32_t uninspected;
	uint32_t reserved;
	struct ps_scan_entry entries[PS_SCAN_REPLY_MAX];
};

/*
 * loops[] holds /dev/loopN device paths or, for loops never reported, backing file paths.
 * loop_diskseq[i] is the disk sequence number bangerd recorded for loops[i] when the VM
 * reported it (the kernel gives every attach a new one and never reuses it), or 0 when
 * none was recorded (a backing file, or a record of a bangerd older than protocol 4);
 * entries from n_loops on are 0.
 * tap_ifindex is the ifindex bangerd recorded for tap when the VM reported it (the kernel
 * numbers links without reusing a number until it wraps), or 0 when none was recorded (a
 * planned tap, or a record of a bangerd older than protocol 5); 0 when tap is empty, and
 * never above INT32_MAX (an ifindex is a positive int).
 */
struct ps_teardown {
	struct ps_caller caller;
	uint32_t n_dm;
	uint32_t n_loops;
	char dm[PS_TEARDOWN_MAX_DM][PS_DM_NAME_MAX];
	char loops[PS_TEARDOWN_MAX_LOOPS][PS_PATH_MAX];
	uint64_t loop_diskseq[PS_TEARDOWN_MAX_LOOPS];
	char tap[PS_IFNAME_MAX];
	uint32_t tap_ifindex;
	uint32_t reserved;
};

enum ps_resource_kind {
	PS_RESOURCE_DM = 1,
	PS_RESOURCE_LOOP = 2,
	PS_RESOURCE_TAP = 3,
};

enum ps_teardown_status {
	PS_TEARDOWN_REMOVED = 1,
	PS_TEARDOWN_ABSENT = 2,
	PS_TEARDOWN_REFUSED = 3,
	PS_TEARDOWN_BUSY = 4,
	PS_TEARDOWN_FAILED = 5,
};

/*
 * A loop's result carries the diskseq the request recorded for it (0: none) and, when the
 * helper read the device's own, that one: they differ exactly when reason is
 * PS_REASON_DISKSEQ_CHANGED. Both are 0 for other kinds. A tap's result carries the same for
 * its ifindex: ifindex recorded (0: none), ifindex_found the link's that bears the name; they
 * differ exactly when reason is PS_REASON_IFINDEX_CHANGED; both are 0 for other kinds.
 */
struct ps_teardown_result {
	uint32_t kind;
	uint32_t status;
	int32_t reason;
	int32_t err;
	uint64_t diskseq;
	uint64_t diskseq_found;
	uint32_t ifindex;
	uint32_t ifindex_found;
	char name[PS_PATH_MAX];
};

struct ps_teardown_reply {
	int32_t err; /* a failure of the whole request, or 0 */
	uint32_t count;
	struct ps_teardown_result results[PS_TEARDOWN_MAX_RESULTS];
};

/* Every byte of a payload is a named field: no compiler padding can carry stale memory. */
static_assert(sizeof(struct ps_caller) == 120, "ps_caller layout");
static_assert(sizeof(struct ps_policy) == 280 + 16 + 2 * PS_POLICY_MAX_ROOTS * PS_PATH_MAX +
					      PS_POLICY_MAX_NAMES * PS_EXE_NAME_MAX,
	      "ps_policy layout");
static_assert(sizeof(struct ps_probe) == 248, "ps_probe layout");
static_assert(sizeof(struct ps_probe_reply) == 24, "ps_probe_reply layout");
static_assert(sizeof(struct ps_scan) == 136 + PS_SCAN_PART_MAX * PS_SOCK_PATH_MAX,
	      "ps_scan layout");
static_assert(sizeof(struct ps_scan_entry) == 136, "ps_scan_entry layout");
static_assert(sizeof(struct ps_scan_reply) == 24 + PS_SCAN_REPLY_MAX * 136, "ps_scan_reply layout");
static_assert(sizeof(struct ps_teardown) == 128 + PS_TEARDOWN_MAX_DM * PS_DM_NAME_MAX +
						PS_TEARDOWN_MAX_LOOPS * (PS_PATH_MAX + 8) +
						PS_IFNAME_MAX + 8,
	      "ps_teardown layout");
static_assert(sizeof(struct ps_teardown_result) == 40 + PS_PATH_MAX, "ps_teardown_result layout");

union ps_payload {
	struct ps_hello hello;
	struct ps_hello_reply hello_reply;
	struct ps_probe probe;
	struct ps_probe_reply probe_reply;
	struct ps_scan scan;
	struct ps_scan_reply scan_reply;
	struct ps_teardown teardown;
	struct ps_teardown_reply teardown_reply;
};

/* The requests alone: what the helper's receive buffer must hold. */
union ps_request {
	struct ps_hello hello;
	struct ps_probe probe;
	struct ps_scan scan;
	struct ps_teardown teardown;
};

#define PS_MAX_MESSAGE_BYTES (sizeof(struct ps_header) + sizeof(union ps_payload))
#define PS_MAX_REQUEST_BYTES (sizeof(struct ps_header) + sizeof(union ps_request))

/* A decoded message. fds are owned by it until a handler takes them (sets the slot to -1). */
struct ps_message {
	struct ps_header header;
	union ps_payload payload;
	int fds[FDPASS_MAX_FDS];
	size_t nfds;
};

/*
 * The codec comes in two halves so that each side links only what it runs:
 * the helper decodes requests and encodes replies (privsep.c and
 * privsep_request.c), bangerd encodes requests and decodes replies (all of
 * it, plus privsep_reply.c). Which types a side accepts, and how each must
 * look, is that side's own table of struct ps_spec rows: the helper's
 * request table lives with its handlers (privhelper/dispatch.c), bangerd's
 * reply table in privsep_reply.c.
 */

/* Checks a payload whose size is already exact; 0 or -EBADMSG with why filled in. */
typedef int (*ps_validator)(const union ps_payload *p, size_t nfds, char *why, size_t why_size);

/* How one message type looks on the wire. */
struct ps_spec {
	uint16_t type;
	const char *name;
	size_t payload_size;
	size_t max_fds;
	ps_validator validate;
};

/* --- Both sides (privsep.c) ---------------------------------------------- */

void ps_message_init(struct ps_message *msg);
void ps_message_close_fds(struct ps_message *msg);
/* Take fd i out of the message; the caller owns it. */
int ps_message_take_fd(struct ps_message *msg, size_t i);

const char *ps_reason_name(int reason);
const char *ps_probe_status_name(int status);
const char *ps_teardown_status_name(int status);

/* Fill why and return -EBADMSG: every violation is reported through this. */
int ps_violation(char *why, size_t why_size, const char *fmt, ...) _printf_(3, 4);
/* A counted array of string fields: entries below count non-empty and clean, the rest zero. */
int ps_check_string_array(const char *base, size_t entry_size, size_t capacity, uint32_t count,
			  const char *label, char *why, size_t why_size);
/* A string field that must be terminated and zero-filled after its terminator. */
int ps_check_string(const char *field, size_t size, const char *label, char *why, size_t why_size);
/* Reserved bytes that must be zero. */
int ps_check_zero(const void *field, size_t size, const char *label, char *why, size_t why_size);
/* A counted array: count at most capacity, and the entries from count on all zero. */
int ps_check_counted(const void *base, size_t entry_size, size_t capacity, uint32_t count,
		     const char *label, char *why, size_t why_size);

/* A decoder of one received datagram: ps_decode_reply(), or the helper's of requests. */
typedef int (*ps_decode_fn)(const void *buf, size_t len, size_t nfds_received,
			    struct ps_message *msg, char *why, size_t why_size);

/*
 * Receive one datagram into buf (cap bytes: one more than the largest message it may be,
 * so that an oversize one shows as MSG_TRUNC) with at most max_fds fds, and decode it.
 * Truncation, MSG_CTRUNC and foreign control messages are violations. 1 with msg filled
 * (its fds are the caller's), 0 at EOF, -EAGAIN (nonblock), -EBADMSG with why (every fd
 * that came is closed), or another -errno.
 */
int ps_recv_decoded(int sock, unsigned char *buf, size_t cap, size_t max_fds, bool nonblock,
		    ps_decode_fn decode, struct ps_message *msg, char *why, size_t why_size);

/*
 * Decode one received datagram. Pure: no I/O, no fds opened or closed.
 * ps_decode_header() checks magic, version, that the header's length is the
 * datagram's and its fd count what arrived, and returns the header in h.
 * ps_decode_payload() then checks it against spec (exact size, fds allowed,
 * spec->validate) and copies header and payload into msg. Each returns 0 or
 * -EBADMSG with the violation described in why.
 */
int ps_decode_header(const void *buf, size_t len, size_t nfds_received, struct ps_header *h,
		     char *why, size_t why_size);
int ps_decode_payload(const struct ps_spec *spec, const void *buf, size_t len, size_t nfds_received,
		      struct ps_message *msg, char *why, size_t why_size);

/*
 * Send one message; the payload must be the exact fixed layout for type (the
 * sender's own table says so; here only its bounds are checked). 0 or -errno.
 */
int ps_send(int sock, uint16_t type, uint64_t request_id, const void *payload, size_t payload_len,
	    const int *fds, size_t nfds);

/* --- The helper's half (privsep_request.c): request payload validators ---- */

int ps_validate_hello(const union ps_payload *p, size_t nfds, char *why, size_t why_size);
int ps_validate_probe(const union ps_payload *p, size_t nfds, char *why, size_t why_size);
int ps_validate_scan(const union ps_payload *p, size_t nfds, char *why, size_t why_size);
int ps_validate_teardown(const union ps_payload *p, size_t nfds, char *why, size_t why_size);

/* --- bangerd's half (privsep_reply.c) ------------------------------------- */

/* Every type's name, requests and replies. */
const char *ps_type_name(uint16_t type);
const char *ps_resource_kind_name(int kind);

/* Decode a reply (see ps_decode_header); a request type here is a violation. */
int ps_decode_reply(const void *buf, size_t len, size_t nfds_received, struct ps_message *msg,
		    char *why, size_t why_size);

/*
 * Receive and decode one reply. Returns 1 with msg filled (owning its fds),
 * 0 on EOF, -EAGAIN when nonblock and nothing is queued, -EBADMSG on a
 * violation (why says what; every received fd already closed), or -errno.
 */
int ps_recv_reply(int sock, bool nonblock, struct ps_message *msg, char *why, size_t why_size);
