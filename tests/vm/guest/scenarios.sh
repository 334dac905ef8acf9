#!/bin/sh
# The real-kernel scenarios, run by the VM's init (busybox sh, as root) with
# dm-mod, dm-snapshot, loop and tun loaded. Each scenario builds real kernel
# objects (loops on files under the loop root, a dm-snapshot on them, a tap),
# drives the real bangerd and helper with bangerctl, and checks with the
# kernel's own tools (dmsetup, losetup, ip) what is left. Each prints
#   BANGER-SCENARIO N NAME PASS MS
#   BANGER-SCENARIO N NAME FAIL MS REASON
# and runs in a subshell, so one failure cannot stop the next; after a
# failed one, what it left in the kernel is cleared and bangerd starts again
# on an empty state dir, so each scenario starts clean.
set -u

CTL_SOCKET=/run/banger/bangerd.sock
IMAGES=/srv/banger/images
VMS=/srv/banger/vms
STATE=/var/lib/banger
LOGDIR=/var/log/banger
AUDIT=$LOGDIR/audit.log
DM_PREFIX=bgvm-
DM_UUID_PREFIX=BANGERVM-
TAP_PREFIX=bgtap
HELPER=/usr/libexec/banger/banger-privhelper
STUB=/usr/bin/firecracker

# Debian's busybox runs its own applets before anything on PATH: the real
# losetup (util-linux: --show, -j, -D) must be named by its path.
losetup() { /usr/sbin/losetup "$@"; }
ctl() { bangerctl --socket "$CTL_SOCKET" --json "$@"; }
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
log() { echo "  [$(now_ms)] $*"; }
# Inside a scenario's subshell: record why and end the scenario.
fail() {
	echo "$*" >/tmp/fail-reason
	log "FAIL: $*"
	exit 1
}

# wait_until SECONDS COMMAND...: poll a condition that has no event (50 ms steps).
wait_until() {
	limit=$(($1 * 20))
	shift
	i=0
	while ! "$@"; do
		i=$((i + 1))
		[ "$i" -le "$limit" ] || return 1
		usleep 50000
	done
	return 0
}

# --- bangerd --------------------------------------------------------------

# bangerd may be restarted inside a scenario's subshell, so its pid and log
# live in files, and whether it lives is read from /proc (a killed bangerd
# can linger as a zombie of a parent that is not this shell).
start_bangerd() {
	log_file=$LOGDIR/bangerd.$(now_ms).log
	bangerd --user banger --state-dir "$STATE" --listen "$CTL_SOCKET" \
		--helper "$HELPER" --audit-log "$AUDIT" --log-level debug \
		--tap-prefix "$TAP_PREFIX" --dm-prefix "$DM_PREFIX" \
		--dm-uuid-prefix "$DM_UUID_PREFIX" --loop-root "$IMAGES" \
		--api-sock-root "$VMS" >"$log_file" 2>&1 &
	echo $! >/run/bangerd.pid
	echo "$log_file" >/run/bangerd.logpath
	if ! wait_until 30 grep -q "ready:" "$log_file"; then
		echo "bangerd never became ready:"
		cat "$log_file"
		return 1
	fi
	log "bangerd pid $(bangerd_pid) ready"
}

bangerd_pid() { cat /run/bangerd.pid; }
bangerd_log() { cat /run/bangerd.logpath; }
running() { [ -e "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
gone() { ! running "$1"; }
bangerd_alive() { running "$(bangerd_pid)"; }
helper_pid() { ctl status | sed -n 's/.*"helper_pid":\([0-9]*\).*/\1/p'; }

# --- kernel objects -------------------------------------------------------

dm_open() { dmsetup info "$1" | grep -q 'Open count: *1'; }
dm_exists() { dmsetup info "$1" >/dev/null 2>&1; }
loop_of() { losetup -j "$1" -n -O NAME 2>/dev/null | tr -d ' '; }
tap_exists() { [ -e "/sys/class/net/$1" ]; }
no_dm_left() { ! dmsetup ls | grep -qv '^No devices found'; }
no_loop_left() { [ -z "$(losetup -a)" ]; }
no_tap_left() { ! ip link | grep -q "$TAP_PREFIX"; }

# make_stack ID: base and COW files under the loop root, a loop on each, a
# persistent dm-snapshot named and uuid'd with the prefixes, and a tap.
# Sets BASE COW LOOP_BASE LOOP_COW DM TAP.
make_stack() {
	BASE=$IMAGES/$1-base.img
	COW=$IMAGES/$1-cow.img
	DM=$DM_PREFIX$1
	TAP=$TAP_PREFIX$1
	dd if=/dev/zero of="$BASE" bs=1M count=16 2>/dev/null || fail "cannot write $BASE"
	echo "base image of $1" | dd of="$BASE" conv=notrunc 2>/dev/null
	truncate -s 8M "$COW" || fail "cannot make $COW"
	LOOP_BASE=$(losetup -f --show "$BASE") || fail "losetup $BASE"
	LOOP_COW=$(losetup -f --show "$COW") || fail "losetup $COW"
	sectors=$(blockdev --getsz "$LOOP_BASE")
	dmsetup create "$DM" --uuid "$DM_UUID_PREFIX$1" \
		--table "0 $sectors snapshot $LOOP_BASE $LOOP_COW P 8" ||
		fail "dmsetup create $DM (snapshot of $LOOP_BASE on $LOOP_COW)"
	# A write lands in the COW, not the base: it is a working snapshot.
	echo "written through $DM" | dd of="/dev/mapper/$DM" conv=notrunc,fsync 2>/dev/null ||
		fail "cannot write through /dev/mapper/$DM"
	dmsetup table "$DM" | grep -q " snapshot " || fail "$DM is not a snapshot"
	head -c 14 "$BASE" | grep -q "base image of" || fail "the write reached the base image"
	head -c 15 "/dev/mapper/$DM" | grep -q "written through" || fail "$DM does not read back"
	tunctl -t "$TAP" >/dev/null || fail "tunctl -t $TAP"
	log "stack $1: $DM = snapshot($LOOP_BASE <- $BASE, cow $LOOP_COW <- $COW), tap $TAP"
}

stack_gone() {
	dm_exists "$DM" && fail "$DM still exists: $(dmsetup ls)"
	[ -z "$(loop_of "$BASE")" ] || fail "loop on $BASE left: $(losetup -a)"
	[ -z "$(loop_of "$COW")" ] || fail "loop on $COW left: $(losetup -a)"
	tap_exists "$TAP" && fail "tap $TAP left: $(ip link)"
	no_dm_left || fail "dmsetup ls shows devices left: $(dmsetup ls)"
	no_loop_left || fail "losetup -a shows loops left: $(losetup -a)"
	no_tap_left || fail "ip link shows a tap left: $(ip link)"
	log "nothing left: dmsetup ls, losetup -a and ip link show none of it"
}

stack_standing() {
	dm_exists "$DM" || fail "$DM was removed"
	[ -n "$(loop_of "$BASE")" ] || fail "the loop on $BASE was detached"
	[ -n "$(loop_of "$COW")" ] || fail "the loop on $COW was detached"
	tap_exists "$TAP" || fail "tap $TAP was deleted"
}

# --- VMs ------------------------------------------------------------------

register_stack_vm() { # ID [extra register args]
	id=$1
	shift
	mkdir -p "$VMS/$id"
	ctl register "$id" --api-sock "$VMS/$id/api.sock" --tap "$TAP_PREFIX$id" \
		--loop-file "$IMAGES/$id-base.img" --loop-file "$IMAGES/$id-cow.img" \
		--dm "$DM_PREFIX$id" "$@" >/tmp/out || fail "register $id: $(cat /tmp/out)"
}

stub_execd() {
	[ "$(readlink "/proc/$1/exe")" = "$STUB" ] &&
		tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "--api-sock $2" &&
		[ -S "$2" ]
}

# start_stub ID: a stub firecracker serving the VM's api socket; sets STUB_PID.
start_stub() {
	mkdir -p "$VMS/$1"
	"$STUB" --api-sock "$VMS/$1/api.sock" </dev/null >/dev/null 2>&1 &
	STUB_PID=$!
	wait_until 5 stub_execd "$STUB_PID" "$VMS/$1/api.sock" ||
		fail "stub $STUB_PID never listened"
}

set_stack_handles() { # ID
	ctl set "$1" "$STUB_PID" --tap "$TAP" --loop "$LOOP_BASE" --loop "$LOOP_COW" --dm "$DM" \
		>/tmp/out || fail "set $1: $(cat /tmp/out)"
	grep -q '"state":"running"' /tmp/out ||
		fail "set $1 did not make it running: $(cat /tmp/out)"
}

vm_is() { [ "$(vm_state "$2")" = "$1" ]; }
vm_state() {
	ctl list | grep -o "\"id\":\"$1\",\"state\":\"[a-z]*\"" | sed 's/.*"state":"//; s/"//'
}

# One watcher per bangerd, kept for that bangerd's lifetime and appending
# to one file: every event of every scenario lands there (ids are unique per
# scenario), and no scenario depends on how bangerd treats a Watch client
# that leaves (the host's API tests cover that). A bangerd that dies ends
# the stream; the next ensure_watch starts one on its successor.
WATCH_FILE=/tmp/events
subscriptions() { grep -c '"kind":"subscribed"' "$WATCH_FILE" 2>/dev/null || true; }
more_subscriptions_than() { [ "$(subscriptions)" -gt "$1" ]; }
ensure_watch() {
	[ -s /run/watch.pid ] && running "$(cat /run/watch.pid)" && return 0
	before=$(subscriptions)
	ctl watch >>"$WATCH_FILE" 2>&1 &
	echo $! >/run/watch.pid
	wait_until 10 more_subscriptions_than "$before" || fail "watch never subscribed"
}

# wait_event SECONDS KIND ID: wait for the end of ID's teardown (torn_down
# or teardown_failed) and insist it is KIND; its detail goes to DETAIL.
teardown_events() { grep -E "\"kind\":\"(torn_down|teardown_failed)\",\"id\":\"$1\"" "$WATCH_FILE"; }
teardown_ended() { teardown_events "$1" >/dev/null; }
wait_event() {
	wait_until "$1" teardown_ended "$3" ||
		fail "no teardown event for $3 within $1 s; events: $(cat "$WATCH_FILE")"
	EVENT=$(teardown_events "$3" | head -n 1)
	DETAIL=$(echo "$EVENT" | sed -n 's/.*"detail":"\([^"]*\)".*/\1/p')
	echo "$EVENT" | grep -q "\"kind\":\"$2\"" || fail "want $2 for $3, got: $EVENT"
}

# One "kind name status[ reason]" line per result of a Teardown reply.
results_of() {
	grep -oE '\{"kind":"[a-z]+","name":"[^"]*","status":"[a-z]+"(,"reason":"[^"]*")?' "$1" |
		sed -E 's/\{"kind":"([^"]*)","name":"([^"]*)","status":"([^"]*)"(,"reason":"([^"]*)")?/\1 \2 \3 \5/; s/ $//'
}

# --- scenarios ------------------------------------------------------------

# 1. A running VM on a real dm-snapshot; its firecracker dies: bangerd tears
#    down the DM device, then both loops, then the tap.
scenario_1() {
	register_stack_vm s1
	make_stack s1
	start_stub s1
	set_stack_handles s1
	ensure_watch
	t0=$(now_ms)
	kill -9 "$STUB_PID"
	wait_event 30 torn_down s1
	log "kill -9 -> torn_down in $(($(now_ms) - t0)) ms: $DETAIL"
	want="dm $DM: removed, loop $LOOP_BASE: removed, loop $LOOP_COW: removed, .*tap $TAP: removed"
	echo "$DETAIL" | grep -qE "^$want" || fail "teardown order/results: $DETAIL"
	stack_gone
	grep "op=teardown" "$AUDIT" | grep " call=exit vm=s1 " |
		grep -q "dm=\"$DM:removed\" loops=\"$LOOP_BASE:removed,$LOOP_COW:removed" ||
		fail "no audit line for the teardown: $(grep op=teardown "$AUDIT")"
	[ "$(vm_state s1)" = stopped ] || fail "s1 is $(vm_state s1), want stopped"
	wait "$STUB_PID" 2>/dev/null
	return 0
}

# 2. bangerd and the firecracker die together (kill -9); nothing tears down
#    until bangerd starts again, and its start-up reconcile does.
scenario_2() {
	register_stack_vm s2
	make_stack s2
	start_stub s2
	set_stack_handles s2
	helper=$(helper_pid)
	old=$(bangerd_pid)
	kill -9 "$old" "$STUB_PID"
	wait "$STUB_PID" 2>/dev/null
	wait_until 10 gone "$old" || fail "bangerd $old survived kill -9"
	wait_until 10 gone "$helper" || fail "the helper $helper outlived bangerd"
	log "bangerd $old, its helper $helper and stub $STUB_PID are gone"
	stack_standing
	t0=$(now_ms)
	start_bangerd || fail "bangerd did not come back"
	log "restart + reconcile took $(($(now_ms) - t0)) ms"
	stack_gone
	grep " call=startup-reconcile vm=s2 op=teardown " "$AUDIT" |
		grep -q "dm=\"$DM:removed\" loops=\"$LOOP_BASE:removed,$LOOP_COW:removed" ||
		fail "no start-up reconcile teardown in the audit: $(grep op=teardown "$AUDIT")"
	grep -q "reconcile: vm s2 torn" "$(bangerd_log)" ||
		fail "start-up reconcile does not report s2 torn down: $(grep reconcile "$(bangerd_log)")"
	[ "$(vm_state s2)" = stopped ] || fail "s2 is $(vm_state s2), want stopped"
	return 0
}

# 3. Something holds the DM device open: the teardown reports busy after its
#    bounded retries, leaves the loops and the tap under it standing, and
#    nothing crashes; once released, Teardown finishes the job.
scenario_3() {
	register_stack_vm s3
	make_stack s3
	start_stub s3
	set_stack_handles s3
	# shellcheck disable=SC2217 # the point is the open fd, not reading it
	sleep 100000 <"/dev/mapper/$DM" &
	holder=$!
	echo "$holder" >/run/holder.pid # busybox runs sleep as a forked sh: pidof cannot find it
	wait_until 5 dm_open "$DM" ||
		fail "the holder never opened $DM: $(dmsetup info "$DM")"
	helper=$(helper_pid)
	ensure_watch
	t0=$(now_ms)
	kill -9 "$STUB_PID"
	wait_event 60 teardown_failed s3
	took=$(($(now_ms) - t0))
	log "kill -9 -> teardown_failed in $took ms: $DETAIL"
	want="dm $DM: busy, loop $LOOP_BASE: busy, loop $LOOP_COW: busy, .*tap $TAP: busy"
	echo "$DETAIL" | grep -qE "^$want" || fail "busy results: $DETAIL"
	# DM_REMOVE_RETRIES x DM_REMOVE_RETRY_DELAY_MS: about a second, never open-ended.
	[ "$took" -ge 800 ] || fail "busy after $took ms: the retries did not happen"
	[ "$took" -le 30000 ] || fail "busy only after $took ms: the retries are not bounded"
	stack_standing
	bangerd_alive || fail "bangerd died"
	[ "$(helper_pid)" = "$helper" ] || fail "the helper changed: $helper -> $(helper_pid)"
	ctl status >/dev/null || fail "bangerd does not answer"
	grep "op=teardown" "$AUDIT" | grep -q "dm=\"$DM:busy" ||
		fail "no busy in the audit: $(grep op=teardown "$AUDIT")"
	log "busy, everything under it standing, bangerd and helper $helper alive"

	kill "$holder"
	wait "$holder" 2>/dev/null
	ctl teardown s3 >/tmp/out || fail "teardown s3: $(cat /tmp/out)"
	results_of /tmp/out >/tmp/results
	log "teardown after release: $(tr '\n' ';' </tmp/results)"
	grep -qE "^dm $DM (removed|absent)$" /tmp/results || fail "dm not removed: $(cat /tmp/out)"
	grep -qvE " (removed|absent)$" /tmp/results && fail "not all removed: $(cat /tmp/out)"
	stack_gone
	[ "$(vm_state s3)" = stopped ] || fail "s3 is $(vm_state s3), want stopped"
	wait "$STUB_PID" 2>/dev/null
	return 0
}

# 4. DM devices outside the policy survive a teardown request that names
#    them: one without the name prefix, one with it but a foreign uuid.
scenario_4() {
	foreign="foreign-s4"
	nouuid=${DM_PREFIX}s4x
	TAP=${TAP_PREFIX}s4
	file=$IMAGES/s4-other.img
	truncate -s 8M "$file"
	loop=$(losetup -f --show "$file") || fail "losetup $file"
	dmsetup create "$foreign" --uuid FOREIGN-s4 --table "0 8192 linear $loop 0" ||
		fail "dmsetup create $foreign"
	dmsetup create "$nouuid" --uuid OTHER-s4x --table "0 8192 linear $loop 8192" ||
		fail "dmsetup create $nouuid"
	# Register refuses a planned DM name without the prefix up front.
	mkdir -p "$VMS/s4"
	ctl register s4 --api-sock "$VMS/s4/api.sock" --dm "$foreign" >/tmp/out 2>&1 &&
		fail "register with $foreign was accepted: $(cat /tmp/out)"
	grep -q PolicyRefused /tmp/out || fail "register with $foreign: $(cat /tmp/out)"
	ctl register s4 --api-sock "$VMS/s4/api.sock" --tap "$TAP" --on-exit keep >/tmp/out ||
		fail "register s4: $(cat /tmp/out)"
	tunctl -t "$TAP" >/dev/null || fail "tunctl -t $TAP"
	start_stub s4
	ctl set s4 "$STUB_PID" --tap "$TAP" --dm "$foreign" --dm "$nouuid" >/tmp/out ||
		fail "set s4: $(cat /tmp/out)"
	kill -9 "$STUB_PID"
	wait "$STUB_PID" 2>/dev/null
	wait_until 10 vm_is stopped s4 ||
		fail "s4 never stopped: $(ctl list)"
	ctl teardown s4 >/tmp/out || fail "teardown s4: $(cat /tmp/out)"
	results_of /tmp/out >/tmp/results
	log "teardown: $(tr '\n' ';' </tmp/results)"
	grep -qx "dm $foreign refused missing-prefix" /tmp/results ||
		fail "$foreign not refused for its name: $(cat /tmp/out)"
	grep -qx "dm $nouuid refused missing-uuid-prefix" /tmp/results ||
		fail "$nouuid not refused for its uuid: $(cat /tmp/out)"
	grep -qx "tap $TAP removed" /tmp/results || fail "the tap was not removed: $(cat /tmp/out)"
	dm_exists "$foreign" || fail "$foreign was removed"
	dm_exists "$nouuid" || fail "$nouuid was removed"
	[ "$(dmsetup info -c --noheadings -o uuid "$nouuid")" = OTHER-s4x ] || fail "$nouuid changed"
	grep " call=Teardown#" "$AUDIT" | grep -q \
		"dm=\"$foreign:refused(missing-prefix),$nouuid:refused(missing-uuid-prefix)\"" ||
		fail "no refusal in the audit: $(grep op=teardown "$AUDIT")"
	log "both survived; audit: $(grep " call=Teardown#" "$AUDIT" | grep "$foreign" | tail -n 1)"
	if ! dmsetup remove "$foreign" || ! dmsetup remove "$nouuid" || ! losetup -d "$loop"; then
		fail "cannot clean up the foreign devices"
	fi
	return 0
}

# 5. A manager registered a VM, created its DM stack and crashed before
#    SetHandles (no firecracker ever ran): Reconcile tears the plan down.
scenario_5() {
	register_stack_vm s5
	make_stack s5
	[ "$(vm_state s5)" = starting ] || fail "s5 is $(vm_state s5), want starting"
	ctl reconcile >/tmp/out || fail "reconcile: $(cat /tmp/out)"
	entry=$(grep -o '{"id":"s5","action":"[a-z_]*"' /tmp/out)
	log "reconcile: $entry"
	[ "$entry" = '{"id":"s5","action":"torn_down"' ] || fail "reconcile said: $(cat /tmp/out)"
	stack_gone
	[ "$(vm_state s5)" = stopped ] || fail "s5 is $(vm_state s5), want stopped"
	return 0
}

# --- driver ---------------------------------------------------------------

# After each scenario: whatever it left (when it failed) is cleared, and
# bangerd runs, so the next one starts from a clean kernel.
clean_slate() {
	for p in $(pidof firecracker) $(cat /run/holder.pid 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
	rm -f /run/holder.pid
	for d in $(dmsetup ls | grep -v '^No devices found' | cut -f1); do
		dmsetup remove --retry "$d" >/dev/null 2>&1
	done
	losetup -D
	for t in /sys/class/net/"$TAP_PREFIX"*; do
		[ -e "$t" ] && tunctl -d "${t##*/}" >/dev/null
	done
	if ! no_dm_left || ! no_loop_left || ! no_tap_left; then
		echo "BANGER-VM-ERROR cannot clean up after a scenario:"
		dmsetup ls
		losetup -a
		ip link
	fi
	bangerd_alive || start_bangerd
}

run() { # N NAME
	rm -f /tmp/fail-reason
	echo "BANGER-SCENARIO $1 $2 START"
	t0=$(now_ms)
	(scenario_"$1")
	rc=$?
	ms=$(($(now_ms) - t0))
	if [ "$rc" -eq 0 ]; then
		echo "BANGER-SCENARIO $1 $2 PASS $ms"
	else
		reason=$(tr '\n' ' ' </tmp/fail-reason 2>/dev/null || echo "exit status $rc")
		echo "--- bangerd log (last 40 lines) ---"
		tail -n 40 "$(bangerd_log)"
		echo "BANGER-SCENARIO $1 $2 FAIL $ms $reason"
		forget_everything
	fi
	clean_slate
}

# After a failure, bangerd's records may still name /dev/loopN numbers that
# the next scenario's loops will reuse: start it again on an empty state dir,
# so that one failure cannot spill into the next scenario.
forget_everything() {
	pid=$(bangerd_pid)
	kill "$pid" 2>/dev/null
	wait_until 10 gone "$pid" || kill -9 "$pid"
	rm -rf "$STATE"
}

mkdir -p "$IMAGES" "$VMS" /run/banger "$LOGDIR" /var/lib
chown banger:banger /run/banger
: >"$WATCH_FILE"
if ! start_bangerd; then
	echo "BANGER-VM-ERROR bangerd does not start"
	exit 1
fi
run 1 dm-snapshot-exit-teardown
run 2 kill-both-then-reconcile
run 3 busy-then-teardown
run 4 refused-outside-policy
run 5 starting-record-reconciled
# The last check of all: bangerd, restarted and put through every scenario, still stops cleanly.
pid=$(bangerd_pid)
kill "$pid"
if wait_until 10 gone "$pid"; then
	echo "BANGER-VM-BANGERD-STOPPED"
else
	echo "BANGER-VM-ERROR bangerd did not stop on SIGTERM"
fi
