package exporter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Transport carries encoded messages (IPFIX or NetFlow v9) to one
// collector. The encoder writes through it as a MessageWriter; a Collector
// also calls Connect before each batch and reads Stats.
//
// Every implementation bounds the time of each call: WriteMessage writes
// one whole message or fails within its write timeout (and the dial
// timeout, if it has to connect), so a dead collector costs lost messages,
// counted in Stats, never a blocked caller.
type Transport interface {
	MessageWriter
	// Connect returns once the transport can send, waiting out the
	// reconnect backoff, or when ctx is done.
	Connect(ctx context.Context) error
	// Stats returns the counters. It is safe to call from any goroutine.
	Stats() TransportStats
	// Close releases the connection; later writes fail with ErrClosed.
	// Closing twice is not an error.
	Close() error
}

// TransportStats are a transport's counters since it was created. A
// transport sees messages; the encoder counts the records of the messages
// whose write failed (RFC 7011 section 10.4 asks for both to be known), the
// transport those of the messages it accepted and lost afterwards.
type TransportStats struct {
	// Messages and Bytes count messages written whole.
	Messages uint64
	Bytes    uint64
	// Lost counts messages not sent: failed writes, and writes while
	// disconnected or closed.
	Lost uint64
	// RecordsLost counts the flow records of the messages a write
	// accepted (returned nil) and that were then lost: a batching
	// UDPWriter's failed batch. The encoder counted them as sent; they
	// are not in its RecordsLost.
	RecordsLost uint64
	// Unreachable counts ICMP errors (port unreachable: nothing listens
	// at the collector's address) that a UDP socket reported on a send.
	// Each was for an earlier datagram; the one in hand was sent again,
	// so they cost no message. A batching UDPWriter counts only the
	// errors sendmmsg returns: one that stops a call after it sent
	// other messages is swallowed by the kernel, as a full socket buffer
	// would be, so the count is then a lower bound.
	Unreachable uint64
	// Dials counts connection attempts and DialErrors the failed ones
	// (TCP and TLS only).
	Dials      uint64
	DialErrors uint64
	// Reconnects counts connections made after the first one.
	Reconnects uint64
	// Connected reports whether a connection is up now.
	Connected bool
}

var (
	// ErrClosed is returned by a transport or collector used after Close.
	ErrClosed = errors.New("exporter closed")
	// ErrBackoff is wrapped by the errors of writes refused because the
	// transport waits before its next connection attempt.
	ErrBackoff = errors.New("collector reconnect backing off")
	// ErrNoClientCertificate is wrapped by the errors of TLS connections
	// that the collector asked for a client certificate when none was
	// configured: the usual cause of a collector dropping the connection
	// right after the handshake, since RFC 7011 section 11 has both sides
	// authenticate.
	ErrNoClientCertificate = errors.New("collector asked for a client certificate and none is configured")
)

// ConnError is a failure of the connection to a collector.
type ConnError struct {
	// Op is what failed: "dial", "tls handshake", "write" or "read".
	Op   string
	Addr string
	Err  error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("collector %s %s: %v", e.Addr, e.Op, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// BackoffError is returned by writes refused while the transport waits
// before reconnecting. It matches ErrBackoff and the error that made the
// transport back off (errors.Is and errors.As see both).
type BackoffError struct {
	// Wait is the time left before the next attempt.
	Wait time.Duration
	// Last is the error that made the transport back off.
	Last error
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%v: next attempt in %v: %v", ErrBackoff, e.Wait.Round(time.Millisecond), e.Last)
}

func (e *BackoffError) Unwrap() []error { return []error{ErrBackoff, e.Last} }

// Defaults of the stream transports.
const (
	// DefaultDialTimeout bounds one connection attempt, TCP handshake and
	// TLS handshake together: far above any RTT, short enough that a
	// blackholed collector does not hold its Collector for long.
	DefaultDialTimeout = 5 * time.Second
	// DefaultWriteTimeout bounds one message write. A collector that
	// cannot take a 1400-byte message in 5 s is, for this exporter, down:
	// the connection is dropped, the message counted as lost.
	DefaultWriteTimeout = 5 * time.Second
)

// Backoff is a bounded exponential backoff with jitter. The n-th attempt
// after a failure waits Min·2^(n-1), capped at Max, less a random part of
// up to Jitter of it: jitter spreads the reconnections of many exporters
// after a collector restart, and taking it off (rather than adding it)
// keeps Max a hard bound.
type Backoff struct {
	Min    time.Duration
	Max    time.Duration
	Jitter float64 // in [0, 1]
}

// DefaultBackoff retries half a second after a failure, then doubles up to
// 30 s, so a restarted collector is found again within half a default
// active timeout; meanwhile the Collector's queue holds the flows.
var DefaultBackoff = Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}

// Validate reports a backoff that would spin or never retry.
func (b Backoff) Validate() error {
	switch {
	case b.Min <= 0:
		return fmt.Errorf("backoff min %v: must be positive", b.Min)
	case b.Max < b.Min:
		return fmt.Errorf("backoff max %v: must be at least min %v", b.Max, b.Min)
	case !(b.Jitter >= 0 && b.Jitter <= 1):
		return fmt.Errorf("backoff jitter %v: must be in [0, 1]", b.Jitter)
	}
	return nil
}

// Delay returns the wait before attempt n (n >= 1: the n-th consecutive
// failure just happened) given r, a uniform random number in [0, 1). The
// result is in [d·(1-Jitter), d] with d = min(Max, Min·2^(n-1)).
func (b Backoff) Delay(n int, r float64) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max && d <= math.MaxInt64/2; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d - time.Duration(float64(d)*b.Jitter*r)
}
