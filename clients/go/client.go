// Package banger is the Go client of bangerd, the tracker of Firecracker
// microVM host resources: what a VM manager calls instead of keeping handles
// itself (the seed's setVMHandles, clearVMHandles, vmAlive and
// rediscoverHandles become SetHandles, ClearHandles, Alive and Reconcile).
//
// The wire types and errors are generated at build time from
// proto/io.banger.Handles.varlink by Debian's varlink-go-interface-generator
// (internal/iobangerhandles); this file is the small layer over them: one
// connection per Client, dialled again after bangerd restarts, context
// deadlines honoured, errors typed. The calls run over the client's own
// synchronous transport (transport.go), not varlink-go's connection; it also
// passes SetHandles' pidfd (SCM_RIGHTS), which varlink-go cannot.
//
// A manager's run of a VM:
//
//	c, _ := banger.Dial(ctx, "/run/banger/bangerd.sock")
//	c.Register(ctx, "vm1", apiSock, &banger.Plan{Tap: "tap-vm1", LoopFiles: []string{img}})
//	// create the tap and the loops, start firecracker (cmd)
//	c.SetHandlesProcess(ctx, "vm1", cmd.Process, banger.Resources{Tap: "tap-vm1", Loops: loops})
//	// bangerd watches the process; on its exit it tears the VM down (on_exit teardown)
//	// and the record is ready for the next Register under the same id.
package banger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"banger.local/client/internal/iobangerhandles"
)

// The replies of io.banger.Handles, as generated from the IDL.
type (
	VM             = iobangerhandles.VM
	Handles        = iobangerhandles.Handles
	Event          = iobangerhandles.Event
	TeardownResult = iobangerhandles.TeardownResult
	ReconcileEntry = iobangerhandles.ReconcileEntry
	Orphan         = iobangerhandles.Orphan
	Counts         = iobangerhandles.Counts
	Counters       = iobangerhandles.Counters
	MethodCounters = iobangerhandles.MethodCounters
)

// Liveness is IsAlive's answer. Unknown is never dead: nothing is torn down on it.
type Liveness string

const (
	Alive   Liveness = "alive"
	Dead    Liveness = "dead"
	Unknown Liveness = "unknown"
)

// OnExit says what bangerd does when the VM's firecracker exits.
type OnExit string

const (
	TeardownOnExit OnExit = "teardown" // tear its resources down (bangerd's default)
	KeepOnExit     OnExit = "keep"     // mark it stopped; the manager calls Teardown
)

// Plan is what a manager is about to create for a run, before it creates it.
// LoopFiles are the backing files of loop devices whose /dev/loopN is not known yet.
type Plan struct {
	Tap       string
	LoopFiles []string
	DM        []string
}

// Resources are the live handles of a running VM: its tap, /dev/loopN devices, DM names.
type Resources struct {
	Tap   string
	Loops []string
	DM    []string
}

// Status is GetStatus's answer.
type Status struct {
	Version          string
	UptimeUsec       int64
	Counts           Counts
	HelperPid        int64
	HelperPrivileged bool
	HelperState      string // ok, stuck or gone
	HelperProblem    string // why, when HelperState is not ok
	Counters         Counters
	Methods          []MethodCounters // calls and errors per io.banger.Handles method
}

// Client is one connection to bangerd. Its methods may be called from
// several goroutines; they take turns on the connection (use one Client per
// goroutine for parallel calls). After bangerd restarts, the next call dials
// it again: a call whose request could not be sent is sent on the new
// connection; one whose reply was lost returns ErrConnectionLost, except
// for reads, which are asked again.
type Client struct {
	path   string
	closed atomic.Bool
	turn   chan struct{} // holds a token while a call uses conn
	conn   *conn
}

// Dial connects to bangerd's control socket.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	c := &Client{path: socketPath, turn: make(chan struct{}, 1)}
	t, err := dialConn(ctx, c.path)
	if err != nil {
		return nil, err
	}
	c.conn = t
	return c, nil
}

// Close closes the connection; a later call returns ErrClosed.
func (c *Client) Close() error {
	c.turn <- struct{}{}
	defer func() { <-c.turn }()
	if c.closed.Swap(true) {
		return ErrClosed
	}
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// callFor is call for a method with one result: fn's result from the call
// that answered.
func callFor[T any](c *Client, ctx context.Context, read bool, fn func(*conn) (T, error)) (T, error) {
	var result T
	err := c.call(ctx, read, func(t *conn) (err error) {
		result, err = fn(t)
		return err
	})
	return result, err
}

// call runs fn on the connection, dialling first when there is none. A
// failure other than bangerd's error reply drops the connection (a reply
// may still be on its way, and would answer the next call).
func (c *Client) call(ctx context.Context, read bool, fn func(*conn) error) error {
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.turn }()
	for attempt := 0; ; attempt++ {
		if c.closed.Load() {
			return ErrClosed
		}
		// An ended context sends nothing, and leaves the connection as it was.
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.conn == nil {
			t, err := dialConn(ctx, c.path)
			if err != nil {
				return err
			}
			c.conn = t
		}
		err := fn(c.conn)
		if err == nil || !isTransport(err) {
			return err
		}
		c.conn.Close()
		c.conn = nil
		err = transportError(ctx, err)
		if ctx.Err() != nil || attempt > 0 {
			return err
		}
		// EPIPE: the peer was gone before the request was written (bangerd restarted
		// while this connection idled), so nothing was done: send it again.
		if errors.Is(err, syscall.EPIPE) || (read && errors.Is(err, ErrConnectionLost)) {
			continue
		}
		return err
	}
}

// isTransport: err is the connection's, not an error reply of bangerd's.
func isTransport(err error) bool {
	var netErr net.Error
	var errno syscall.Errno
	var syntax *json.SyntaxError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &netErr) || errors.As(err, &errno) || errors.As(err, &syntax) ||
		errors.Is(err, errReplyTooLarge)
}

// transportError says what a connection failure means to the caller: the
// context's own error when it ended the call, ErrConnectionLost when bangerd
// hung up mid-call, the cause otherwise.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The socket's deadline is the context's: it fired a moment before ctx.Done.
		if _, ok := ctx.Deadline(); ok {
			return context.DeadlineExceeded
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	return err
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func optionalList(l []string) *[]string {
	if l == nil {
		return nil
	}
	return &l
}

// RegisterOption changes a Register call.
type RegisterOption func(onExit **string)

// WithOnExit sets what bangerd does when the VM's firecracker exits.
func WithOnExit(o OnExit) RegisterOption {
	return func(onExit **string) { *onExit = optional(string(o)) }
}

// Register declares a run of VM id before any of its resources exist: the
// record is on disk (fsynced) when it returns, in state starting. A VM that
// is stopped and holds nothing takes its next run this way; a starting,
// running, or stopped one with leftovers returns *VMExists, whose State and
// Reason say what to call first (Teardown).
func (c *Client) Register(ctx context.Context, id, apiSock string, plan *Plan, opts ...RegisterOption) (VM, error) {
	var planned *iobangerhandles.Planned
	if plan != nil {
		planned = &iobangerhandles.Planned{Tap: optional(plan.Tap),
			Loop_files: optionalList(plan.LoopFiles), Dm: optionalList(plan.DM)}
	}
	var onExit *string
	for _, o := range opts {
		o(&onExit)
	}
	return callFor(c, ctx, false, func(t *conn) (VM, error) {
		return iobangerhandles.Register().Call(ctx, t, id, apiSock, planned, onExit)
	})
}

// GetHandles returns the live handles of VM id (*NoHandles when it has none).
func (c *Client) GetHandles(ctx context.Context, id string) (Handles, error) {
	return callFor(c, ctx, true, func(t *conn) (Handles, error) {
		return iobangerhandles.GetHandles().Call(ctx, t, id)
	})
}

// Alive asks whether VM id's firecracker lives; bangerd answers from its
// cache, which a pidfd keeps true. Unknown means it could not be verified.
func (c *Client) Alive(ctx context.Context, id string) (Liveness, error) {
	alive, err := callFor(c, ctx, true, func(t *conn) (string, error) {
		return iobangerhandles.IsAlive().Call(ctx, t, id)
	})
	return Liveness(alive), err
}

// ClearHandles forgets the handles of a VM that stopped: the record is
// marked stopped and still names what it held, for Teardown.
func (c *Client) ClearHandles(ctx context.Context, id string) error {
	return c.call(ctx, false, func(t *conn) error {
		return iobangerhandles.ClearHandles().Call(ctx, t, id)
	})
}

// Teardown removes what a VM that is not running holds, DM -> loops -> tap
// (*StillRunning while it lives or its liveness is unknown).
func (c *Client) Teardown(ctx context.Context, id string) ([]TeardownResult, error) {
	return callFor(c, ctx, false, func(t *conn) ([]TeardownResult, error) {
		return iobangerhandles.Teardown().Call(ctx, t, id)
	})
}

// Unregister forgets VM id for good (*StillRunning while it lives).
func (c *Client) Unregister(ctx context.Context, id string) error {
	return c.call(ctx, false, func(t *conn) error {
		return iobangerhandles.Unregister().Call(ctx, t, id)
	})
}

// List returns every VM record.
func (c *Client) List(ctx context.Context) ([]VM, error) {
	return callFor(c, ctx, true, func(t *conn) ([]VM, error) {
		return iobangerhandles.List().Call(ctx, t)
	})
}

// Reconcile has bangerd check every record against the running processes
// (one scan of /proc) and tear down what dead VMs left behind: the seed's
// rediscoverHandles, for all VMs at once. It returns the per-VM report and
// the firecrackers no record owns (never killed).
func (c *Client) Reconcile(ctx context.Context) ([]ReconcileEntry, []Orphan, error) {
	var entries []ReconcileEntry
	var orphans []Orphan
	err := c.call(ctx, false, func(t *conn) (err error) {
		entries, orphans, err = iobangerhandles.Reconcile().Call(ctx, t)
		return err
	})
	return entries, orphans, err
}

// Rediscover is Reconcile under the seed's name: the entry for id, if any.
func (c *Client) Rediscover(ctx context.Context, id string) (*ReconcileEntry, error) {
	entries, _, err := c.Reconcile(ctx)
	for i := range entries {
		if entries[i].Id == id {
			return &entries[i], err
		}
	}
	return nil, err
}

// Status returns bangerd's version, uptime, counts, helper state and counters.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	var problem *string
	var methods *[]MethodCounters
	err := c.call(ctx, true, func(t *conn) (err error) {
		s.Version, s.UptimeUsec, s.Counts, s.HelperPid, s.HelperPrivileged, s.HelperState,
			problem, s.Counters, methods, err = iobangerhandles.GetStatus().Call(ctx, t)
		return err
	})
	if problem != nil {
		s.HelperProblem = *problem
	}
	if methods != nil {
		s.Methods = *methods
	}
	return s, err
}
