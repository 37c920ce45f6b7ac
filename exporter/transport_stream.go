package exporter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// StreamConfig configures a TCP or TLS transport (RFC 7011 sections 10.4
// and 10.4.1). Zero values take the defaults.
type StreamConfig struct {
	// Address is the collector, "host:port" or "[v6addr]:port". Required.
	Address string
	// TLS, if set, runs TLS over the connection (see TLSConfig.Load).
	// Versions below TLS 1.2 are refused. An empty ServerName is the host
	// part of Address.
	TLS *tls.Config
	// DialTimeout bounds one connection attempt, TLS handshake included.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// WriteTimeout bounds the write of one message. Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Backoff spaces reconnection attempts. Default DefaultBackoff.
	Backoff Backoff
	// Bind sets every connection's source address and device (a VRF).
	// A literal collector address of another family than the source
	// address fails NewStreamTransport; a name that resolves to no
	// address of its family fails each dial.
	Bind Bind
	// OnConnect runs on every new connection before anything else is
	// written on it, so the encoder can write its templates first (RFC
	// 7011 section 8: a collector cannot decode data before its template,
	// and a new connection starts with none): use the encoder's
	// WriteTemplates. See StreamTransport.
	OnConnect func()
	// Logger reports connections made and lost. Default: discard.
	Logger *slog.Logger
	// Rand returns uniform numbers in [0, 1) for the backoff jitter,
	// injected for tests. Default math/rand/v2.Float64.
	Rand func() float64
}

// StreamTransport sends messages over TCP or TLS, reconnecting with
// backoff. Each message is written whole in one Write under a deadline; a
// failed or timed-out write drops the connection, since the collector
// frames messages by their length field and a partial message would garble
// everything after it.
//
// It connects lazily, on the first Connect or WriteMessage, so it can be
// wired to its encoder before any connection exists:
//
//	t, _ := NewStreamTransport(cfg)
//	enc, _ := NewIPFIX(IPFIXConfig{Writer: t})
//	t.SetOnConnect(func() { enc.WriteTemplates() })
//
// The OnConnect hook runs on the goroutine that made the connection, with
// the transport unlocked, after the connection is up and before the
// message that triggered it (if any) is written. The hook may write through
// the transport: those messages go first. That is what the encoders'
// WriteTemplates does, so the templates precede any data on every
// connection, including one a WriteMessage made for a message built
// before the connection existed. (A hook that only marked the templates
// due would not do: the message in flight would go first, data before
// its templates.) If the hook's write fails,
// the connection is dropped and the message in flight fails with it.
// Writers on other goroutines are not held back while the hook runs: use
// one writer goroutine.
//
// A goroutine reads each connection, so a collector that closes it (or
// rejects the client certificate after a TLS 1.3 handshake) is noticed at
// once, not at the second write after. Collectors send nothing on an IPFIX
// stream; whatever arrives is discarded.
type StreamTransport struct {
	addr      string
	bind      Bind
	tls       *tls.Config
	dialTO    time.Duration
	writeTO   time.Duration
	backoff   Backoff
	rand      func() float64
	log       *slog.Logger
	closing   context.Context // done at Close: aborts dials and waits
	cancelAll context.CancelFunc
	readers   sync.WaitGroup

	// wmu serializes writes and dials; it is held during I/O, except
	// while the OnConnect hook runs.
	wmu sync.Mutex

	// mu guards what follows. It is never held during I/O.
	mu        sync.Mutex
	onConnect func()
	conn      *streamConn
	closed    bool
	failures  int       // consecutive failures, for the backoff
	next      time.Time // no attempt before this
	lastErr   error
	failing   bool // logged the current streak of failures
	everUp    bool
	stats     TransportStats
}

// streamConn is one connection and what is known of it.
type streamConn struct {
	net.Conn
	raw   net.Conn // under TLS, the TCP connection
	since time.Time
	// noCert is set during the handshake if the collector asked for a
	// client certificate and none was configured.
	noCert bool
	// err is the first error seen on the connection, guarded by the
	// transport's mu.
	err error
}

var _ Transport = (*StreamTransport)(nil)

// NewStreamTransport returns a transport to cfg.Address. It does not
// connect: see StreamTransport.
func NewStreamTransport(cfg StreamConfig) (*StreamTransport, error) {
	if cfg.Address == "" {
		return nil, errors.New("stream config: no address")
	}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("stream config: address %q: %w", cfg.Address, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := cfg.Bind.checkFamily(ip); err != nil {
			return nil, fmt.Errorf("stream config: %w", err)
		}
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.DialTimeout < 0 || cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("stream config: negative timeout (dial %v, write %v)", cfg.DialTimeout, cfg.WriteTimeout)
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, fmt.Errorf("stream config: %w", err)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var tc *tls.Config
	if cfg.TLS != nil {
		tc = cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		if tc.MaxVersion != 0 && tc.MaxVersion < tls.VersionTLS12 {
			return nil, fmt.Errorf("stream config: tls max version %#x below TLS 1.2", tc.MaxVersion)
		}
		if tc.ServerName == "" {
			tc.ServerName = host
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &StreamTransport{
		addr:      cfg.Address,
		bind:      cfg.Bind,
		tls:       tc,
		dialTO:    cfg.DialTimeout,
		writeTO:   cfg.WriteTimeout,
		backoff:   cfg.Backoff,
		rand:      cfg.Rand,
		log:       cfg.Logger.With("collector", cfg.Address),
		closing:   ctx,
		cancelAll: cancel,
		onConnect: cfg.OnConnect,
	}, nil
}

// SetOnConnect sets the hook run on each new connection (see
// StreamConfig.OnConnect). Set it before the first Connect or write.
func (t *StreamTransport) SetOnConnect(f func()) {
	t.mu.Lock()
	t.onConnect = f
	t.mu.Unlock()
}

// Addr returns the collector's address.
func (t *StreamTransport) Addr() string { return t.addr }

// WriteMessage writes msg whole. If there is no connection and the backoff
// allows an attempt, it connects first (running the OnConnect hook);
// otherwise it fails at once with a *BackoffError. The message is counted
// as lost on any failure; it is not retried.
func (t *StreamTransport) WriteMessage(msg []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	sc, err := t.connectLocked(t.closing)
	if err != nil {
		t.countLost()
		return err
	}
	err = sc.SetWriteDeadline(time.Now().Add(t.writeTO))
	if err == nil {
		_, err = sc.Write(msg)
	}
	if err != nil {
		err = t.lost(sc, &ConnError{Op: "write", Addr: t.addr, Err: sc.explain(err)})
		t.countLost()
		return err
	}
	t.mu.Lock()
	t.stats.Messages++
	t.stats.Bytes += uint64(len(msg))
	t.mu.Unlock()
	return nil
}

// Connect returns once a connection is up, trying again after each
// failure as the backoff allows, or when ctx is done or the transport
// closed. The error then wraps ctx's error and the last failure.
func (t *StreamTransport) Connect(ctx context.Context) error {
	for {
		t.wmu.Lock()
		_, err := t.connectLocked(ctx)
		t.wmu.Unlock()
		if err == nil || errors.Is(err, ErrClosed) {
			return err
		}
		t.mu.Lock()
		wait, last := time.Until(t.next), t.lastErr
		t.mu.Unlock()
		if ctx.Err() != nil {
			return fmt.Errorf("collector connect: %w: %w", ctx.Err(), last)
		}
		if wait <= 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("collector connect: %w: %w", ctx.Err(), last)
		case <-t.closing.Done():
			timer.Stop()
			return ErrClosed
		}
	}
}

// connectLocked returns the connection, dialing if there is none and the
// backoff allows. Called with wmu held; it releases wmu while the
// OnConnect hook runs.
func (t *StreamTransport) connectLocked(ctx context.Context) (*streamConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if sc := t.conn; sc != nil {
		t.mu.Unlock()
		return sc, nil
	}
	if wait := time.Until(t.next); wait > 0 {
		last := t.lastErr
		t.mu.Unlock()
		return nil, &BackoffError{Wait: wait, Last: last}
	}
	t.stats.Dials++
	t.mu.Unlock()

	sc, err := t.dial(ctx)

	t.mu.Lock()
	if err != nil {
		t.stats.DialErrors++
		t.failed(err)
		t.mu.Unlock()
		return nil, err
	}
	if t.closed {
		t.mu.Unlock()
		sc.Close()
		return nil, ErrClosed
	}
	sc.since = time.Now()
	t.conn = sc
	if t.everUp {
		t.stats.Reconnects++
	}
	t.everUp = true
	t.failing = false
	hook := t.onConnect
	reconnects := t.stats.Reconnects
	t.readers.Add(1)
	go t.watch(sc)
	t.mu.Unlock()
	t.log.Info("collector connected", "tls", t.tls != nil, "reconnects", reconnects)

	if hook != nil {
		t.wmu.Unlock()
		hook()
		t.wmu.Lock()
	}
	// The hook's own writes may have lost the connection.
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.conn == sc:
		return sc, nil
	case sc.err != nil:
		return nil, sc.err
	}
	return nil, ErrClosed
}

// dial makes one connection, TLS handshake included, within the dial
// timeout; ctx and Close abort it.
func (t *StreamTransport) dial(ctx context.Context) (*streamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.dialTO)
	defer cancel()
	stop := context.AfterFunc(t.closing, cancel)
	defer stop()
	d := t.bind.dialer("tcp")
	d.KeepAlive = 15 * time.Second
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &ConnError{Op: "dial", Addr: t.addr, Err: err}
	}
	sc := &streamConn{Conn: raw, raw: raw}
	if t.tls == nil {
		return sc, nil
	}
	cfg := t.tls
	if len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
		// Note the request, answer with no certificate and let the
		// collector decide: some only ask. If it refuses, the error
		// says why.
		cfg = cfg.Clone()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			sc.noCert = true
			return &tls.Certificate{}, nil
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &ConnError{Op: "tls handshake", Addr: t.addr, Err: sc.explain(err)}
	}
	sc.Conn = tc
	return sc, nil
}

// explain adds what is known of the cause of err.
func (sc *streamConn) explain(err error) error {
	if sc.noCert {
		return fmt.Errorf("%w (%w)", err, ErrNoClientCertificate)
	}
	return err
}

// watch reads sc until it fails, to notice a collector that hangs up.
func (t *StreamTransport) watch(sc *streamConn) {
	defer t.readers.Done()
	var buf [512]byte
	for {
		_, err := sc.Read(buf[:])
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("connection closed by the collector")
		}
		t.lost(sc, &ConnError{Op: "read", Addr: t.addr, Err: sc.explain(err)})
		return
	}
}

// lost drops sc after err, unless it was dropped already, and returns the
// first error seen on it: a write failing because the reader saw the
// collector's alert reports the alert.
func (t *StreamTransport) lost(sc *streamConn, err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sc.err == nil {
		sc.err = err
	}
	if t.conn != sc {
		return sc.err
	}
	t.conn = nil
	sc.raw.Close()
	if t.closed {
		return sc.err
	}
	// A connection that dies young does not reset the backoff: a
	// collector that accepts and then refuses would otherwise be retried
	// at the shortest interval forever.
	if time.Since(sc.since) >= t.backoff.Max {
		t.failures = 0
	}
	t.failed(sc.err)
	return sc.err
}

// failed schedules the next attempt after err. Called with mu held.
func (t *StreamTransport) failed(err error) {
	t.failures++
	wait := t.backoff.Delay(t.failures, t.rand())
	t.next = time.Now().Add(wait)
	t.lastErr = err
	if !t.failing {
		// Log the change of state; a dead collector fails every attempt.
		t.failing = true
		t.log.Warn("collector connection failing; messages are lost until it recovers", "err", err, "retry_in", wait)
	} else {
		t.log.Debug("collector connection attempt failed", "err", err, "retry_in", wait, "failures", t.failures)
	}
}

func (t *StreamTransport) countLost() {
	t.mu.Lock()
	t.stats.Lost++
	t.mu.Unlock()
}

// Stats returns the counters.
func (t *StreamTransport) Stats() TransportStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Connected = t.conn != nil
	return s
}

// Close closes the connection and aborts a dial or Connect in progress.
// With no write in progress, a TLS connection is closed with a
// close_notify alert; a write in progress is cut short instead of being
// waited for.
func (t *StreamTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.cancelAll()
	sc := t.conn
	t.conn = nil
	t.mu.Unlock()
	var err error
	if sc != nil {
		if t.wmu.TryLock() {
			err = sc.Close()
			t.wmu.Unlock()
		} else {
			err = sc.raw.Close()
		}
	}
	t.readers.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("collector %s close: %w", t.addr, err)
	}
	return nil
}
