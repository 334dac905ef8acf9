/*
 * Shared support for banger's C tests and benchmarks: assertions that say
 * what failed, skipping with a reason (exit 77, meson's skip code), and
 * real processes: the helper on a socketpair, stub firecrackers that are
 * known to have exec'd before the call returns (no sleeping), and a
 * synchronous privsep client built on the same codec as bangerd.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "privsep.h"

#define T_SKIP 77

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

#define SKIP(...)                                                                                  \
	do {                                                                                       \
		fprintf(stdout, "SKIP: ");                                                         \
		fprintf(stdout, __VA_ARGS__);                                                      \
		fputc('\n', stdout);                                                               \
		exit(T_SKIP);                                                                      \
	} while (0)

/* snprintf that fails the test instead of truncating. */
void t_pathf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Path of a test artefact named by an environment variable that meson sets; fails without it. */
const char *t_env_path(const char *var);

void t_require_root(void);

/* One test program, many cases: meson runs each as its own test, named by argv[1]. */
struct t_case {
	const char *name;
	void (*run)(void);
};

/* Run the case argv[1] names (SIGPIPE ignored); false when no case in the table has that name. */
bool t_run_case(const struct t_case *cases, size_t n, int argc, char **argv);

/* A fresh directory under /tmp, removed by t_cleanup_dir. */
char *t_make_temp_dir(const char *tag);
void t_cleanup_dir(const char *dir);

struct t_helper {
	pid_t pid;
	int sock;      /* our end of the SEQPACKET pair */
	int stderr_fd; /* read end of the helper's stderr (its audit lines) */
	uint64_t next_id;
};

/* Start banger-privhelper with the given policy flags (NULL-terminated). */
void t_helper_start(struct t_helper *h, const char *const *policy_args);
/* Policy used by most tests: api sockets under api_root, loops under loop_root. */
void t_helper_start_default(struct t_helper *h, const char *api_root, const char *loop_root);
void t_helper_hello(struct t_helper *h);
/* Wait (bounded) for the helper to exit; returns its wait status. */
int t_helper_wait(struct t_helper *h, int timeout_ms);
/* All the helper wrote to stderr so far (after it exited: everything). Caller frees. */
char *t_helper_output(struct t_helper *h);
/* Close our end and wait for the helper to exit; its output stays readable. */
void t_helper_stop(struct t_helper *h);

/* Send a raw datagram (header + payload as given) with optional fds. */
int t_send_raw(int sock, const void *buf, size_t len, const int *fds, size_t nfds);

/* Synchronous PROBE; *pidfd_out gets the returned pidfd or -1. */
void t_probe(struct t_helper *h, pid_t pid, int pidfd, uint64_t start_time, const char *api_sock,
	     struct ps_probe_reply *out, int *pidfd_out);

struct t_scan_result {
	size_t count;
	struct ps_scan_entry *entries;
	int *pidfds;
	uint32_t uninspected;
	int err;
};
void t_scan(struct t_helper *h, const char *const *sockets, size_t count,
	    struct t_scan_result *out);
void t_scan_result_free(struct t_scan_result *r);

/*
 * Start exe with argv (argv[0] included), optionally chrooted into root_dir
 * (exe then is the path inside it). Returns once the child has exec'd
 * (a CLOEXEC pipe closes at exec), so /proc shows the new program.
 */
pid_t t_spawn(const char *exe, const char *const *argv, const char *root_dir);
void t_kill_and_reap(pid_t pid);
uint64_t t_start_time(pid_t pid);
/* Processes the helper counts as uninspected: exe unreadable even to root, comm like firecracker.
 */
int t_count_unreadable_processes(void);
/* Number of open fds of this process. */
int t_count_fds(void);
