package control

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fakeHandler struct {
	flows   []Flow
	stats   Stats
	expired int
	block   chan struct{} // Flows waits on it (or ctx) when set
	entered chan struct{}
}

func (h *fakeHandler) Flows(ctx context.Context) ([]Flow, error) {
	if h.block != nil {
		h.entered <- struct{}{}
		select {
		case <-h.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.flows, nil
}
func (h *fakeHandler) Stats(context.Context) (Stats, error) { return h.stats, nil }
func (h *fakeHandler) Expire(context.Context) (int, error)  { return h.expired, nil }

func serve(t *testing.T, h Handler, opts ServerOptions) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Listen(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(h)
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestRoundTrip(t *testing.T) {
	start := time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)
	h := &fakeHandler{
		flows: []Flow{{Src: "198.18.0.1", Dst: "198.18.0.2", SrcPort: 5000, DstPort: 7, Proto: 17, EtherType: 0x800,
			IfIndex: 3, IfName: "veth0", Direction: "egress", Packets: 10, Bytes: 1280, Start: start.Format(time.RFC3339), End: start.Add(time.Second).Format(time.RFC3339)}},
		stats: Stats{Packets: 7, FlowsActive: 2, FlowsExported: map[string]uint64{"idle": 3},
			Kernel: KernelStats{RingBufFull: 4}, Collectors: []CollectorStatus{{URL: "ipfix+udp://198.18.0.9:4739", State: "connected", Dropped: 5}}},
		expired: 9,
	}
	_, path := serve(t, h, ServerOptions{})
	c := &Client{Path: path}
	ctx := context.Background()
	flows, err := c.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 1 || flows[0] != h.flows[0] {
		t.Errorf("flows: %+v, want %+v", flows, h.flows)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 7 || st.FlowsExported["idle"] != 3 || st.Kernel.RingBufFull != 4 || len(st.Collectors) != 1 || st.Collectors[0].Dropped != 5 {
		t.Errorf("stats: %+v", st)
	}
	n, err := c.Expire(ctx)
	if err != nil || n != 9 {
		t.Errorf("expire: %d, %v; want 9", n, err)
	}
}

func TestSocketMode(t *testing.T) {
	_, path := serve(t, &fakeHandler{}, ServerOptions{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
}

// rawExchange sends line as the request and returns the answer's lines.
func rawExchange(t *testing.T, path, line string) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestBadRequests(t *testing.T) {
	_, path := serve(t, &fakeHandler{}, ServerOptions{})
	for _, tc := range []struct{ name, req, want string }{
		{"other version", `{"version":2,"command":"flows"}` + "\n", `{"version":1,"ok":false,"error":"protocol version 2 not supported (this hostflow speaks 1)"}`},
		{"unknown command", `{"version":1,"command":"dump"}` + "\n", `{"version":1,"ok":false,"error":"unknown command \"dump\""}`},
		{"not json", "flows\n", `{"version":1,"ok":false,"error":"decode request: invalid character 'l' in literal false (expecting 'a')"}`},
		{"too long", strings.Repeat("x", 2000) + "\n", `{"version":1,"ok":false,"error":"read request: line longer than 1024 bytes"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rawExchange(t, path, tc.req)
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("answer %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	h := &fakeHandler{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	_, path := serve(t, h, ServerOptions{MaxClients: 1})
	c := &Client{Path: path}
	done := make(chan error, 1)
	go func() { _, err := c.Flows(context.Background()); done <- err }()
	<-h.entered
	if _, err := c.Stats(context.Background()); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("second client: %v, want busy", err)
	}
	close(h.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The slot is free again, once the first connection's goroutine
	// has returned it (just after the client saw its answer end).
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Stats(context.Background())
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "busy") || time.Now().After(deadline) {
			t.Fatalf("after the first client: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSlowClientTimesOut(t *testing.T) {
	// The timeout applies to the next client too: long enough that a
	// stalled test goroutine does not time it out as well.
	const timeout = 5 * time.Second
	_, path := serve(t, &fakeHandler{}, ServerOptions{MaxClients: 1, Timeout: timeout})
	slow, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// It never sends its request: the server cuts it off, and its slot
	// serves the next client.
	slow.SetReadDeadline(time.Now().Add(6 * timeout))
	if _, err := bufio.NewReader(slow).ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("slow client: %v, want the connection closed (EOF)", err)
	}
	// The slot is freed just after the connection closes: a client that
	// comes at once may still be told "busy", never anything else.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := (&Client{Path: path}).Stats(context.Background())
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "busy") || time.Now().After(deadline) {
			t.Fatalf("next client: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseEndsHandlers(t *testing.T) {
	h := &fakeHandler{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	s, path := serve(t, h, ServerOptions{})
	done := make(chan error, 1)
	go func() { _, err := (&Client{Path: path}).Flows(context.Background()); done <- err }()
	<-h.entered
	s.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("client of a closing server: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	// A socket file nothing listens on, as a killed daemon leaves it.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	s, err := Listen(path, ServerOptions{})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	go s.Serve(&fakeHandler{expired: 1})
	defer s.Close()
	if n, err := (&Client{Path: path}).Expire(context.Background()); err != nil || n != 1 {
		t.Errorf("expire: %d, %v", n, err)
	}
}

func TestLiveSocketNotTaken(t *testing.T) {
	_, path := serve(t, &fakeHandler{expired: 1}, ServerOptions{})
	if _, err := Listen(path, ServerOptions{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	// The first server still answers.
	if n, err := (&Client{Path: path}).Expire(context.Background()); err != nil || n != 1 {
		t.Errorf("first server after a refused second: %d, %v", n, err)
	}
}

func TestNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(path, ServerOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}

func TestNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	_, err := (&Client{Path: path}).Stats(context.Background())
	want := "no daemon at " + path + ": connect: no such file or directory"
	if !errors.Is(err, ErrNoDaemon) || err.Error() != want {
		t.Errorf("err %q, want %q", err, want)
	}
}

func TestDialError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
			"no daemon at /run/x.sock: connect: connection refused"},
		{&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)},
			"control socket /run/x.sock: connect: permission denied (run as root or as a member of the socket's group, hostflow for the service)"},
	} {
		if got := dialError("/run/x.sock", tc.err).Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
