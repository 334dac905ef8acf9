package banger

// SetHandles with the firecracker's pidfd. bangerd takes an fd only with
// SetHandles, only from an admin, and only a pidfd (SCM_RIGHTS, as
// sd-varlink passes them); varlink-go 0.4 writes through a net.Conn it does
// not expose, so this one call goes over a connection of its own, framed
// here as Varlink frames it: one JSON object and a NUL, the fd riding on
// the first byte. The reply is decoded into the generated types and its
// errors through the generated dispatch, as every other call's are.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"banger.local/client/internal/iobangerhandles"
	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"
)

// A SetHandles reply is one VM record: far under this.
const maxReplyBytes = 1 << 20

// SetHandles confirms the live handles of VM id: pid is its firecracker.
// The client opens a pidfd on pid and passes it along, so the helper
// verifies exactly that process (it must listen on the VM's api socket).
// For a child of this process that it has not waited for, the pid cannot be
// recycled before pidfd_open: that is the race-free case. persisted is false
// when bangerd could not write handles.json yet (it keeps retrying).
func (c *Client) SetHandles(ctx context.Context, id string, pid int, res Resources) (vm VM, persisted bool, err error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return VM{}, false, fmt.Errorf("banger: pidfd_open(%d): %w", pid, err)
	}
	defer unix.Close(pidfd)
	return c.SetHandlesPidfd(ctx, id, pid, pidfd, res)
}

// SetHandlesProcess is SetHandles for a process this program started.
func (c *Client) SetHandlesProcess(ctx context.Context, id string, p *os.Process, res Resources) (VM, bool, error) {
	return c.SetHandles(ctx, id, p.Pid, res)
}

// SetHandlesPidfd is SetHandles with a pidfd the caller holds (and keeps: it
// is sent, not closed).
func (c *Client) SetHandlesPidfd(ctx context.Context, id string, pid, pidfd int, res Resources) (VM, bool, error) {
	in := struct {
		ID    string    `json:"id"`
		Pid   int64     `json:"pid"`
		Tap   *string   `json:"tap,omitempty"`
		Loops *[]string `json:"loops,omitempty"`
		DM    *[]string `json:"dm,omitempty"`
	}{id, int64(pid), optional(res.Tap), optionalList(res.Loops), optionalList(res.DM)}
	var out struct {
		VM        VM   `json:"vm"`
		Persisted bool `json:"persisted"`
	}
	if c.closed.Load() {
		return VM{}, false, ErrClosed
	}
	err := callWithFd(ctx, c.path, "io.banger.Handles.SetHandles", in, &out, pidfd)
	return out.VM, out.Persisted, err
}

// callWithFd makes one call on a fresh connection, passing fd with it.
func callWithFd(ctx context.Context, path, method string, in, out interface{}, fd int) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("banger: cannot reach bangerd at %s: %w", path, transportError(ctx, err))
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()
	// The context's deadline is the socket's; its cancellation wakes the call at once.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			conn.SetDeadline(time.Unix(1, 0))
		case <-finished:
		}
	}()

	msg, err := json.Marshal(struct {
		Method     string      `json:"method"`
		Parameters interface{} `json:"parameters"`
	}{method, in})
	if err != nil {
		return err
	}
	msg = append(msg, 0)
	n, _, err := conn.WriteMsgUnix(msg, unix.UnixRights(fd), nil)
	if err == nil && n < len(msg) {
		_, err = conn.Write(msg[n:])
	}
	if err != nil {
		return transportError(ctx, err)
	}
	reply, err := bufio.NewReader(io.LimitReader(conn, maxReplyBytes)).ReadBytes(0)
	if err != nil {
		return transportError(ctx, err)
	}
	var r struct {
		Parameters *json.RawMessage `json:"parameters"`
		Error      string           `json:"error"`
	}
	if err := json.Unmarshal(reply[:len(reply)-1], &r); err != nil {
		return fmt.Errorf("banger: %s: malformed reply: %w", method, err)
	}
	if r.Error != "" {
		e := &varlink.Error{Name: r.Error, Parameters: r.Parameters}
		return iobangerhandles.Dispatch_Error(e.DispatchError())
	}
	if r.Parameters == nil {
		return fmt.Errorf("banger: %s: reply without parameters", method)
	}
	return json.Unmarshal(*r.Parameters, out)
}
