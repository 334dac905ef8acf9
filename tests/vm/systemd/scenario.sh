#!/bin/bash
# The systemd VM test's scenario, run by banger-vmtest.service (as root, not
# confined) in a Debian guest whose PID 1 is systemd. It proves the hardened
# split-mode units as installed by `meson install`, with the policy of their
# shipped ExecStart= line and the example bangerd.conf that tmpfiles copied:
#   - systemd starts bangerd.socket and banger-privhelper.socket at boot;
#     sysusers and tmpfiles made the user and the directories;
#   - the helper socket is banger's alone: a reader (an account in group
#     banger, who may use bangerd.sock) is refused it (EACCES) and starts
#     no helper;
#   - a Varlink call activates bangerd, whose connection to privhelper.sock
#     activates one banger-privhelper@.service instance;
#   - bangerd runs as banger with no capability, the helper as root with
#     exactly the four, both with no_new_privs and a seccomp filter;
#   - a VM's tap, two loops and a dm-snapshot on them are torn down by that
#     pair when its (stub) firecracker dies: the probe, the tap, loop and DM
#     teardown all work under the hardening;
#   - stopping bangerd ends its helper; the next call starts both again.
# It prints BANGER-SYSTEMD STEP lines as it goes and one verdict last:
#   BANGER-SYSTEMD PASS MS
#   BANGER-SYSTEMD FAIL REASON
# and always the journal of the banger units in between.
# Functions called only through wait_until look unreachable to shellcheck.
# shellcheck disable=SC2317
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# From /etc/banger-vmtest/env (written by run.py from the build's layout).
: "${BANGERCTL:?}" "${STUB:?}"

CTL_SOCKET=/run/banger/bangerd.sock
HELPER_SOCKET=/run/banger/privhelper.sock
# The policy of the shipped units and example config.
TAP_PREFIX=fc-
DM_PREFIX=banger-
DM_UUID_PREFIX=BANGER-
IMAGES=/var/lib/firecracker/images
API_ROOT=/run/firecracker
# CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
HELPER_CAPS=0000000000281004
NO_CAPS=0000000000000000
ID=sd1

now_ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(now_ms)
log() { echo "  [$(($(now_ms) - T0)) ms] $*"; }
step() { echo "BANGER-SYSTEMD STEP $*"; }
# Every call is bounded: a hung activation must end in a verdict, not in the unit's timeout.
ctl() { timeout 30 "$BANGERCTL" --socket "$CTL_SOCKET" --json "$@"; }

WATCH_PID=
STUB_PID=
dump() {
	echo "----- systemctl status -----"
	systemctl status --no-pager --lines=0 bangerd.socket banger-privhelper.socket \
		bangerd.service 'banger-privhelper@*' 2>&1 | head -n 80
	echo "----- journal of the banger units -----"
	journalctl --no-pager -o short-monotonic -u bangerd.socket -u banger-privhelper.socket \
		-u bangerd.service -u 'banger-privhelper@*' 2>&1 | tail -n 200
	echo "----- end of journal -----"
}
finish() {
	[ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
	[ -n "$STUB_PID" ] && kill -9 "$STUB_PID" 2>/dev/null
	dump
}
fail() {
	log "FAIL: $*"
	finish
	echo "BANGER-SYSTEMD FAIL $*"
	exit 1
}

# wait_until SECONDS COMMAND...: poll a condition that has no event (100 ms steps).
wait_until() {
	local limit=$(($1 * 10)) i=0
	shift
	while ! "$@"; do
		i=$((i + 1))
		[ "$i" -le "$limit" ] || return 1
		sleep 0.1
	done
}

field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }
main_pid() { systemctl show -p MainPID --value "$1"; }
helper_units() { systemctl list-units --plain --no-legend --state=active 'banger-privhelper@*.service' | awk '{ print $1 }'; }
no_helper_unit() { [ -z "$(systemctl list-units --all --plain --no-legend 'banger-privhelper@*.service')" ]; }
vm_state() { ctl list | grep -o "\"id\":\"$1\",\"state\":\"[a-z]*\"" | sed 's/.*"state":"//; s/"//'; }
vm_is() { [ "$(vm_state "$2")" = "$1" ]; }
exe_is_stub() { [ "$(readlink "/proc/$1/exe")" = "$STUB" ]; }
stub_listens() { exe_is_stub "$1" && [ -S "$2" ]; }
teardown_event() { grep -E "\"kind\":\"(torn_down|teardown_failed)\",\"id\":\"$1\"" /tmp/events; }
# The first line a unit's program logged that is not a routine one: why it died.
first_error() {
	journalctl --no-pager -o cat -u "$1" 2>/dev/null |
		grep -vE '(^|: )(ready|audit|loaded|reconcile|control socket|call #|event|received SIGTERM)' |
		head -n 1
}
subscribed() { grep -q '"kind":"subscribed"' /tmp/events; }

if [ "${1:-}" = --post-mortem ]; then
	# ExecStopPost: only when the scenario itself could not end with a verdict.
	[ "${SERVICE_RESULT:-success}" = success ] || [ "${EXIT_STATUS:-}" = 1 ] && exit 0
	dump
	echo "BANGER-SYSTEMD FAIL the scenario did not end by itself: $SERVICE_RESULT ${EXIT_CODE:-} ${EXIT_STATUS:-}"
	exit 0
fi

echo "BANGER-SYSTEMD START uptime=$(cut -d' ' -f1 /proc/uptime) $(systemctl --version | head -n 1)"

# --- 1. what the boot made: the two sockets, the user, the directories ---
for s in bangerd.socket banger-privhelper.socket; do
	[ "$(systemctl is-active "$s")" = active ] || fail "$s is $(systemctl is-active "$s") after boot"
done
[ "$(systemctl is-active bangerd.service)" = inactive ] ||
	fail "bangerd.service is $(systemctl is-active bangerd.service) before any call (want inactive: socket-activated)"
no_helper_unit || fail "a helper instance runs before any connection: $(helper_units)"
getent passwd banger >/dev/null || fail "sysusers made no user banger"
BANGER_UID=$(id -u banger)
for s in "$CTL_SOCKET" "$HELPER_SOCKET"; do
	[ -S "$s" ] || fail "$s is not a socket"
done
# The control socket is the readers' (group banger); the helper socket bangerd's alone.
[ "$(stat -c '%U:%G %a' "$CTL_SOCKET")" = "root:banger 660" ] ||
	fail "$CTL_SOCKET is $(stat -c '%U:%G %a' "$CTL_SOCKET"), want root:banger 660"
[ "$(stat -c '%U:%G %a' "$HELPER_SOCKET")" = "banger:banger 600" ] ||
	fail "$HELPER_SOCKET is $(stat -c '%U:%G %a' "$HELPER_SOCKET"), want banger:banger 600"
[ "$(stat -c '%U:%G %a' /run/banger)" = "root:root 755" ] ||
	fail "/run/banger is $(stat -c '%U:%G %a' /run/banger), want root:root 755"
[ "$(stat -c '%U:%G %a' /var/lib/banger)" = "banger:banger 700" ] ||
	fail "/var/lib/banger is $(stat -c '%U:%G %a' /var/lib/banger 2>&1)"
[ -f /etc/banger/bangerd.conf ] || fail "tmpfiles did not copy /etc/banger/bangerd.conf"
step "boot: both sockets active (bangerd.sock root:banger 660, privhelper.sock banger:banger 600, in root's /run/banger 755), bangerd inactive, no helper; user banger uid $BANGER_UID; /var/lib/banger 0700 and /etc/banger/bangerd.conf from sysusers/tmpfiles"

# --- 1b. a reader (group banger) may use the control socket, never the helper's ---
# bangerctl speaks SOCK_STREAM: connect() checks write permission on the socket file
# before the socket type, so on the SEQPACKET helper socket it fails with EACCES for a
# peer the mode keeps out and with EPROTOTYPE for one it lets in, and neither starts a
# helper. (The control socket is only tested for write access: a call would activate
# bangerd, which step 2 does.)
READER=bgreader
useradd --system --no-create-home --shell /usr/sbin/nologin --groups banger "$READER" ||
	fail "useradd $READER"
run_as() { local who=$1; shift; setpriv --reuid="$who" --regid="$who" --init-groups "$@"; }
id -nG "$READER" | grep -qw banger || fail "$READER is not in group banger: $(id -nG "$READER")"
run_as "$READER" test -w "$CTL_SOCKET" || fail "$READER (group banger) may not write $CTL_SOCKET"
run_as "$READER" test -w "$HELPER_SOCKET" && fail "$READER (group banger) may write $HELPER_SOCKET"
run_as "$READER" timeout 30 "$BANGERCTL" --socket "$HELPER_SOCKET" status >/tmp/out 2>&1
grep -q "Permission denied" /tmp/out || fail "$READER connecting to $HELPER_SOCKET: $(cat /tmp/out), want EACCES"
run_as banger timeout 30 "$BANGERCTL" --socket "$HELPER_SOCKET" status >/tmp/out2 2>&1
grep -q "Protocol wrong type" /tmp/out2 ||
	fail "banger connecting (SOCK_STREAM) to $HELPER_SOCKET: $(cat /tmp/out2), want EPROTOTYPE (past the permission check)"
no_helper_unit || fail "a helper instance runs after the reader's attempt: $(helper_units)"
[ "$(systemctl is-active banger-privhelper.socket)" = active ] ||
	fail "banger-privhelper.socket is $(systemctl is-active banger-privhelper.socket) after the reader's attempt"
journalctl --no-pager -o cat -u 'banger-privhelper@*' | grep -q op=violation &&
	fail "a helper logged a violation: $(journalctl --no-pager -o cat -u 'banger-privhelper@*' | grep op=violation)"
userdel "$READER" || fail "userdel $READER"
step "reader: $READER (group banger) may write $CTL_SOCKET; on $HELPER_SOCKET it gets EACCES ($(sed 's/.*: //' /tmp/out)) and starts no helper; banger gets past the permission check"

# --- 2. a Varlink call activates bangerd, bangerd's connection the helper ---
t=$(now_ms)
ctl status >/tmp/status 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
	fail "bangerctl status (activation) exited $rc: $(cat /tmp/status);" \
		"first helper error: $(first_error 'banger-privhelper@*');" \
		"first bangerd error: $(first_error bangerd.service)"
fi
log "bangerctl status answered in $(($(now_ms) - t)) ms: $(cat /tmp/status)"
[ "$(systemctl is-active bangerd.service)" = active ] ||
	fail "bangerd.service is $(systemctl is-active bangerd.service) after the call"
wait_until 10 test -n "$(helper_units)" || fail "no banger-privhelper@ instance after bangerd started"
HUNIT=$(helper_units)
[ "$(echo "$HUNIT" | wc -l)" -eq 1 ] || fail "more than one helper instance: $HUNIT"
BPID=$(main_pid bangerd.service)
HPID=$(main_pid "$HUNIT")
grep -q "\"helper_pid\":${HPID}[,}]" /tmp/status ||
	fail "bangerd reports another helper than $HUNIT (pid $HPID): $(cat /tmp/status)"
step "activation: the call started bangerd.service (pid $BPID), its connection $HUNIT (pid $HPID)"

# --- 3. who runs with what ---
[ "$(field "$BPID" Uid | tr -s '\t ' ' ')" = "$BANGER_UID $BANGER_UID $BANGER_UID $BANGER_UID" ] ||
	fail "bangerd uids: $(field "$BPID" Uid), want banger ($BANGER_UID)"
for c in CapInh CapPrm CapEff CapBnd CapAmb; do
	[ "$(field "$BPID" $c)" = "$NO_CAPS" ] || fail "bangerd $c is $(field "$BPID" $c), want none"
done
[ "$(field "$HPID" Uid | tr -s '\t ' ' ')" = "0 0 0 0" ] || fail "helper uids: $(field "$HPID" Uid), want root"
[ "$(field "$HPID" PPid)" = 1 ] || fail "helper's parent is $(field "$HPID" PPid), want systemd (split mode, not spawned)"
for c in CapPrm CapEff CapBnd; do
	[ "$(field "$HPID" $c)" = "$HELPER_CAPS" ] ||
		fail "helper $c is $(field "$HPID" $c), want $HELPER_CAPS (net_admin sys_admin sys_ptrace dac_read_search)"
done
for c in CapInh CapAmb; do
	[ "$(field "$HPID" $c)" = "$NO_CAPS" ] || fail "helper $c is $(field "$HPID" $c), want none"
done
for p in "$BPID" "$HPID"; do
	[ "$(field "$p" NoNewPrivs)" = 1 ] || fail "pid $p: NoNewPrivs $(field "$p" NoNewPrivs)"
	[ "$(field "$p" Seccomp)" = 2 ] || fail "pid $p: Seccomp $(field "$p" Seccomp), want 2 (filter)"
done
step "credentials: bangerd uid $BANGER_UID with no capability; helper uid 0 with CapEff=CapPrm=CapBnd=$HELPER_CAPS, parent systemd; both no_new_privs and seccomp"

# --- 4. a VM: its tap, two loops and a dm-snapshot, its firecracker ---
BASE=$IMAGES/$ID-base.img
COW=$IMAGES/$ID-cow.img
DM=$DM_PREFIX$ID
TAP=$TAP_PREFIX$ID
API_SOCK=$API_ROOT/$ID/api.sock
mkdir -p "$IMAGES" "$API_ROOT/$ID"
chown nobody:nogroup "$API_ROOT/$ID" # the firecracker (below, uid nobody) binds its socket there
ctl register "$ID" --api-sock "$API_SOCK" --tap "$TAP" --loop-file "$BASE" --loop-file "$COW" \
	--dm "$DM" >/tmp/out 2>&1 || fail "register $ID: $(cat /tmp/out)"
dd if=/dev/zero of="$BASE" bs=1M count=16 status=none || fail "cannot write $BASE"
echo "base image of $ID" | dd of="$BASE" conv=notrunc status=none
truncate -s 8M "$COW" || fail "cannot make $COW"
LOOP_BASE=$(losetup -f --show "$BASE") || fail "losetup $BASE"
LOOP_COW=$(losetup -f --show "$COW") || fail "losetup $COW"
sectors=$(blockdev --getsz "$LOOP_BASE")
dmsetup create "$DM" --uuid "$DM_UUID_PREFIX$ID" --table "0 $sectors snapshot $LOOP_BASE $LOOP_COW P 8" ||
	fail "dmsetup create $DM"
echo "written through $DM" | dd of="/dev/mapper/$DM" conv=notrunc,fsync status=none ||
	fail "cannot write through /dev/mapper/$DM"
head -c 15 "/dev/mapper/$DM" | grep -q "written through" || fail "$DM does not read back"
ip tuntap add dev "$TAP" mode tap || fail "ip tuntap add $TAP"
# Like under a jailer, the firecracker runs as another user than anyone here.
setpriv --reuid=nobody --regid=nogroup --clear-groups "$STUB" --api-sock "$API_SOCK" \
	</dev/null >/dev/null 2>&1 &
STUB_PID=$!
wait_until 5 stub_listens "$STUB_PID" "$API_SOCK" || fail "stub $STUB_PID never listened"
ctl set "$ID" "$STUB_PID" --tap "$TAP" --loop "$LOOP_BASE" --loop "$LOOP_COW" --dm "$DM" \
	>/tmp/out 2>&1 || fail "set $ID (the helper's probe of pid $STUB_PID): $(cat /tmp/out)"
grep -q '"state":"running"' /tmp/out || fail "set $ID did not make it running: $(cat /tmp/out)"
ctl alive "$ID" >/tmp/out 2>&1 || fail "alive $ID: $(cat /tmp/out)"
step "vm $ID running: firecracker pid $STUB_PID (uid nobody), tap $TAP, $DM = snapshot($LOOP_BASE <- $BASE, cow $LOOP_COW <- $COW)"

# --- 5. the firecracker dies: the hardened pair tears it all down ---
: >/tmp/events
"$BANGERCTL" --socket "$CTL_SOCKET" --json watch >>/tmp/events 2>&1 &
WATCH_PID=$!
wait_until 10 subscribed || fail "watch never subscribed: $(cat /tmp/events)"
t=$(now_ms)
kill -9 "$STUB_PID"
wait "$STUB_PID" 2>/dev/null
STUB_PID=
wait_until 30 teardown_event "$ID" >/dev/null ||
	fail "no teardown event for $ID within 30 s: $(cat /tmp/events); list: $(ctl list)"
EVENT=$(teardown_event "$ID" | head -n 1)
log "kill -9 -> teardown in $(($(now_ms) - t)) ms: $EVENT"
echo "$EVENT" | grep -q '"kind":"torn_down"' || fail "teardown did not succeed: $EVENT"
wait_until 10 vm_is stopped "$ID" || fail "$ID is $(vm_state "$ID"), want stopped"
dmsetup info "$DM" >/dev/null 2>&1 && fail "$DM still exists: $(dmsetup ls)"
dmsetup ls | grep -q "^$DM_PREFIX" && fail "dmsetup ls shows a banger device: $(dmsetup ls)"
[ -z "$(losetup -j "$BASE")" ] || fail "loop on $BASE left: $(losetup -a)"
[ -z "$(losetup -j "$COW")" ] || fail "loop on $COW left: $(losetup -a)"
[ -z "$(losetup -a)" ] || fail "losetup -a shows loops left: $(losetup -a)"
ip link show "$TAP" >/dev/null 2>&1 && fail "tap $TAP left: $(ip link)"
journalctl --no-pager -o cat -u "$HUNIT" | grep "op=teardown" |
	grep -q "dm=\"$DM:removed\" loops=\"$LOOP_BASE:removed,$LOOP_COW:removed" ||
	fail "no audit line of the teardown in the helper's journal: $(journalctl --no-pager -o cat -u "$HUNIT" | grep op=)"
step "teardown: $DM, $LOOP_BASE, $LOOP_COW and $TAP removed by $HUNIT; dmsetup ls, losetup -a and ip link show none of them"
kill "$WATCH_PID" 2>/dev/null
wait "$WATCH_PID" 2>/dev/null
WATCH_PID=

# --- 5b. the journal: the VM's story from both units, found by its field ---
# common/message_id.h's ids of the entries the story must hold, in this order.
MID_CALL=c1534e9256e64eb380ffe50db10d7fa5
MID_REGISTERED=caf079f6e9444b319c0515a21629ad9f
MID_PROBE=27b1725de35948609421ba63954a27ae
MID_HANDLES_SET=89d9865096be459686af466fce282c38
MID_EXITED=3628166f517747a98590a581414a29cf
MID_TEARDOWN=79883f8781c84874a7b6c4922c8e7138
MID_TORN_DOWN=86a78c618e4349a1a7e0df26580828f5
# jfield NAME: the (first) string value of NAME in the JSON entry on stdin.
jfield() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | sed 's/^"[^"]*":"//; s/"$//'; }
vm_journal() {
	journalctl --sync
	journalctl --no-pager -o json "BANGER_VM_ID=$ID" >/tmp/vmjournal.json 2>&1 &&
		grep -q "\"MESSAGE_ID\":\"$MID_TORN_DOWN\"" /tmp/vmjournal.json
}
wait_until 10 vm_journal || fail "journalctl BANGER_VM_ID=$ID has no torn_down entry: $(cat /tmp/vmjournal.json)"
# One line per entry: MESSAGE_ID unit call result ("-" for a field the entry lacks).
while read -r entry; do
	line=
	for f in MESSAGE_ID _SYSTEMD_UNIT BANGER_CALL BANGER_RESULT; do
		v=$(echo "$entry" | jfield "$f")
		line="$line ${v:--}"
	done
	echo "${line# }"
done </tmp/vmjournal.json >/tmp/vmstory
log "journalctl BANGER_VM_ID=$ID -o json: $(wc -l </tmp/vmstory) entries"
sed 's/^/    /' /tmp/vmstory
# The expected entries, as an ordered subsequence: MESSAGE_ID, unit (a prefix), call (a regex).
SET_CALL=$(awk -v m="$MID_CALL" '$1 == m && $3 ~ /^SetHandles#/ { print $3; exit }' /tmp/vmstory)
[ -n "$SET_CALL" ] || fail "no admitted SetHandles call for $ID in the journal"
want="$MID_CALL bangerd.service ^Register#
$MID_REGISTERED bangerd.service .*
$MID_CALL bangerd.service ^$SET_CALL\$
$MID_PROBE banger-privhelper@ ^$SET_CALL\$
$MID_HANDLES_SET bangerd.service .*
$MID_EXITED bangerd.service ^exit\$
$MID_TEARDOWN banger-privhelper@ ^exit\$
$MID_TORN_DOWN bangerd.service ^exit\$"
missing=$(echo "$want" | awk '
	NR == FNR { mid[NR] = $1; unit[NR] = $2; call[NR] = $3; n = NR; next }
	i < n && $1 == mid[i + 1] && index($2, unit[i + 1]) == 1 && $3 ~ call[i + 1] { i++ }
	END { if (i < n) print mid[i + 1] " " unit[i + 1] " " call[i + 1] }' - /tmp/vmstory)
[ -z "$missing" ] || fail "journalctl BANGER_VM_ID=$ID lacks, in order, the entry: $missing"
probe=$(grep "\"MESSAGE_ID\":\"$MID_PROBE\"" /tmp/vmjournal.json | tail -n 1)
[ "$(echo "$probe" | jfield BANGER_RESULT)" = running ] || fail "the helper's probe entry: $probe"
td=$(grep "\"MESSAGE_ID\":\"$MID_TEARDOWN\"" /tmp/vmjournal.json | tail -n 1)
if [ "$(echo "$td" | jfield BANGER_RESULT)" != ok ] || [ "$(echo "$td" | jfield BANGER_DM)" != "$DM" ] ||
	[ "$(echo "$td" | jfield BANGER_TAP)" != "$TAP" ] || [ "$(echo "$td" | jfield BANGER_OP)" != teardown ]; then
	fail "the helper's teardown entry does not name its result, $DM and $TAP: $td"
fi
step "journal: BANGER_VM_ID=$ID holds Register, registered, $SET_CALL, the helper's probe for $SET_CALL, handles_set, exited, the helper's teardown for exit ($DM, $TAP: ok) and torn_down, in order, from bangerd.service and $HUNIT"

# The catalog: compiled by journalctl, and shown by -x with the entry's own fields.
journalctl --update-catalog >/tmp/out 2>&1 || fail "journalctl --update-catalog: $(cat /tmp/out)"
[ -s /tmp/out ] && fail "journalctl --update-catalog complained: $(cat /tmp/out)"
journalctl --list-catalog 2>&1 | grep -q "^$MID_TORN_DOWN " ||
	fail "journalctl --list-catalog has no banger entry: $(journalctl --list-catalog 2>&1 | grep -i banger)"
journalctl --no-pager -x "BANGER_VM_ID=$ID" "MESSAGE_ID=$MID_TORN_DOWN" >/tmp/out 2>&1
grep -q "Subject: banger: the resources of VM $ID were torn down" /tmp/out ||
	fail "journalctl -x shows no catalog text for torn_down: $(cat /tmp/out)"
step "catalog: journalctl --update-catalog took it; -x explains torn_down of $ID: $(grep -m 1 'Subject:' /tmp/out | sed 's/^[^S]*//')"

# --- 6. stopping bangerd ends its helper; the next call starts both again ---
timeout 60 systemctl stop bangerd.service || fail "systemctl stop bangerd.service"
wait_until 15 no_helper_unit || fail "the helper outlived bangerd: $(helper_units)"
for s in bangerd.socket banger-privhelper.socket; do
	[ "$(systemctl is-active "$s")" = active ] || fail "$s is $(systemctl is-active "$s") after bangerd stopped"
done
ctl status >/tmp/status 2>&1 || fail "bangerctl status (second activation): $(cat /tmp/status)"
wait_until 10 test -n "$(helper_units)" || fail "no helper instance after the second activation"
HUNIT2=$(helper_units)
HPID2=$(main_pid "$HUNIT2")
BPID2=$(main_pid bangerd.service)
if [ "$HUNIT2" = "$HUNIT" ] || [ "$BPID2" = "$BPID" ]; then
	fail "no fresh pair: bangerd $BPID -> $BPID2, helper $HUNIT -> $HUNIT2"
fi
grep -q "\"helper_pid\":${HPID2}[,}]" /tmp/status || fail "bangerd reports another helper: $(cat /tmp/status)"
vm_is stopped "$ID" || fail "after the restart $ID is $(vm_state "$ID"), want stopped"
step "restart: stop ended $HUNIT; the next call started bangerd $BPID2 and $HUNIT2; $ID still stopped"

# --- 7. informational: the exposure scores systemd gives the two units ---
for u in bangerd.service "$HUNIT2"; do
	echo "  security: $(systemd-analyze security --no-pager "$u" 2>&1 | grep -i 'overall exposure' | tr -s ' ')"
done
failed=$(systemctl list-units --failed --plain --no-legend | awk '{ print $1 }' | tr '\n' ' ')
log "failed units: ${failed:-none}"
echo "$failed" | grep -q banger && fail "failed banger units: $failed"

finish
echo "BANGER-SYSTEMD PASS $(($(now_ms) - T0))"
exit 0
