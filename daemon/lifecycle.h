/*
 * lifecycle.c: bangerd once it runs: its signals, its helper's failure
 * (replaced, or bangerd exits for the service manager to restart both),
 * the drain of the calls in flight, and the shutdown.
 */
#pragma once

#include "helper_client.h"

struct daemon;

/* Leave the event loop with status (the first status given wins). */
void daemon_stop(struct daemon *d, int status);
/* The helper takes no more requests (helper_client_new's on_dead): replace it, or exit. */
void daemon_on_helper_failed(struct helper_client *hc, enum helper_failure how, const char *why,
			     void *userdata);
/* SIGTERM and SIGINT drain and stop; SIGCHLD reaps the spawned helper. 0 or -ENOMEM. */
int daemon_watch_signals(struct daemon *d);
/* Free everything, reap the helper (bounded): the status to exit with. */
int daemon_shutdown(struct daemon *d);
