/*
 * The journal's MESSAGE_ID of every kind of entry banger writes: one
 * 128-bit id per bangerd event kind, per bangerd log decision and per
 * helper operation, so that `journalctl MESSAGE_ID=...` finds one kind of
 * thing and `journalctl -x` explains it from contrib/banger.catalog. The
 * ids were made once with `systemd-id128 new` and never change: tools
 * and alert rules match them. Every id here has its entry in the catalog
 * (tests/unit/test_catalog.py checks both ways).
 */
#pragma once

/* bangerd's events (service_emit's kinds, as Watch streams them): X(kind, id). */
#define BANGER_EVENT_MESSAGE_IDS(X)                                                                \
	X("registered", "caf079f6e9444b319c0515a21629ad9f")                                        \
	X("handles_set", "89d9865096be459686af466fce282c38")                                       \
	X("exited", "3628166f517747a98590a581414a29cf")                                            \
	X("torn_down", "86a78c618e4349a1a7e0df26580828f5")                                         \
	X("teardown_failed", "74512cbf486d4786b91beb246f8166a1")                                   \
	X("cleared", "ba258f3f3aa64471bb99263ce1aca0dd")                                           \
	X("unregistered", "4b68d6fd85bc4f6e8d6877182c51b5db")                                      \
	X("persist_failed", "9f58b0028acb493490817f168284c1e4")                                    \
	X("persist_recovered", "f2cb9f00263f4d378c105a8a383aaf6c")                                 \
	X("identity_conflict", "02c389c58ae54f279925eabedbd94502")                                 \
	X("helper_gone", "c9a4cb8fb4784922a5fce99f8527f495")                                       \
	X("helper_stuck", "39f54e5e7e1c438ea3612f67898f7c79")                                      \
	X("helper_replaced", "d6d9543820bf442fb65b812fd54e1c81")

/* An event kind the table above does not name yet. */
#define BANGER_MID_EVENT_OTHER "afcac67db31a406fb566703d56e3d577"

/* bangerd's decisions that are not events. */
#define BANGER_MID_CALL_ADMITTED     "c1534e9256e64eb380ffe50db10d7fa5"
#define BANGER_MID_CALL_DENIED	     "1e9edecd10fa49c38d4797dc16680066"
#define BANGER_MID_RECONCILE_VM	     "1bf8f759ed4a45b2b67a81026cdd4eb1"
#define BANGER_MID_RECONCILE_SUMMARY "d722bfca0ae34d08ba132698e6396c62"

/* The helper's audit entries, one id per operation (privhelper/dispatch.c's table). */
#define BANGER_MID_HELPER_HELLO	    "617646810f0947b29e1256c51d2b1592"
#define BANGER_MID_HELPER_PROBE	    "27b1725de35948609421ba63954a27ae"
#define BANGER_MID_HELPER_SCAN	    "88f6fe26bbf34049a5b0c62e5ee8b69a"
#define BANGER_MID_HELPER_TEARDOWN  "79883f8781c84874a7b6c4922c8e7138"
#define BANGER_MID_HELPER_VIOLATION "b2b3dfdf055c4976ba92b42e41c1e1e6"
