package exporter

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"
)

// testBackoff keeps reconnection tests fast.
var testBackoff = Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		n := i + 1
		w *= time.Millisecond
		if got := b.Delay(n, 0); got != w {
			t.Errorf("delay(%d, r=0) = %v, want %v", n, got, w)
		}
		if got := b.Delay(n, 0.999999); got < w/2 || got > w {
			t.Errorf("delay(%d, r=1) = %v, want in [%v, %v]", n, got, w/2, w)
		}
	}
	// No overflow however many failures.
	if got := b.Delay(1000, 0.3); got > b.Max || got < b.Max/2 {
		t.Errorf("delay(1000) = %v, want at most %v", got, b.Max)
	}
	huge := Backoff{Min: time.Second, Max: math.MaxInt64}
	if got := huge.Delay(200, 0); got <= 0 {
		t.Errorf("huge max: delay %v", got)
	}
	for _, bad := range []Backoff{{}, {Min: time.Second, Max: time.Millisecond}, {Min: 1, Max: 2, Jitter: 1.5}} {
		if bad.Validate() == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if err := DefaultBackoff.Validate(); err != nil {
		t.Error(err)
	}
}

// msgServer is a collector that reads IPFIX messages framed by the length
// in their 16-byte header and keeps them per connection.
type msgServer struct {
	t       *testing.T
	ln      net.Listener
	tlsConf *tls.Config
	wg      sync.WaitGroup
	arrived chan struct{}
	noRead  bool          // accept but never read
	stop    chan struct{} // closed by kill

	stopOnce sync.Once
	mu       sync.Mutex
	conns    []*serverConn
}

type serverConn struct {
	conn   net.Conn
	msgs   [][]byte
	err    error  // why reading stopped
	peerCN string // client certificate's common name, under TLS
}

// startServer listens on addr ("127.0.0.1:0" for any port); with tlsConf
// it speaks TLS.
func startServer(t *testing.T, addr string, tlsConf *tls.Config) *msgServer {
	t.Helper()
	s := &msgServer{t: t, tlsConf: tlsConf, arrived: make(chan struct{}, 1), stop: make(chan struct{})}
	s.listen(addr)
	t.Cleanup(s.kill)
	return s
}

func (s *msgServer) listen(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept(ln)
}

func (s *msgServer) addr() string { return s.ln.Addr().String() }

func (s *msgServer) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		sc := &serverConn{conn: c}
		if s.tlsConf != nil {
			sc.conn = tls.Server(c, s.tlsConf)
		}
		s.mu.Lock()
		s.conns = append(s.conns, sc)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.read(sc)
	}
}

func (s *msgServer) read(sc *serverConn) {
	defer s.wg.Done()
	err := s.readLoop(sc)
	s.mu.Lock()
	sc.err = err
	s.mu.Unlock()
	s.signal()
}

func (s *msgServer) readLoop(sc *serverConn) error {
	if tc, ok := sc.conn.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return err
		}
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			s.mu.Lock()
			sc.peerCN = pc[0].Subject.CommonName
			s.mu.Unlock()
		}
	}
	if s.noRead {
		<-s.stop
		return nil
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(sc.conn, h[:]); err != nil {
			return err
		}
		if v := binary.BigEndian.Uint16(h[0:]); v != 10 {
			return errors.New("not IPFIX")
		}
		n := int(binary.BigEndian.Uint16(h[2:]))
		if n < len(h) {
			return errors.New("bad length")
		}
		msg := make([]byte, n)
		copy(msg, h[:])
		if _, err := io.ReadFull(sc.conn, msg[len(h):]); err != nil {
			return err
		}
		s.mu.Lock()
		sc.msgs = append(sc.msgs, msg)
		s.mu.Unlock()
		s.signal()
	}
}

func (s *msgServer) signal() {
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

// kill closes the listener and every connection, as a collector that
// dies.
func (s *msgServer) kill() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.conn.Close()
	}
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// restart listens again on the same address.
func (s *msgServer) restart() {
	s.t.Helper()
	s.listen(s.addr())
}

// snapshot returns the messages of each connection so far.
func (s *msgServer) snapshot() [][][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][][]byte, len(s.conns))
	for i, c := range s.conns {
		out[i] = append([][]byte(nil), c.msgs...)
	}
	return out
}

func (s *msgServer) total() int {
	n := 0
	for _, c := range s.snapshot() {
		n += len(c)
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func (s *msgServer) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-s.arrived:
		case <-time.After(5 * time.Millisecond):
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// testMsg returns an IPFIX message of n bytes whose observation domain is
// tag, so the server's copy can be told apart.
func testMsg(tag uint32, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], 10)
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	binary.BigEndian.PutUint32(b[12:], tag)
	return b
}

func msgTag(b []byte) uint32 { return binary.BigEndian.Uint32(b[12:]) }

const markerTag = 0xfeedface

func newStream(t *testing.T, cfg StreamConfig) *StreamTransport {
	t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = testBackoff
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = time.Second
	}
	tr, err := NewStreamTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func connectWithin(t *testing.T, tr Transport, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return tr.Connect(ctx)
}

// The collector dies and comes back: the transport notices, backs off,
// reconnects, and the OnConnect hook runs again before any data. The hook
// writes a marker through the transport, as an encoder sending its
// templates at once would.
func TestStreamReconnectRunsHookFirst(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", nil)
	var tr *StreamTransport
	var hooks int
	tr = newStream(t, StreamConfig{Address: srv.addr(), OnConnect: func() {
		hooks++
		if err := tr.WriteMessage(testMsg(markerTag, 32)); err != nil {
			t.Errorf("hook write: %v", err)
		}
	}})

	// The first write connects lazily; the hook's marker goes first.
	for i := uint32(1); i <= 3; i++ {
		if err := tr.WriteMessage(testMsg(i, 100)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if !srv.waitFor(20*time.Second, func() bool { return srv.total() == 4 }) {
		t.Fatalf("server got %d messages, want 4", srv.total())
	}

	srv.kill()
	// The reader notices the hang-up; writes then fail, not wait.
	if !waitUntil(20*time.Second, func() bool { return !tr.Stats().Connected }) {
		t.Fatal("transport did not notice the collector hang up")
	}
	err := tr.WriteMessage(testMsg(99, 100))
	if err == nil {
		t.Fatal("write to a dead collector succeeded")
	}
	var ce *ConnError
	if !errors.As(err, &ce) {
		t.Errorf("error %v (%T), want a *ConnError inside", err, err)
	}

	// With the server still down, Connect keeps trying with backoff
	// until its context ends: two dials of its own at least.
	before := tr.Stats().DialErrors
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan error, 1)
	go func() { connected <- tr.Connect(ctx) }()
	retried := waitUntil(20*time.Second, func() bool { return tr.Stats().DialErrors >= before+2 })
	cancel()
	if err := <-connected; !errors.Is(err, context.Canceled) {
		t.Errorf("connect to a dead collector: %v, want canceled", err)
	}
	if !retried {
		t.Errorf("dial errors %d, %d before Connect: backoff did not retry", tr.Stats().DialErrors, before)
	}

	srv.restart()
	if err := connectWithin(t, tr, 20*time.Second); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	if err := tr.WriteMessage(testMsg(4, 100)); err != nil {
		t.Fatalf("write after reconnect: %v", err)
	}
	if !srv.waitFor(20*time.Second, func() bool { return srv.total() == 6 }) {
		t.Fatalf("server got %d messages, want 6", srv.total())
	}
	conns := srv.snapshot()
	if len(conns) != 2 || hooks != 2 {
		t.Fatalf("%d connections, %d hooks; want 2 and 2", len(conns), hooks)
	}
	for i, want := range [][]uint32{{markerTag, 1, 2, 3}, {markerTag, 4}} {
		var got []uint32
		for _, m := range conns[i] {
			got = append(got, msgTag(m))
		}
		if !equalTags(got, want) {
			t.Errorf("connection %d got messages %x, want %x", i, got, want)
		}
	}
	st := tr.Stats()
	if st.Reconnects != 1 || st.Messages != 6 || st.Lost != 1 || !st.Connected {
		t.Errorf("stats %+v", st)
	}
}

func equalTags(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
