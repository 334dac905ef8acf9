package banger

import (
	"context"
	"fmt"

	"banger.local/client/internal/iobangerhandles"
	"github.com/varlink/go/varlink"
)

// Watcher is a Watch stream. Events is closed when the context ends, when
// bangerd ends the stream, or when the connection is lost; Err then says
// which (nil when bangerd ended it).
type Watcher struct {
	Events <-chan Event
	err    error
}

// Err is why Events was closed; call it only after Events is closed.
func (w *Watcher) Err() error { return w.err }

// Watch subscribes to bangerd's events (registered, handles_set, exited,
// torn_down, ...) on a connection of its own. It returns once bangerd has
// confirmed the subscription: no later event can pass the caller by.
// Cancel ctx to end it; an unread event holds the stream back, never drops.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	conn, err := dialConn(ctx, c.path)
	if err != nil {
		return nil, err
	}
	// The generated receiver reads with the context given to Send: ctx ends the
	// stream (the connection's watcher ends a read that waits for an event).
	receive, err := iobangerhandles.Watch().Send(ctx, conn, varlink.More)
	var first Event
	if err == nil {
		first, _, err = receive(ctx)
	}
	if err == nil && first.Kind != "subscribed" {
		err = fmt.Errorf("banger: Watch began with %q, not subscribed", first.Kind)
	}
	if err != nil {
		conn.Close()
		if isTransport(err) {
			err = transportError(ctx, err)
		}
		return nil, err
	}
	events := make(chan Event)
	w := &Watcher{Events: events}
	go func() {
		defer close(events)
		defer conn.Close()
		for {
			ev, flags, err := receive(ctx)
			if err != nil {
				w.err = transportError(ctx, err)
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				w.err = ctx.Err()
				return
			}
			if flags&varlink.Continues == 0 {
				return
			}
		}
	}()
	return w, nil
}
