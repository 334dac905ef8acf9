package banger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Three runs of one VM under one id, each with a real tap and two real
// loops: Register the plan, create, start firecracker, SetHandles (a pidfd),
// watch it exit and bangerd tear it down; the next Register re-arms the record.
func TestLifecycleThreeRuns(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx := ctxFor(t)
	w, err := c.Watch(ctx)
	must(t, err)
	const id = "vm-life"
	for run := 1; run <= 3; run++ {
		tap := tag("bgtgo") + string(rune('a'+run))
		files := []string{filepath.Join(d.loopRoot, tag("life")+"-0.img"), filepath.Join(d.loopRoot, tag("life")+"-1.img")}
		vm, err := c.Register(ctx, id, d.apiSock(id), &Plan{Tap: tap, LoopFiles: files})
		if err != nil {
			t.Fatalf("run %d: Register: %v", run, err)
		}
		if vm.State != "starting" || vm.Planned == nil || *vm.Planned.Tap != tap {
			t.Fatalf("run %d: registered %+v", run, vm)
		}
		makeTap(t, tap)
		loops := []string{makeLoop(t, files[0]), makeLoop(t, files[1])}
		fc := startStub(t, d.apiSock(id), true)
		vm, persisted, err := c.SetHandlesProcess(ctx, id, fc.cmd.Process, Resources{Tap: tap, Loops: loops})
		if err != nil || !persisted || vm.State != "running" || vm.Handles.Pid != int64(fc.cmd.Process.Pid) {
			t.Fatalf("run %d: SetHandles: %+v persisted=%v %v", run, vm, persisted, err)
		}
		if alive, err := c.Alive(ctx, id); alive != Alive || err != nil {
			t.Fatalf("run %d: Alive: %s %v", run, alive, err)
		}
		h, err := c.GetHandles(ctx, id)
		if err != nil || *h.Tap != tap || strings.Join(h.Loops, ",") != strings.Join(loops, ",") {
			t.Fatalf("run %d: GetHandles: %+v %v", run, h, err)
		}
		// Which link and which attaches the VM uses, as the kernel numbers them.
		if h.Tap_ifindex == nil || *h.Tap_ifindex != sysfsInt(t, "/sys/class/net/"+tap+"/ifindex") {
			t.Fatalf("run %d: GetHandles tap_ifindex: %+v", run, h)
		}
		if h.Loop_diskseq == nil || len(*h.Loop_diskseq) != len(loops) {
			t.Fatalf("run %d: GetHandles loop_diskseq: %+v", run, h)
		}
		for i, l := range loops {
			if seq := sysfsInt(t, "/sys/block/"+filepath.Base(l)+"/diskseq"); (*h.Loop_diskseq)[i] != seq {
				t.Fatalf("run %d: loop %s has diskseq %d, GetHandles says %d", run, l, seq, (*h.Loop_diskseq)[i])
			}
		}
		fc.kill()
		nextEvent(t, w, id, "exited")
		nextEvent(t, w, id, "torn_down")
		if linkExists(tap) {
			t.Fatalf("run %d: tap %s left behind", run, tap)
		}
		for _, f := range files {
			if l := loopsOn(t, f); len(l) != 0 {
				t.Fatalf("run %d: loops %v left on %s", run, l, f)
			}
		}
		if alive, err := c.Alive(ctx, id); alive != Dead || err != nil {
			t.Fatalf("run %d: Alive after exit: %s %v", run, alive, err)
		}
	}
	vms, err := c.List(ctx)
	if err != nil || len(vms) != 1 || vms[0].Id != id || vms[0].State != "stopped" {
		t.Fatalf("List after three runs: %+v %v", vms, err)
	}
}

// The pidfd travels with SetHandles (SCM_RIGHTS) and names the process:
// a wrong pid next to the right pidfd still verifies the stub.
func TestSetHandlesPassesPidfd(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx := ctxFor(t)
	_, err := c.Register(ctx, "pf", d.apiSock("pf"), nil)
	must(t, err)
	fc := startStub(t, d.apiSock("pf"), true)
	pidfd, err := unix.PidfdOpen(fc.cmd.Process.Pid, 0)
	must(t, err)
	defer unix.Close(pidfd)
	vm, _, err := c.SetHandlesPidfd(ctx, "pf", os.Getpid(), pidfd, Resources{})
	if err != nil || vm.Handles == nil || vm.Handles.Pid != int64(fc.cmd.Process.Pid) {
		t.Fatalf("SetHandles by pidfd: %+v %v", vm, err)
	}
	if !strings.Contains(d.logText(), "pidfd") {
		t.Logf("bangerd's log does not say pidfd (informational)")
	}
	// And SetHandles(pid) opens the pidfd itself: our own process is no firecracker.
	_, _, err = c.SetHandles(ctx, "pf", os.Getpid(), Resources{})
	var nf *NotFirecracker
	if !errors.As(err, &nf) || nf.Pid != int64(os.Getpid()) {
		t.Fatalf("SetHandles(own pid): %v, want *NotFirecracker", err)
	}
	_, _, err = c.SetHandles(ctx, "pf", 1<<30, Resources{})
	if !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("SetHandles(no such pid): %v, want ESRCH from pidfd_open", err)
	}
}

// Every error bangerd answers arrives as its typed Go error.
func TestTypedErrors(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx := ctxFor(t)
	expect := func(what string, err error, target interface{}) {
		t.Helper()
		if !errors.As(err, target) {
			t.Fatalf("%s: %v (%T), want %T", what, err, err, target)
		}
	}
	_, err := c.Alive(ctx, "nope")
	var noSuch *NoSuchVM
	expect("Alive(unknown)", err, &noSuch)
	if noSuch.Id != "nope" {
		t.Fatalf("NoSuchVM names %q", noSuch.Id)
	}
	_, err = c.Register(ctx, "../x", d.apiSock("x"), nil)
	var badID *InvalidID
	expect("Register(../x)", err, &badID)
	_, err = c.Register(ctx, "x", "relative/api.sock", nil)
	var badParam *InvalidParameter
	expect("Register(relative api_sock)", err, &badParam)
	if badParam.Parameter != "api_sock" {
		t.Fatalf("InvalidParameter names %q", badParam.Parameter)
	}
	_, err = c.Register(ctx, "x", d.apiSock("x"), &Plan{Tap: "eth0"})
	var refused *PolicyRefused
	expect("Register(tap eth0)", err, &refused)

	w, err := c.Watch(ctx)
	must(t, err)
	_, err = c.Register(ctx, "e1", d.apiSock("e1"), nil, WithOnExit(KeepOnExit))
	must(t, err)
	_, err = c.Register(ctx, "e1", d.apiSock("e1"), nil)
	var exists *VMExists
	expect("Register twice", err, &exists)
	if exists.State != "starting" || !strings.Contains(exists.Reason, "SetHandles") {
		t.Fatalf("VMExists while starting: %+v", exists)
	}
	_, err = c.GetHandles(ctx, "e1")
	var noHandles *NoHandles
	expect("GetHandles(starting)", err, &noHandles)

	fc := startStub(t, d.apiSock("e1"), true)
	_, _, err = c.SetHandles(ctx, "e1", fc.cmd.Process.Pid, Resources{Tap: makeTap(t, tag("bgtgoe"))})
	must(t, err)
	_, err = c.Teardown(ctx, "e1")
	var running *StillRunning
	expect("Teardown(running)", err, &running)
	if running.Pid != int64(fc.cmd.Process.Pid) {
		t.Fatalf("StillRunning names pid %d", running.Pid)
	}
	err = c.Unregister(ctx, "e1")
	expect("Unregister(running)", err, &running)
	_, err = c.Register(ctx, "e1", d.apiSock("e1"), nil)
	expect("Register(running)", err, &exists)
	if exists.State != "running" || !strings.Contains(exists.Reason, "Teardown") {
		t.Fatalf("VMExists while running: %+v", exists)
	}

	// Stopped with leftovers: on_exit keep, then ClearHandles, keep the mirror until Teardown.
	fc.kill()
	nextEvent(t, w, "e1", "exited")
	must(t, c.ClearHandles(ctx, "e1"))
	_, err = c.Register(ctx, "e1", d.apiSock("e1"), nil)
	expect("Register(stopped, leftovers)", err, &exists)
	if exists.State != "stopped" || !strings.Contains(exists.Reason, "Teardown") {
		t.Fatalf("VMExists while stopped with leftovers: %+v", exists)
	}
	_, err = c.Teardown(ctx, "e1")
	must(t, err)
	must(t, c.Unregister(ctx, "e1"))
	_, err = c.GetHandles(ctx, "e1")
	expect("GetHandles(unregistered)", err, &noSuch)

	// StorageFailed: bangerd (unprivileged) cannot write the new record.
	vmsDir := filepath.Join(d.stateDir, "vms")
	must(t, os.Chmod(vmsDir, 0o500))
	_, err = c.Register(ctx, "sf", d.apiSock("sf"), nil)
	must(t, os.Chmod(vmsDir, 0o700))
	var storage *StorageFailed
	expect("Register(unwritable state)", err, &storage)

	// PermissionDenied: a caller that is neither root, nor bangerd's user, nor an admin.
	must(t, os.Chmod(d.socket, 0o666))
	_, err = c.Register(ctx, "pm", d.apiSock("pm"), nil)
	must(t, err)
	expectChild(t, d, "pm", "PermissionDenied")

	// CorruptState: a handles.json that cannot be read is kept aside and named.
	_, err = c.Register(ctx, "cs", d.apiSock("cs"), nil)
	must(t, err)
	d.kill()
	scratch := filepath.Join(d.stateDir, "vms", "cs", "handles.json")
	must(t, os.WriteFile(scratch, []byte("garbage"), 0o600))
	st, err := os.Stat(filepath.Dir(scratch))
	must(t, err)
	owner := st.Sys().(*syscall.Stat_t)
	must(t, os.Chown(scratch, int(owner.Uid), int(owner.Gid))) // bangerd's, as it would write it
	d.start()
	_, err = c.GetHandles(ctx, "cs")
	var corrupt *CorruptState
	expect("GetHandles(corrupt scratch)", err, &corrupt)
	if !strings.Contains(corrupt.Kept_as, "handles.json") {
		t.Fatalf("CorruptState kept as %q: %+v", corrupt.Kept_as, corrupt)
	}
}

// The helper dies with a TEARDOWN in flight: the relaying proxy
// (tests/stub/helper_proxy.c) holds the first TEARDOWN and is killed, the
// real helper with it. Teardown answers HelperUnavailable with its reason,
// nothing is torn down, and bangerd, which has lost its helper, exits 3.
func TestHelperUnavailable(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "proxy.fifo")
	must(t, unix.Mkfifo(fifo, 0o600))
	// Read-write: the FIFO always has a writer, so a read waits for "held"
	// (a reader alone would see EOF until the proxy opens it).
	held, err := os.OpenFile(fifo, os.O_RDWR, 0)
	must(t, err)
	defer held.Close()
	d := startDaemon(t, losingHelper, withHelper(env(t, "BANGER_HELPER_PROXY"),
		"BANGER_PROXY_HOLD_TYPE=7", // PS_TEARDOWN (proto/privsep.h)
		"BANGER_PROXY_FIFO="+fifo))
	c := d.client(t)
	ctx := ctxFor(t)
	w, err := c.Watch(ctx)
	must(t, err)

	const id = "vm-hu"
	tap := tag("bgtgoh")
	files := []string{filepath.Join(d.loopRoot, tag("hu")+"-0.img"), filepath.Join(d.loopRoot, tag("hu")+"-1.img")}
	_, err = c.Register(ctx, id, d.apiSock(id), &Plan{Tap: tap, LoopFiles: files}, WithOnExit(KeepOnExit))
	must(t, err)
	makeTap(t, tap) // removed at the test's end: no next helper here finishes the job
	loops := []string{makeLoop(t, files[0]), makeLoop(t, files[1])}
	fc := startStub(t, d.apiSock(id), true)
	_, _, err = c.SetHandlesProcess(ctx, id, fc.cmd.Process, Resources{Tap: tap, Loops: loops})
	must(t, err)
	fc.kill()
	nextEvent(t, w, id, "exited") // on_exit keep: no TEARDOWN of bangerd's own

	done := make(chan error, 1)
	go func() {
		_, err := c.Teardown(ctx, id)
		done <- err
	}()
	must(t, held.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 64)
	n, err := held.Read(buf)
	if err != nil || string(buf[:n]) != "held\n" {
		t.Fatalf("the proxy does not hold the TEARDOWN: %q %v\n%s", buf[:n], err, d.logText())
	}
	proxy := d.helperPid()
	real := childrenOf(t, proxy)
	if len(real) != 1 {
		t.Fatalf("the proxy has children %v, want the real helper alone", real)
	}
	must(t, syscall.Kill(proxy, syscall.SIGKILL))
	waitPidGone(t, real[0], 5*time.Second) // PR_SET_PDEATHSIG: it follows its proxy

	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Teardown not answered 10 s after the helper died:\n%s", d.logText())
	}
	var unavailable *HelperUnavailable
	if !errors.As(err, &unavailable) {
		t.Fatalf("Teardown with the helper gone: %v (%T), want *HelperUnavailable", err, err)
	}
	if unavailable.Reason == "" {
		t.Fatalf("HelperUnavailable without a reason: %+v", unavailable)
	}
	// The stream says the helper is gone, never torn_down, and ends with bangerd.
	gone := false
	for timeout := time.After(10 * time.Second); ; {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				goto ended
			}
			if ev.Kind == "torn_down" {
				t.Fatalf("torn_down with the TEARDOWN lost: %+v", ev)
			}
			gone = gone || ev.Kind == "helper_gone"
		case <-timeout:
			t.Fatal("Watch not ended 10 s after the helper died")
		}
	}
ended:
	if !gone {
		t.Fatalf("no helper_gone event before the stream ended (%v)", w.Err())
	}
	d.waitExit() // and the cleanup checks its status: 3 (losingHelper)
	if !linkExists(tap) {
		t.Fatalf("tap %s torn down though the TEARDOWN never reached the helper", tap)
	}
	for _, f := range files {
		if l := loopsOn(t, f); len(l) != 1 {
			t.Fatalf("loops %v on %s, want the one the record names", l, f)
		}
	}
	t.Logf("HelperUnavailable: %q; bangerd exited 3; tap and 2 loops kept", unavailable.Reason)
}

// expectChild runs this test binary again as uid 1 ("daemon": no admin) to call
// ClearHandles on VM id.
func expectChild(t *testing.T, d *daemon, id, want string) {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	exe := filepath.Join(d.dir, "client.test")
	data, err := os.ReadFile(self)
	must(t, err)
	must(t, os.WriteFile(exe, data, 0o755))
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "BANGER_CHILD_SOCKET="+d.socket,
		"BANGER_CHILD_VM="+id, "BANGER_CHILD_WANT="+want)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1, Gid: 1}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child saw "+want) {
		t.Fatalf("the uid 1 client: %v\n%s", err, out)
	}
}

// TestMain: the package's tests, or expectChild's other half (as uid 1).
func TestMain(m *testing.M) {
	if socket := os.Getenv("BANGER_CHILD_SOCKET"); socket != "" {
		os.Exit(permissionChild(socket))
	}
	os.Exit(m.Run())
}

func permissionChild(socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, socket)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer c.Close()
	err = c.ClearHandles(ctx, os.Getenv("BANGER_CHILD_VM"))
	var denied *PermissionDenied
	if !errors.As(err, &denied) || denied.Method != "io.banger.Handles.ClearHandles" {
		fmt.Printf("ClearHandles as uid 1: %v\n", err)
		return 1
	}
	if _, err := c.List(ctx); err != nil {
		fmt.Printf("reads stay open: %v\n", err)
		return 1
	}
	fmt.Printf("child saw %s\n", os.Getenv("BANGER_CHILD_WANT"))
	return 0
}

// Reconcile (the seed's rediscoverHandles) keeps the live, reports the orphans.
func TestReconcile(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx := ctxFor(t)
	fc := d.runningVM(t, c, "rc")
	orphan := startStub(t, d.apiSock("nobody-owns-me"), true)
	entries, orphans, err := c.Reconcile(ctx)
	must(t, err)
	if len(entries) != 1 || entries[0].Action != "kept" || *entries[0].Pid != int64(fc.cmd.Process.Pid) {
		t.Fatalf("Reconcile entries %+v", entries)
	}
	if len(orphans) != 1 || orphans[0].Pid != int64(orphan.cmd.Process.Pid) {
		t.Fatalf("Reconcile orphans %+v", orphans)
	}
	e, err := c.Rediscover(ctx, "rc")
	if err != nil || e == nil || e.Action != "kept" {
		t.Fatalf("Rediscover: %+v %v", e, err)
	}
	s, err := c.Status(ctx)
	if err != nil || s.Counts.Running != 1 || s.HelperState != "ok" ||
		s.Version != os.Getenv("BANGER_PROJECT_VERSION") {
		t.Fatalf("Status: %+v %v", s, err)
	}
}

// Cancelling Watch's context closes its channel at once, with the context's error.
func TestWatchCancellation(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx, cancel := context.WithCancel(ctxFor(t))
	w, err := c.Watch(ctx)
	must(t, err)
	_, err = c.Register(ctxFor(t), "wc", d.apiSock("wc"), nil)
	must(t, err)
	if ev := nextEvent(t, w, "wc", "registered"); ev.Time_usec == 0 {
		t.Fatalf("event without time: %+v", ev)
	}
	cancel()
	waitEventsClosed(t, w, "the cancel")
	if !errors.Is(w.Err(), context.Canceled) {
		t.Fatalf("Watch ended with %v, want context.Canceled", w.Err())
	}
	// bangerd dropped the watcher: a new registration is served and no stream lingers.
	if _, err := c.Register(ctxFor(t), "wc2", d.apiSock("wc2"), nil); err != nil {
		t.Fatal(err)
	}
}

// A context deadline ends a call that bangerd is still working on.
func TestContextDeadline(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	_, err := c.Register(ctxFor(t), "dl", d.apiSock("dl"), nil)
	must(t, err)
	// A firecracker that binds only after 5 s: bangerd waits up to api_sock_wait_ms (2 s).
	slow := startStub(t, d.apiSock("dl"), false, "--listen-after-ms", "5000")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = c.SetHandlesProcess(ctx, "dl", slow.cmd.Process, Resources{})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || took > 1500*time.Millisecond {
		t.Fatalf("SetHandles past its deadline: %v after %v", err, took)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-ctx2.Done()
	if _, err := c.Alive(ctx2, "dl"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Alive with an expired context: %v", err)
	}
	// The client is still good for the next call.
	if alive, err := c.Alive(ctxFor(t), "dl"); err != nil || alive != Dead {
		t.Fatalf("Alive after the deadline: %s %v", alive, err)
	}
}

// The transport's contexts: a cancel ends a call bangerd is working on, and
// one connection serves, in turn, a context that was cancelled while it
// idled, one whose deadline passed, and context.Background() (which starts
// no watcher goroutine).
func TestContextSwitch(t *testing.T) {
	d := startDaemon(t)
	_, err := d.client(t).Register(ctxFor(t), "cw", d.apiSock("cw"), nil)
	must(t, err)

	// Background alone: no watcher.
	c, err := Dial(context.Background(), d.socket)
	must(t, err)
	defer c.Close()
	for i := 0; i < 3; i++ {
		if alive, err := c.Alive(context.Background(), "cw"); err != nil || alive != Dead {
			t.Fatalf("Alive(Background): %s %v", alive, err)
		}
	}
	if c.conn.watching != nil {
		t.Fatal("context.Background() started a watcher")
	}
	first := c.conn

	// waitExpired waits (bounded) for the watcher to set the idle socket's deadline in the past.
	waitExpired := func(what string) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !c.conn.expired.Load(); {
			if time.Now().After(end) {
				t.Fatalf("%s: the watcher did not expire the connection in 5 s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	alive := func(ctx context.Context, what string) {
		t.Helper()
		if l, err := c.Alive(ctx, "cw"); err != nil || l != Dead {
			t.Fatalf("Alive %s: %s %v", what, l, err)
		}
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	alive(ctxA, "with a cancellable context")
	cancelA()
	waitExpired("cancelled while idle")
	if _, err := c.Alive(ctxA, "cw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Alive(cancelled context): %v", err)
	}
	alive(context.Background(), "(Background) after a cancel while idle")

	ctxD, cancelD := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelD()
	alive(ctxD, "with a deadline")
	<-ctxD.Done()
	waitExpired("deadline passed while idle")
	alive(context.Background(), "(Background) after a deadline passed")
	alive(ctxFor(t), "with a later deadline")
	if c.conn != first {
		t.Fatal("the connection was dropped on the way")
	}

	// A cancel mid-call: bangerd waits for the api socket (a stub that binds after 5 s).
	slow := startStub(t, d.apiSock("cw"), false, "--listen-after-ms", "5000")
	ctxC, cancelC := context.WithCancel(context.Background())
	timer := time.AfterFunc(200*time.Millisecond, cancelC)
	defer timer.Stop()
	start := time.Now()
	_, _, err = c.SetHandlesProcess(ctxC, "cw", slow.cmd.Process, Resources{})
	if took := time.Since(start); !errors.Is(err, context.Canceled) || took > 1500*time.Millisecond {
		t.Fatalf("SetHandles cancelled after 200 ms: %v after %v", err, took)
	}
	alive(context.Background(), "after a call was cancelled")
}

// bangerd restarts while the client holds a connection: the next call dials
// the new bangerd; a call while none listens says so; a Watch ends with
// ErrConnectionLost.
func TestBangerdRestart(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	ctx := ctxFor(t)
	d.runningVM(t, c, "rs")
	w, err := c.Watch(ctx)
	must(t, err)

	d.kill()
	waitEventsClosed(t, w, "bangerd died")
	if !errors.Is(w.Err(), ErrConnectionLost) {
		t.Fatalf("Watch ended with %v, want ErrConnectionLost", w.Err())
	}
	_, err = c.Alive(ctx, "rs")
	if err == nil || !strings.Contains(err.Error(), "cannot reach bangerd") ||
		!(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)) {
		t.Fatalf("Alive while bangerd is down: %v", err)
	}

	d.start()
	if alive, err := c.Alive(ctx, "rs"); err != nil || alive != Alive {
		t.Fatalf("Alive after the restart: %s %v (reconcile adopts the live stub)", alive, err)
	}
	// And a connection that idled across a restart is replaced without the caller seeing it.
	d.restart()
	if _, err := c.Register(ctx, "rs2", d.apiSock("rs2"), nil); err != nil {
		t.Fatalf("Register on a connection from before the restart: %v", err)
	}
}

func TestClosed(t *testing.T) {
	d := startDaemon(t)
	c := d.client(t)
	must(t, c.Close())
	if _, err := c.List(ctxFor(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("List after Close: %v", err)
	}
	if _, err := c.Watch(ctxFor(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
}

// TestTooManyVMs: past --max-vms a new id is refused with the limit named;
// re-arming a known id is not, and a freed slot takes the new id.
func TestTooManyVMs(t *testing.T) {
	d := startDaemon(t, withFlags("--max-vms", "2"))
	c := d.client(t)
	ctx := ctxFor(t)
	for _, id := range []string{"full-a", "full-b"} {
		if _, err := c.Register(ctx, id, d.apiSock(id), nil); err != nil {
			t.Fatalf("Register %s: %v", id, err)
		}
	}
	_, err := c.Register(ctx, "full-c", d.apiSock("full-c"), nil)
	var tooMany *TooManyVMs
	if !errors.As(err, &tooMany) || tooMany.Limit != 2 {
		t.Fatalf("third Register: %v (%T), want TooManyVMs{Limit: 2}", err, err)
	}
	// full-a stopped and holding nothing: its next run is no new record.
	must(t, c.ClearHandles(ctx, "full-a"))
	if vm, err := c.Register(ctx, "full-a", d.apiSock("full-a"), nil); err != nil || vm.State != "starting" {
		t.Fatalf("re-arming full-a at the limit: %+v %v", vm, err)
	}
	must(t, c.ClearHandles(ctx, "full-b"))
	must(t, c.Unregister(ctx, "full-b"))
	if _, err := c.Register(ctx, "full-c", d.apiSock("full-c"), nil); err != nil {
		t.Fatalf("Register full-c after full-b left: %v", err)
	}
}
