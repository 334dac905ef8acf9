package banger

// The real pair for the client's tests, started as tests/integration/
// bangertest.py starts it: bangerd as root dropping to the test user, with
// its helper, on a throw-away state dir; stub firecrackers that listen on
// their api sockets; real taps (ip tuntap) and loops (losetup). Every wait
// is for an event and has a bound.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const readyLine = "ready: running as" // bangerd's line once it serves (daemon/main.c)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run through meson (meson test -C build --suite go)", name)
	}
	return v
}

type daemon struct {
	t                                        *testing.T
	dir, apiRoot, loopRoot, runDir, stateDir string
	socket                                   string
	cmd                                      *exec.Cmd
	mu                                       sync.Mutex
	log                                      bytes.Buffer
	readyCount                               int
	ready                                    chan struct{}
	exited                                   chan struct{}
	helper                                   string   // what bangerd execs as its helper
	env                                      []string // added to bangerd's (and so its helper's) environment
	flags                                    []string // more of bangerd's flags
	exitStatus                               int      // bangerd's exit status at the test's end
}

// daemonOption changes how startDaemon starts bangerd.
type daemonOption func(*daemon)

// withHelper: bangerd execs helper instead of banger-privhelper (the relaying
// proxy: tests/stub/helper_proxy.c), with env added to its environment.
func withHelper(helper string, env ...string) daemonOption {
	return func(d *daemon) { d.helper, d.env = helper, env }
}

// withFlags: bangerd runs with these flags too.
func withFlags(flags ...string) daemonOption {
	return func(d *daemon) { d.flags = append(d.flags, flags...) }
}

// losingHelper: the test makes bangerd lose its helper; bangerd must have
// exited by itself, with EXIT_HELPER (3, daemon/main.c), by the test's end
// (a test that failed before then has it stopped as usual).
func losingHelper(d *daemon) { d.exitStatus = 3 }

// startDaemon starts bangerd on a fresh root; it is stopped (SIGTERM, exit 0)
// at the test's end unless an option says otherwise.
func startDaemon(t *testing.T, opts ...daemonOption) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the Go client's tests start bangerd with --user: they run as root")
	}
	dir, err := os.MkdirTemp("", "banger-go-test-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, apiRoot: filepath.Join(dir, "vms"),
		loopRoot: filepath.Join(dir, "images"), runDir: filepath.Join(dir, "run"),
		stateDir: filepath.Join(dir, "state")}
	d.socket = filepath.Join(d.runDir, "bangerd.sock")
	d.helper = env(t, "BANGER_HELPER")
	for _, o := range opts {
		o(d)
	}
	must(t, os.Chmod(dir, 0o755))
	for _, p := range []string{d.apiRoot, d.loopRoot, d.runDir} {
		must(t, os.MkdirAll(p, 0o755))
	}
	u, err := user.Lookup(testUser())
	if err != nil {
		t.Fatalf("test user %s: %v", testUser(), err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	must(t, os.Chown(d.runDir, uid, gid)) // bangerd binds its socket after dropping to it
	d.start()
	t.Cleanup(func() {
		d.stop()
		os.RemoveAll(dir)
	})
	return d
}

func testUser() string {
	if u := os.Getenv("BANGER_TEST_USER"); u != "" {
		return u
	}
	return "nobody"
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (d *daemon) start() {
	t := d.t
	t.Helper()
	d.cmd = exec.Command(env(t, "BANGERD"), "--state-dir", d.stateDir,
		"--helper", d.helper, "--listen", d.socket,
		"--tap-prefix", "bgt", "--dm-prefix", "bangertest-", "--dm-uuid-prefix", "BANGERT-",
		"--loop-root", d.loopRoot, "--api-sock-root", d.apiRoot, "--user", testUser())
	d.cmd.Args = append(d.cmd.Args, d.flags...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := d.cmd.StderrPipe()
	must(t, err)
	must(t, d.cmd.Start())
	d.ready, d.exited = make(chan struct{}), make(chan struct{})
	ready, exited := d.ready, d.exited
	go func() {
		// Drain all the time: a full pipe would block bangerd's next log line.
		r := bufio.NewReader(stderr)
		for {
			line, err := r.ReadString('\n')
			d.mu.Lock()
			d.log.WriteString(line)
			if strings.Contains(line, readyLine) {
				d.readyCount++
				close(ready)
			}
			d.mu.Unlock()
			if err != nil {
				d.cmd.Wait()
				close(exited)
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("bangerd exited before it was ready:\n%s", d.logText())
	case <-time.After(10 * time.Second):
		t.Fatalf("bangerd not ready within 10 s:\n%s", d.logText())
	}
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

func (d *daemon) waitExit() {
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Fatalf("bangerd did not exit within 10 s:\n%s", d.logText())
	}
	if log := d.logText(); strings.Contains(log, "runtime error:") || strings.Contains(log, "AddressSanitizer") {
		d.t.Fatalf("bangerd's log holds a sanitizer report:\n%s", log)
	}
}

// kill ends bangerd as a crash would (SIGKILL): its helper follows (EOF).
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	d.waitExit()
}

// restart kills bangerd and starts a new one on the same root, as systemd would.
func (d *daemon) restart() {
	d.kill()
	d.start()
}

func (d *daemon) stop() {
	if d.exitStatus != 0 && !d.t.Failed() {
		d.waitExit()
		if code := d.cmd.ProcessState.ExitCode(); code != d.exitStatus {
			d.t.Errorf("bangerd exited %d, want %d:\n%s", code, d.exitStatus, d.logText())
		}
		return
	}
	select {
	case <-d.exited:
		return // the test ended it
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitExit()
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Errorf("bangerd exited %d on SIGTERM:\n%s", code, d.logText())
	}
}

// helperPid is bangerd's one child: its helper (or the proxy standing in for it).
func (d *daemon) helperPid() int {
	pids := childrenOf(d.t, d.cmd.Process.Pid)
	if len(pids) != 1 {
		d.t.Fatalf("bangerd has children %v, want its helper alone", pids)
	}
	return pids[0]
}

func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	must(t, err)
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		p, err := strconv.Atoi(f)
		must(t, err)
		pids = append(pids, p)
	}
	return pids
}

// waitPidGone waits (bounded, through a pidfd) for pid to exit.
func waitPidGone(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	must(t, err)
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for end := time.Now().Add(timeout); ; {
		left := time.Until(end)
		if left <= 0 {
			t.Fatalf("pid %d still there after %v", pid, timeout)
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if n == 1 {
			return
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
	}
}

func (d *daemon) apiSock(id string) string { return filepath.Join(d.apiRoot, id, "api.sock") }

func (d *daemon) client(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.socket)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// runningVM registers id (no plan) and sets its handles to a stub firecracker
// that listens: a VM bangerd sees running. The stub is returned.
func (d *daemon) runningVM(t *testing.T, c *Client, id string) *stub {
	t.Helper()
	ctx := ctxFor(t)
	_, err := c.Register(ctx, id, d.apiSock(id), nil)
	must(t, err)
	fc := startStub(t, d.apiSock(id), true)
	_, _, err = c.SetHandlesProcess(ctx, id, fc.cmd.Process, Resources{})
	must(t, err)
	return fc
}

// stub is a stub firecracker listening on apiSock (waited for unless extra delays it).
type stub struct {
	cmd *exec.Cmd
}

func startStub(t *testing.T, apiSock string, wait bool, extra ...string) *stub {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(apiSock), 0o755))
	r, w, err := os.Pipe()
	must(t, err)
	defer r.Close()
	cmd := exec.Command(env(t, "BANGER_STUB_FIRECRACKER"), append([]string{"--api-sock", apiSock}, extra...)...)
	cmd.Env = append(os.Environ(), "STUB_READY_FD=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	w.Close()
	s := &stub{cmd: cmd}
	t.Cleanup(s.kill)
	if wait {
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(r).ReadString('\n')
		if line != "ready\n" {
			t.Fatalf("stub firecracker not ready: %q %v", line, err)
		}
	}
	return s
}

func (s *stub) kill() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// makeTap creates a real tap device, removed at the test's end if it is still there.
func makeTap(t *testing.T, name string) string {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("no /dev/net/tun: %v", err)
	}
	run(t, "ip", "tuntap", "add", "dev", name, "mode", "tap")
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	return name
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// makeLoop attaches a real loop device to a new 1 MiB file; detached at the test's end.
func makeLoop(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Create(file)
	must(t, err)
	must(t, f.Truncate(1<<20))
	f.Close()
	t.Cleanup(func() {
		for _, dev := range loopsOn(t, file) {
			exec.Command("losetup", "-d", dev).Run()
		}
	})
	return run(t, "losetup", "-f", "--show", file)
}

func loopsOn(t *testing.T, file string) []string {
	out, err := exec.Command("losetup", "-j", file, "-O", "NAME", "-n").Output()
	if err != nil {
		t.Fatalf("losetup -j %s: %v", file, err)
	}
	return strings.Fields(string(out))
}

// tag makes names unique to this process (tests of several runs share the kernel).
// sysfsInt reads a number the kernel keeps in sysfs (an ifindex, a diskseq).
func sysfsInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	must(t, err)
	return n
}

func tag(s string) string { return fmt.Sprintf("%s%d", s, os.Getpid()%10000) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitEventsClosed waits, 5 s at most in all, for w.Events to be closed,
// reading whatever events are still in it.
func waitEventsClosed(t *testing.T, w *Watcher, after string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-w.Events:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("Events not closed 5 s after %s", after)
		}
	}
}

// nextEvent waits for the next event of kind for id on w.
func nextEvent(t *testing.T, w *Watcher, id, kind string) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				t.Fatalf("watch ended waiting for %s of %s: %v", kind, id, w.Err())
			}
			if ev.Kind == kind && ev.Id != nil && *ev.Id == id {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event for %s within 10 s", kind, id)
		}
	}
}
