package banger

// The client's Varlink transport: the generated calls run over it (their
// Conn), synchronously on the caller's goroutine. varlink-go's own
// connection runs every read and write on a new goroutine with channels and
// deadline calls (its internal/ctxio), which cost an IsAlive tens of µs;
// here a call is one write of the JSON and its NUL, then reads until the
// reply's NUL. A context is honoured without a goroutine per I/O: its
// deadline is the socket's (set only when it changes), and a context that
// can be cancelled is watched by one goroutine per connection, which sets a
// deadline in the past when it ends. context.Background() costs none.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"
)

// maxReplyBytes bounds one reply: far over any of bangerd's (its own bound
// on the replies it holds for all clients is 16 MiB by default), so that a
// peer that never sends the NUL cannot make the client buffer without end.
const maxReplyBytes = 64 << 20

// errReplyTooLarge: the connection is out of step (a transport error).
var errReplyTooLarge = errors.New("banger: reply over the size limit")

// aLongTimeAgo, as a deadline, ends the socket's pending and future I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one connection to bangerd; one call at a time uses it.
type conn struct {
	uc       *net.UnixConn
	r        *bufio.Reader
	w        bytes.Buffer
	enc      *json.Encoder
	deadline time.Time // the socket's deadline, as last set here

	// The watcher: a goroutine started at the first call with a context that
	// can be cancelled; watching receives the Done channel of each call whose
	// channel differs from the last (nil: watch nothing).
	watched  <-chan struct{}
	watching chan (<-chan struct{})
	quit     chan struct{}
	expired  atomic.Bool // the watcher set a deadline in the past
}

func dialConn(ctx context.Context, path string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("banger: cannot reach bangerd at %s: %w", path, transportError(ctx, err))
	}
	c := &conn{uc: nc.(*net.UnixConn)}
	c.r = bufio.NewReader(c.uc)
	c.enc = json.NewEncoder(&c.w)
	return c, nil
}

func (c *conn) Close() error {
	if c.quit != nil {
		close(c.quit)
	}
	return c.uc.Close()
}

// bind makes ctx govern the socket's I/O from now on. The watcher is handed
// the new Done channel before the deadline is set, and ctx is tested after:
// a cancellation that lands anywhere in between is then either seen here or
// has its deadline in the past stay. A deadline the watcher left in the past
// for an earlier context is replaced.
func (c *conn) bind(ctx context.Context) error {
	if done := ctx.Done(); done != c.watched {
		if c.watching == nil {
			c.watching = make(chan (<-chan struct{}))
			c.quit = make(chan struct{})
			go c.watch()
		}
		c.watching <- done
		c.watched = done
	}
	dl, _ := ctx.Deadline()
	if c.expired.Swap(false) || !dl.Equal(c.deadline) {
		if err := c.uc.SetDeadline(dl); err != nil {
			return err
		}
		c.deadline = dl
	}
	return ctx.Err()
}

func (c *conn) watch() {
	var done <-chan struct{}
	for {
		select {
		case done = <-c.watching:
		case <-done:
			c.uc.SetDeadline(aLongTimeAgo)
			c.expired.Store(true)
			done = nil
		case <-c.quit:
			return
		}
	}
}

// Send writes one call; the generated bindings call it.
func (c *conn) Send(ctx context.Context, method string, parameters interface{}, flags uint64) (func(context.Context, interface{}) (uint64, error), error) {
	return c.send(ctx, method, parameters, flags, -1)
}

// Upgrade is not a method of io.banger.Handles (bangerd refuses it).
func (c *conn) Upgrade(context.Context, string, interface{}) (func(context.Context, interface{}) (uint64, varlink.ReadWriterContext, error), error) {
	return nil, errors.New("banger: connection upgrades are not supported")
}

// withFd is a conn whose next call carries fd (SCM_RIGHTS on its first byte).
type withFd struct {
	*conn
	fd int
}

func (w withFd) Send(ctx context.Context, method string, parameters interface{}, flags uint64) (func(context.Context, interface{}) (uint64, error), error) {
	return w.send(ctx, method, parameters, flags, w.fd)
}

// send frames the call as Varlink does (one JSON object and a NUL) and
// returns the receiver of its replies.
func (c *conn) send(ctx context.Context, method string, parameters interface{}, flags uint64, fd int) (func(context.Context, interface{}) (uint64, error), error) {
	if err := c.bind(ctx); err != nil {
		return nil, err
	}
	c.w.Reset()
	err := c.enc.Encode(struct {
		Method     string      `json:"method"`
		Parameters interface{} `json:"parameters,omitempty"`
		More       bool        `json:"more,omitempty"`
	}{method, parameters, flags&varlink.More != 0})
	if err != nil {
		return nil, err
	}
	msg := c.w.Bytes()
	msg[len(msg)-1] = 0 // Encode ends the object with a newline
	if fd < 0 {
		_, err = c.uc.Write(msg)
	} else {
		var n int
		n, _, err = c.uc.WriteMsgUnix(msg, unix.UnixRights(fd), nil)
		if err == nil && n < len(msg) {
			_, err = c.uc.Write(msg[n:])
		}
	}
	if err != nil {
		return nil, eofIsUnexpected(err)
	}
	return c.receive, nil
}

// receive reads one reply into out. An error reply becomes a *varlink.Error
// (or varlink-go's own org.varlink.service errors) exactly as varlink-go
// returns it, so the generated Dispatch_Error types it.
func (c *conn) receive(ctx context.Context, out interface{}) (uint64, error) {
	if err := c.bind(ctx); err != nil {
		return 0, err
	}
	frame, err := c.readFrame()
	if err != nil {
		return 0, err
	}
	var r struct {
		Parameters *json.RawMessage `json:"parameters"`
		Continues  bool             `json:"continues"`
		Error      string           `json:"error"`
	}
	if err := json.Unmarshal(frame, &r); err != nil {
		return 0, err
	}
	if r.Error != "" {
		e := &varlink.Error{Name: r.Error, Parameters: r.Parameters}
		return 0, e.DispatchError()
	}
	// The calls that return nothing receive into nil.
	if r.Parameters != nil && out != nil {
		if err := json.Unmarshal(*r.Parameters, out); err != nil {
			return 0, fmt.Errorf("banger: malformed reply parameters: %w", err)
		}
	}
	if r.Continues {
		return varlink.Continues, nil
	}
	return 0, nil
}

// readFrame returns the next message without its NUL; it is valid until the
// next read.
func (c *conn) readFrame() ([]byte, error) {
	frame, err := c.r.ReadSlice(0)
	if err == nil {
		return frame[:len(frame)-1], nil
	}
	var long []byte
	for err == bufio.ErrBufferFull {
		long = append(long, frame...)
		if len(long) > maxReplyBytes {
			return nil, errReplyTooLarge
		}
		frame, err = c.r.ReadSlice(0)
	}
	if err != nil {
		return nil, eofIsUnexpected(err)
	}
	long = append(long, frame...)
	return long[:len(long)-1], nil
}

// eofIsUnexpected: an EOF mid-call is a lost connection, as varlink-go says it.
func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
