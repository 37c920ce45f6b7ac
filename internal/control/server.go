package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Handler answers the commands. Its methods run on the connection's
// goroutine; ctx ends when the client's time is up or the server closes.
type Handler interface {
	Flows(ctx context.Context) ([]Flow, error)
	Stats(ctx context.Context) (Stats, error)
	Expire(ctx context.Context) (int, error)
}

// ServerOptions tune a Server; zero values take the defaults.
type ServerOptions struct {
	// Mode is the socket file's permission bits (default 0660: the
	// daemon's user and group may connect).
	Mode fs.FileMode
	// MaxClients bounds the connections served at once (default 4);
	// one more is answered "busy" and closed.
	MaxClients int
	// Timeout bounds a whole exchange, request and answer (default
	// 10s): a client that stops reading is cut off.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Defaults of ServerOptions.
const (
	DefaultMode       fs.FileMode = 0o660
	DefaultMaxClients             = 4
	DefaultTimeout                = 10 * time.Second
)

// ErrInUse is returned by Listen when a live server answers on the path.
var ErrInUse = errors.New("another hostflow is running: it answers on this control socket")

// Server serves one Handler on a unix socket.
type Server struct {
	ln     *net.UnixListener
	path   string
	opts   ServerOptions
	slots  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Listen creates the socket at path, mode opts.Mode, and its directory if
// it is missing. A socket file that nothing answers on (left by a killed
// daemon) is replaced; one a live process accepts on is never taken over:
// Listen returns ErrInUse.
func Listen(path string, opts ServerOptions) (*Server, error) {
	if opts.Mode == 0 {
		opts.Mode = DefaultMode
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = DefaultMaxClients
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln, err := listen(path)
	if errors.Is(err, syscall.EADDRINUSE) {
		if err := removeStale(path); err != nil {
			return nil, err
		}
		ln, err = listen(path)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The file is created with the umask's bits; until this chmod, at
	// most fewer can connect, never more.
	if err := os.Chmod(path, opts.Mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{ln: ln, path: path, opts: opts, slots: make(chan struct{}, opts.MaxClients), ctx: ctx, cancel: cancel}, nil
}

func listen(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Close removes the file only if it is still ours (Server.Close
	// removes it itself, after the last connection).
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// removeStale removes the socket file at path if nothing accepts on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: cannot tell whether another hostflow uses it: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("control socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close and answers each with h. Run it
// on a goroutine of its own.
func (s *Server) Serve(h Handler) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.opts.Logger.Error("control socket: accept: stopped serving", "err", err)
			}
			return
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// Answered here, briefly: a busy server does not queue.
			c.SetDeadline(time.Now().Add(time.Second))
			writeLines(c, Header{Version: Version, Error: "busy: too many control clients, try again"})
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.slots; s.wg.Done() }()
			s.serveConn(c, h)
		}()
	}
}

func (s *Server) serveConn(c *net.UnixConn, h Handler) {
	defer c.Close()
	deadline := time.Now().Add(s.opts.Timeout)
	c.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	req, err := ReadRequest(bufio.NewReaderSize(c, 256))
	if err != nil {
		writeLines(c, Header{Version: Version, Error: err.Error()})
		return
	}
	lines, err := answer(ctx, req, h)
	if err != nil {
		writeLines(c, Header{Version: Version, Error: err.Error()})
		return
	}
	if err := writeLines(c, lines...); err != nil {
		s.opts.Logger.Warn("control socket: answer", "command", req.Command, "err", err)
	}
}

// answer runs one request and returns the lines of an ok answer.
func answer(ctx context.Context, req Request, h Handler) ([]any, error) {
	if req.Version != Version {
		return nil, fmt.Errorf("protocol version %d not supported (this hostflow speaks %d)", req.Version, Version)
	}
	ok := Header{Version: Version, OK: true}
	switch req.Command {
	case CommandFlows:
		flows, err := h.Flows(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, len(flows)+1)
		out = append(out, ok)
		for i := range flows {
			out = append(out, &flows[i])
		}
		return out, nil
	case CommandStats:
		st, err := h.Stats(ctx)
		if err != nil {
			return nil, err
		}
		return []any{ok, st}, nil
	case CommandExpire:
		n, err := h.Expire(ctx)
		if err != nil {
			return nil, err
		}
		return []any{ok, Expired{Flows: n}}, nil
	}
	return nil, fmt.Errorf("unknown command %q", req.Command)
}

func writeLines(c net.Conn, lines ...any) error {
	w := bufio.NewWriterSize(c, 64<<10)
	enc := json.NewEncoder(w)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return w.Flush()
}

// Close stops accepting, ends the connections being served (their
// handlers see ctx end) and removes the socket file.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close()
		s.cancel()
		s.wg.Wait()
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	})
	return err
}
