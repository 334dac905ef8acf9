package banger

import (
	"errors"

	"banger.local/client/internal/iobangerhandles"
)

// The errors of io.banger.Handles, as the generated bindings decode them.
// Every method returns them as pointers, so a caller tests with errors.As:
//
//	var exists *banger.VMExists
//	if errors.As(err, &exists) { ... exists.State, exists.Reason ... }
type (
	NoSuchVM          = iobangerhandles.NoSuchVM
	VMExists          = iobangerhandles.VMExists
	InvalidID         = iobangerhandles.InvalidID
	InvalidParameter  = iobangerhandles.InvalidParameter
	NotFirecracker    = iobangerhandles.NotFirecracker
	NoHandles         = iobangerhandles.NoHandles
	StillRunning      = iobangerhandles.StillRunning
	PolicyRefused     = iobangerhandles.PolicyRefused
	HelperUnavailable = iobangerhandles.HelperUnavailable
	PermissionDenied  = iobangerhandles.PermissionDenied
	StorageFailed     = iobangerhandles.StorageFailed
	CorruptState      = iobangerhandles.CorruptState
	TooManyVMs        = iobangerhandles.TooManyVMs
	OutOfMemory       = iobangerhandles.OutOfMemory
)

// ErrConnectionLost: bangerd went away (a restart, a crash) after the call
// was sent and before its reply came. Whether a mutating call took effect is
// not known; ask (List, GetHandles) before repeating it. The client dials
// bangerd again on the next call.
var ErrConnectionLost = errors.New("banger: connection to bangerd lost before the reply")

// ErrClosed: the Client was closed.
var ErrClosed = errors.New("banger: client closed")
