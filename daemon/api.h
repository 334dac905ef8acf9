/*
 * api.c: io.banger.Handles over Varlink. Decodes calls and encodes the
 * service's results and events; decides nothing.
 */
#pragma once

#include <stdbool.h>

#include "varlink.h"

struct daemon;

/* uid 0, the daemon's uid, or the admin group: may mutate, may pass fds (varlink is_admin). */
bool api_may_mutate(const struct varlink_peer *p, void *userdata);
extern const struct varlink_interface banger_handles_interface;
void api_end_watchers(struct daemon *d);
/* Make api.c the one that answers the service's results (before serving). */
void api_attach(struct daemon *d);
