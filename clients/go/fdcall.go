package banger

// SetHandles with the firecracker's pidfd. bangerd takes an fd only with
// SetHandles, only from an admin, and only a pidfd (SCM_RIGHTS, as
// sd-varlink passes them): the transport sends it on the first byte of the
// call (withFd), on the Client's connection like every other call.

import (
	"context"
	"fmt"
	"os"

	"banger.local/client/internal/iobangerhandles"
	"golang.org/x/sys/unix"
)

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
func (c *Client) SetHandlesPidfd(ctx context.Context, id string, pid, pidfd int, res Resources) (vm VM, persisted bool, err error) {
	err = c.call(ctx, false, func(t *conn) (err error) {
		vm, persisted, err = iobangerhandles.SetHandles().Call(ctx, withFd{t, pidfd}, id, int64(pid),
			optional(res.Tap), optionalList(res.Loops), optionalList(res.DM))
		return err
	})
	return vm, persisted, err
}
