/*
 * The half of the privsep codec both ends link: the header, the checks
 * every payload validator is built from, and sending. ps_decode_header()
 * and ps_decode_payload() are where bytes from the other side become a
 * struct; they are pure so that the fuzzer can drive them without sockets,
 * and never trust a length, count or string they have not checked. Which
 * types a side accepts is that side's own table (privsep.h).
 */
#include "privsep.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "path.h"
#include "privsep_check.h"

int ps_violation(char *why, size_t why_size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_size, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

int ps_check_string(const char *field, size_t size, const char *label, char *why, size_t why_size)
{
	if (!field_is_clean_string(field, size))
		return ps_violation(why, why_size, "%s: unterminated string or embedded NUL",
				    label);
	return 0;
}

int ps_check_zero(const void *field, size_t size, const char *label, char *why, size_t why_size)
{
	if (!bytes_are_zero(field, size))
		return ps_violation(why, why_size, "%s: reserved bytes are not zero", label);
	return 0;
}

int ps_check_counted(const void *base, size_t entry_size, size_t capacity, uint32_t count,
		     const char *label, char *why, size_t why_size)
{
	if (count > capacity)
		return ps_violation(why, why_size, "%s: count %u over the maximum %zu", label,
				    count, capacity);
	for (size_t i = count; i < capacity; i++)
		if (!bytes_are_zero((const char *)base + i * entry_size, entry_size))
			return ps_violation(why, why_size, "%s[%zu]: unused entry is not zero",
					    label, i);
	return 0;
}

int ps_check_string_array(const char *base, size_t entry_size, size_t capacity, uint32_t count,
			  const char *label, char *why, size_t why_size)
{
	PS_TRY(ps_check_counted(base, entry_size, capacity, count, label, why, why_size));
	for (size_t i = 0; i < count; i++) {
		const char *entry = base + i * entry_size;
		if (!field_is_clean_string(entry, entry_size))
			return ps_violation(why, why_size,
					    "%s[%zu]: unterminated string or embedded NUL", label,
					    i);
		if (entry[0] == '\0')
			return ps_violation(why, why_size, "%s[%zu]: empty string", label, i);
	}
	return 0;
}

const char *ps_reason_name(int reason)
{
	static const char *const names[PS_REASON_MAX_] = {
	    [PS_REASON_NONE] = "none",
	    [PS_REASON_NO_PROCESS] = "no-such-process",
	    [PS_REASON_NOT_FIRECRACKER] = "not-firecracker",
	    [PS_REASON_API_SOCK_MISMATCH] = "api-sock-mismatch",
	    [PS_REASON_START_TIME_MISMATCH] = "start-time-mismatch",
	    [PS_REASON_OUTSIDE_ROOTS] = "outside-roots",
	    [PS_REASON_EXITED_DURING_PROBE] = "exited-during-probe",
	    [PS_REASON_PIDFD_INVALID] = "pidfd-invalid",
	    [PS_REASON_MISSING_PREFIX] = "missing-prefix",
	    [PS_REASON_MISSING_UUID_PREFIX] = "missing-uuid-prefix",
	    [PS_REASON_WRONG_LINK_KIND] = "wrong-link-kind",
	    [PS_REASON_BAD_NAME] = "bad-name",
	    [PS_REASON_DEPENDENCY_BUSY] = "dependency-busy",
	    [PS_REASON_BACKING_CHANGED] = "backing-changed",
	    [PS_REASON_NO_LISTENER] = "no-listener",
	    [PS_REASON_DISKSEQ_CHANGED] = "diskseq-changed",
	    [PS_REASON_IFINDEX_CHANGED] = "ifindex-changed",
	};
	if (reason < 0 || reason >= PS_REASON_MAX_ || !names[reason])
		return "unknown";
	return names[reason];
}

const char *ps_probe_status_name(int status)
{
	static const char *const names[] = {[PS_PROBE_RUNNING] = "running",
					    [PS_PROBE_NOT_RUNNING] = "not-running",
					    [PS_PROBE_REFUSED] = "refused",
					    [PS_PROBE_FAILED] = "failed"};
	return status > 0 && (size_t)status < ELEMENTSOF(names) ? names[status] : "unknown";
}

const char *ps_teardown_status_name(int status)
{
	static const char *const names[] = {[PS_TEARDOWN_REMOVED] = "removed",
					    [PS_TEARDOWN_ABSENT] = "absent",
					    [PS_TEARDOWN_REFUSED] = "refused",
					    [PS_TEARDOWN_BUSY] = "busy",
					    [PS_TEARDOWN_FAILED] = "failed"};
	return status > 0 && (size_t)status < ELEMENTSOF(names) ? names[status] : "unknown";
}

void ps_message_init(struct ps_message *msg)
{
	memset(&msg->header, 0, sizeof(msg->header));
	msg->nfds = 0;
}

void ps_message_close_fds(struct ps_message *msg)
{
	fdpass_close_all(msg->fds, &msg->nfds);
}

int ps_message_take_fd(struct ps_message *msg, size_t i)
{
	if (i >= msg->nfds)
		return -1;
	return TAKE_FD(msg->fds[i]);
}

static int check_received(const struct fdpass_recv *in, size_t cap, char *why, size_t why_size)
{
	if (in->truncated || in->len >= cap)
		return ps_violation(why, why_size, "oversize message (over %zu bytes)", cap - 1);
	if (in->ctruncated)
		return ps_violation(why, why_size,
				    "more fds than any message may carry (MSG_CTRUNC)");
	if (in->foreign_cmsg)
		return ps_violation(why, why_size, "control message other than SCM_RIGHTS");
	return 0;
}

int ps_recv_decoded(int sock, unsigned char *buf, size_t cap, size_t max_fds, bool nonblock,
		    ps_decode_fn decode, struct ps_message *msg, char *why, size_t why_size)
{
	struct fdpass_recv in;

	ps_message_init(msg);
	int r = fdpass_recv(sock, buf, cap, max_fds, nonblock, &in);
	if (r <= 0)
		return r;
	r = check_received(&in, cap, why, why_size);
	if (r == 0)
		r = decode(buf, in.len, in.nfds, msg, why, why_size);
	if (r < 0) {
		fdpass_close_all(in.fds, &in.nfds);
		return r;
	}
	memcpy(msg->fds, in.fds, sizeof(int) * in.nfds);
	msg->nfds = in.nfds;
	return 1;
}

int ps_decode_header(const void *buf, size_t len, size_t nfds_received, struct ps_header *h,
		     char *why, size_t why_size)
{
	if (len < sizeof(*h))
		return ps_violation(why, why_size, "short message: %zu bytes, header is %zu", len,
				    sizeof(*h));
	memcpy(h, buf, sizeof(*h));
	if (h->magic != PS_MAGIC)
		return ps_violation(why, why_size, "wrong magic 0x%08x", h->magic);
	if (h->version != PS_PROTOCOL_VERSION)
		return ps_violation(why, why_size, "wrong protocol version %u (want %d)",
				    h->version, PS_PROTOCOL_VERSION);
	if (h->payload_len != len - sizeof(*h))
		return ps_violation(why, why_size,
				    "type %u: header says %u payload bytes, datagram has %zu",
				    h->type, h->payload_len, len - sizeof(*h));
	if (h->nfds != nfds_received)
		return ps_violation(why, why_size, "type %u: header declares %u fds, %zu arrived",
				    h->type, h->nfds, nfds_received);
	return 0;
}

int ps_decode_payload(const struct ps_spec *spec, const void *buf, size_t len, size_t nfds_received,
		      struct ps_message *msg, char *why, size_t why_size)
{
	if (len - sizeof(struct ps_header) != spec->payload_size)
		return ps_violation(why, why_size, "%s: payload is %zu bytes, must be %zu",
				    spec->name, len - sizeof(struct ps_header), spec->payload_size);
	if (nfds_received > spec->max_fds)
		return ps_violation(why, why_size, "%s: carries %zu fds, at most %zu allowed",
				    spec->name, nfds_received, spec->max_fds);
	memcpy(&msg->header, buf, sizeof(msg->header));
	memcpy(&msg->payload, (const char *)buf + sizeof(msg->header), spec->payload_size);
	return spec->validate(&msg->payload, nfds_received, why, why_size);
}

int ps_send(int sock, uint16_t type, uint64_t request_id, const void *payload, size_t payload_len,
	    const int *fds, size_t nfds)
{
	if (payload_len > sizeof(union ps_payload) || nfds > FDPASS_MAX_FDS)
		return -EINVAL;
	struct ps_header h = {
	    .magic = PS_MAGIC,
	    .version = PS_PROTOCOL_VERSION,
	    .type = type,
	    .request_id = request_id,
	    .payload_len = (uint32_t)payload_len,
	    .nfds = (uint32_t)nfds,
	};
	struct iovec iov[2] = {
	    {.iov_base = &h, .iov_len = sizeof(h)},
	    {.iov_base = (void *)payload, .iov_len = payload_len},
	};
	return fdpass_send(sock, iov, 2, fds, nfds);
}
