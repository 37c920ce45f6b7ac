package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrNoDaemon wraps the error of a connection nothing answered: no daemon
// runs with this control socket (or the caller may not reach it).
var ErrNoDaemon = errors.New("no daemon")

// maxLine bounds one answer line read by the client.
const maxLine = 1 << 20

// Client asks a daemon over its control socket.
type Client struct {
	Path    string
	Timeout time.Duration // whole exchange; DefaultTimeout if 0
}

// do sends command and calls line with each line after an ok header.
func (c *Client) do(ctx context.Context, command string, line func([]byte) error) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return dialError(c.Path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req, _ := json.Marshal(Request{Version: Version, Command: command})
	_, werr := conn.Write(append(req, '\n'))
	// A server that refuses at once (busy) may have answered and closed
	// before the request went out: its answer says more than the
	// write's broken pipe.
	r := bufio.NewReaderSize(conn, 64<<10)
	first, err := readLine(r, maxLine)
	if err != nil {
		if werr != nil {
			return fmt.Errorf("control socket %s: send request: %w", c.Path, werr)
		}
		return fmt.Errorf("control socket %s: read answer: %w", c.Path, err)
	}
	var h Header
	if err := json.Unmarshal(first, &h); err != nil {
		return fmt.Errorf("control socket %s: decode answer: %w", c.Path, err)
	}
	if !h.OK {
		if h.Error == "" {
			h.Error = "request refused"
		}
		return fmt.Errorf("daemon: %s", h.Error)
	}
	for {
		l, err := readLine(r, maxLine)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("control socket %s: read answer: %w", c.Path, err)
		}
		if err := line(l); err != nil {
			return fmt.Errorf("control socket %s: decode answer: %w", c.Path, err)
		}
	}
}

// dialError says why nothing answered: no daemon (no socket, or nothing
// accepting on it), or no permission, which says nothing of the daemon.
func dialError(path string, err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("control socket %s: %w (run as root or as a member of the socket's group, hostflow for the service)",
			path, unwrapOp(err))
	}
	return fmt.Errorf("%w at %s: %w", ErrNoDaemon, path, unwrapOp(err))
}

// unwrapOp drops net.OpError's "dial unix PATH:" prefix: the caller's
// message names the path already.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Flows returns the flows of the daemon's cache.
func (c *Client) Flows(ctx context.Context) ([]Flow, error) {
	var out []Flow
	err := c.do(ctx, CommandFlows, func(l []byte) error {
		var f Flow
		if err := json.Unmarshal(l, &f); err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// Stats returns the daemon's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	n := 0
	err := c.do(ctx, CommandStats, func(l []byte) error { n++; return json.Unmarshal(l, &st) })
	if err == nil && n != 1 {
		err = fmt.Errorf("control socket %s: stats: %d lines, want 1", c.Path, n)
	}
	return st, err
}

// Expire makes the daemon export every cached flow now and returns how
// many records that was.
func (c *Client) Expire(ctx context.Context) (int, error) {
	var e Expired
	n := 0
	err := c.do(ctx, CommandExpire, func(l []byte) error { n++; return json.Unmarshal(l, &e) })
	if err == nil && n != 1 {
		err = fmt.Errorf("control socket %s: expire: %d lines, want 1", c.Path, n)
	}
	return e.Flows, err
}
