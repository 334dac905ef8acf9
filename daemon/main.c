/*
 * bangerd: start up (startup.c, DESIGN §1), serve until told to stop or the
 * helper fails (lifecycle.c), then shut down and exit with the status of
 * the one table (exit_status.h).
 */
#include <signal.h>
#include <time.h>

#include "daemon.h"
#include "lifecycle.h"
#include "log.h"
#include "startup.h"

int main(int argc, char **argv)
{
	struct daemon d = {0};

	log_init("bangerd", LOG_LEVEL_INFO);
	log_open_journal();
	/* The helper's death is noticed by SIGCHLD and EOF; a write to it must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	clock_gettime(CLOCK_MONOTONIC, &d.started);
	if (startup(&d, argc, argv))
		event_base_dispatch(d.base);
	return daemon_shutdown(&d);
}
