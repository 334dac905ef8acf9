/*
 * bangerd's one context struct: the only mutable state the daemon has
 * beyond what each module's own objects hold.
 */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "helper_client.h"

#define HELPER_HELLO_TIMEOUT_MS 10000

struct daemon {
	struct banger_config cfg;
	struct event_base *base;
	struct helper_client *helper;
	pid_t helper_pid;
	bool helper_privileged;
	uid_t uid;
	gid_t gid;
	int exit_status;
	bool ready;
	struct timespec started;
	struct event *ev_sigterm, *ev_sigint, *ev_sigchld, *ev_hello_timeout;
};
