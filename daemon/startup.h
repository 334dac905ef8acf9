/*
 * startup.c: bangerd's start-up, DESIGN §1 in one sequence.
 */
#pragma once

#include <stdbool.h>

#include "helper_client.h"

struct daemon;

/*
 * Start bangerd: true once it serves (READY=1 sent). Exits with its status
 * (exit_status.h) on a failure before the event loop runs; false when it was
 * stopped after (d->exit_status says why: the helper, SIGTERM, ...).
 */
bool startup(struct daemon *d, int argc, char **argv);
/* The helper's HELLO: same protocol, same policy. Takes its pid and privilege when it agrees. */
bool startup_hello_agrees(struct daemon *d, const struct helper_reply *reply);
