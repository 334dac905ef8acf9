// fcmanager-example is a VM manager in miniature that hands its handles to
// bangerd instead of keeping them: per run it Registers the plan (before
// anything exists), creates a tap and a loop device, starts firecracker,
// SetHandles (with the process's pidfd), stops the VM and watches bangerd
// tear it down. It runs the VM several times under one id: the record that
// bangerd freed after a run takes the next run's plan.
//
// It needs root (ip tuntap, losetup) and a bangerd whose policy admits its
// names; the defaults are those of `./dev run`. Any firecracker will do;
// tests/stub/firecracker (build/tests/firecracker) only listens on its api
// socket, which is all bangerd checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	banger "banger.local/client"
)

type options struct {
	socket, id, apiSock, tap, image, firecracker string
	runs                                         int
	runFor, timeout                              time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.socket, "socket", "/var/lib/banger-dev/run/bangerd.sock", "bangerd's control socket")
	flag.StringVar(&o.id, "id", "demo", "the VM's id, the same for every run")
	flag.StringVar(&o.apiSock, "api-sock", "/var/lib/banger-dev/vms/demo/api.sock", "firecracker's api socket (under an api-sock root)")
	flag.StringVar(&o.tap, "tap", "bgr-demo", "the tap to create (bangerd's tap prefix)")
	flag.StringVar(&o.image, "image", "/var/lib/banger-dev/images/demo.img", "the loop device's backing file (under a loop root)")
	flag.StringVar(&o.firecracker, "firecracker", "firecracker", "the firecracker binary")
	flag.IntVar(&o.runs, "runs", 2, "how many runs under the same id")
	flag.DurationVar(&o.runFor, "run-for", 500*time.Millisecond, "how long each VM runs before it is stopped")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "a bound on the whole program")
	flag.Parse()
	if err := manage(o); err != nil {
		fmt.Fprintf(os.Stderr, "fcmanager-example: %v\n", err)
		os.Exit(1)
	}
}

func manage(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c, err := banger.Dial(ctx, o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	// Subscribe first: no exit or teardown of ours can happen before the watch is in place.
	w, err := c.Watch(ctx)
	if err != nil {
		return err
	}
	for run := 1; run <= o.runs; run++ {
		if err := oneRun(ctx, c, w, o, run); err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
	}
	fmt.Printf("vm %s: %d runs under one id; its record stays, stopped and holding nothing\n", o.id, o.runs)
	return nil
}

func oneRun(ctx context.Context, c *banger.Client, w *banger.Watcher, o options, run int) error {
	// 1. Intent first: the plan is on disk before anything exists.
	vm, err := c.Register(ctx, o.id, o.apiSock, &banger.Plan{Tap: o.tap, LoopFiles: []string{o.image}})
	var exists *banger.VMExists
	if errors.As(err, &exists) {
		return fmt.Errorf("%s is %s: %s", exists.Id, exists.State, exists.Reason)
	}
	if err != nil {
		return err
	}
	fmt.Printf("run %d: registered %s (%s), plan tap %s, loop file %s\n", run, vm.Id, vm.State, o.tap, o.image)

	// 2. Create what was planned.
	if err := sh("ip", "tuntap", "add", "dev", o.tap, "mode", "tap"); err != nil {
		return err
	}
	if err := makeImage(o.image); err != nil {
		return err
	}
	loop, err := output("losetup", "-f", "--show", o.image)
	if err != nil {
		return err
	}

	// 3. Start firecracker and hand bangerd its handles (a pidfd names the process).
	if err := os.MkdirAll(filepath.Dir(o.apiSock), 0o755); err != nil {
		return err
	}
	fc := exec.Command(o.firecracker, "--api-sock", o.apiSock)
	if err := fc.Start(); err != nil {
		return err
	}
	vm, persisted, err := c.SetHandlesProcess(ctx, o.id, fc.Process, banger.Resources{Tap: o.tap, Loops: []string{loop}})
	if err != nil {
		fc.Process.Kill()
		fc.Wait()
		return err
	}
	alive, err := c.Alive(ctx, o.id)
	if err != nil {
		return err
	}
	fmt.Printf("run %d: firecracker pid %d is %s (state %s, persisted %v), holding %s and %s\n",
		run, fc.Process.Pid, alive, vm.State, persisted, o.tap, loop)

	// 4. The VM stops; bangerd sees the exit at once and tears down what it held.
	time.Sleep(o.runFor)
	fc.Process.Signal(syscall.SIGTERM)
	fc.Wait()
	for done := false; !done; {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch ended: %v", w.Err())
			}
			if ev.Id == nil || *ev.Id != o.id {
				continue
			}
			detail := ""
			if ev.Detail != nil {
				detail = ": " + *ev.Detail
			}
			fmt.Printf("run %d: event %s%s\n", run, ev.Kind, detail)
			switch ev.Kind {
			case "torn_down":
				done = true
			case "teardown_failed":
				return errors.New("bangerd could not tear the VM down")
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_, tapErr := os.Stat("/sys/class/net/" + o.tap)
	loops, _ := output("losetup", "-j", o.image, "-O", "NAME", "-n")
	fmt.Printf("run %d: tap %s gone: %v; loops on %s: %q\n", run, o.tap, errors.Is(tapErr, os.ErrNotExist), o.image, loops)
	return nil
}

func makeImage(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(1 << 20)
}

func sh(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}
