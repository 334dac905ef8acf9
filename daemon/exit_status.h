/*
 * bangerd's exit statuses: the one table of them. Every exit and every
 * status bangerd stops with names a row here, and bangerd(8)'s EXIT STATUS
 * is made from these rows at build time (tools/exit-statuses.py), so the
 * page cannot say other than the code does. The meanings are scdoc text.
 * The values are an interface (systemd units and tests read them): never
 * renumber a row.
 */
#pragma once

/* X(name, value, meaning) */
#define BANGERD_EXIT_STATUSES(X)                                                                   \
	X(EXIT_STOPPED, 0, "Stopped by SIGTERM or SIGINT, or *--help*/*--version* answered.")      \
	X(EXIT_STARTUP, 1,                                                                         \
	  "Start-up failed (state directory, privilege drop, records), or the control socket "     \
	  "could not be served.")                                                                  \
	X(EXIT_CONFIG, 2,                                                                          \
	  "The configuration is invalid (unknown key or option, bad value, incomplete policy, "    \
	  "unknown user or group); the message names _file:line_ or the option.")                  \
	X(EXIT_HELPER, 3,                                                                          \
	  "The helper could not be started or reached, disagreed on protocol or policy, broke "    \
	  "the protocol, or died.")                                                                \
	X(EXIT_HELPER_STUCK, 4,                                                                    \
	  "The helper is stuck: it did not answer a request within its deadline (DEADLINES), "     \
	  "and could not be replaced: before READY (HELLO or the start-up SCAN), in spawn mode, "  \
	  "or in split mode when the new helper failed too. The message names the operation "      \
	  "and the deadline.")

#define BANGERD_EXIT_ENUM(name, value, meaning) name = value,
enum bangerd_exit_status { BANGERD_EXIT_STATUSES(BANGERD_EXIT_ENUM) };
#undef BANGERD_EXIT_ENUM
