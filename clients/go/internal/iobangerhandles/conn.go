package iobangerhandles

import (
	"context"

	"github.com/varlink/go/varlink"
)

// Conn is what the generated calls need of a connection: the Send and
// Upgrade of varlink.Connection, which satisfies it. go.sh makes the
// generated methods take a Conn instead of a *varlink.Connection, so the
// client can run them over its own synchronous transport (varlink-go's
// runs every read and write on a goroutine of its own).
type Conn interface {
	Send(ctx context.Context, method string, parameters interface{}, flags uint64) (func(context.Context, interface{}) (uint64, error), error)
	Upgrade(ctx context.Context, method string, parameters interface{}) (func(context.Context, interface{}) (uint64, varlink.ReadWriterContext, error), error)
}

var _ Conn = (*varlink.Connection)(nil)
