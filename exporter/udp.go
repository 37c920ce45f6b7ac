package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxRefusedRetries bounds how often one datagram is sent again after the
// socket reported ECONNREFUSED. Reporting the error clears it, so one retry
// is enough unless another ICMP error arrived in between; the bound keeps
// a storm of them from holding the writer.
const maxRefusedRetries = 3

// closeFlushTimeout bounds the wait for socket buffer room when Close
// sends what is held back.
const closeFlushTimeout = 500 * time.Millisecond

// UDPConfig configures a UDPWriter.
type UDPConfig struct {
	// Address is the collector, "host:port" or "[v6addr]:port".
	// Required.
	Address string
	// Batch is the most messages held back to go out in one sendmmsg
	// call. 0 or 1 sends each message at once, with its own write: the
	// error of WriteMessage is then that message's. With batching,
	// WriteMessage copies the message and returns; the batch goes out
	// when it is full, at Flush, or at Close, and Flush reports what
	// failed. After a failure, messages go out one write each, with
	// their own errors, until one is sent. Stats count every message
	// exactly either way, and, for messages written with
	// WriteMessageRecords, the records of those a batch lost.
	Batch int
	// NoGSO keeps batches from using UDP GSO: each message gets its own
	// sendmmsg header. By default a run of messages of the same length
	// goes in one header with UDP_SEGMENT, where the kernel has it
	// (Linux 4.18); where a route refuses it, the writer stops using it.
	NoGSO bool
	// WriteTimeout bounds the wait for room in the socket buffer, per
	// write or per Flush. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Bind sets the socket's source address and device (a VRF). A
	// source address of another family than the collector's, or a
	// device that does not exist, fails NewUDPWriter.
	Bind Bind
}

// UDPWriter sends each IPFIX or NetFlow v9 message as one UDP datagram
// (RFC 7011 section 10.3.3: no message spans datagrams) on a connected
// socket. It is safe for concurrent use.
//
// A connected UDP socket reports an ICMP error (port unreachable, while
// the collector restarts or when nothing listens) on the next send after
// it arrived: that send fails, with ECONNREFUSED, although its datagram
// had nothing to do with the error and was never sent. UDPWriter counts
// the error in Stats().Unreachable and sends the datagram again, so an
// ICMP error never costs a message.
type UDPWriter struct {
	conn    *net.UDPConn
	raw     syscall.RawConn
	writeTO time.Duration
	closed  atomic.Bool

	// mu guards the batch. Single writes do not take it.
	mu    sync.Mutex
	batch *mmsgBatch // nil: one write per message
	// writeThrough makes WriteMessage write at once while sends fail,
	// so that the caller learns of each failure with its message.
	writeThrough bool
	// deferred is the first send failure since the last Flush (of a
	// batch sent because it was full), returned by the next Flush.
	deferred error

	messages, bytes, lost, unreachable atomic.Uint64
	// recordsLost counts the flow records of accepted messages lost.
	recordsLost atomic.Uint64
}

var _ Transport = (*UDPWriter)(nil)

// DialUDP connects a UDP socket to addr ("host:port", "[v6addr]:port") and
// sends each message at once: NewUDPWriter with no batching.
func DialUDP(addr string) (*UDPWriter, error) {
	return NewUDPWriter(UDPConfig{Address: addr})
}

// NewUDPWriter connects a UDP socket to cfg.Address. Connecting makes the
// kernel pick the source address (unless cfg.Bind sets it) and route once. If cfg.Batch asks for
// batching and the kernel refuses sendmmsg (a seccomp filter, an old
// emulation layer), the writer sends one message per write instead.
func NewUDPWriter(cfg UDPConfig) (*UDPWriter, error) {
	if cfg.Batch < 0 || cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("udp config: negative batch %d or write timeout %v", cfg.Batch, cfg.WriteTimeout)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("udp resolve: %w", err)
	}
	conn, err := cfg.Bind.dialUDP(raddr)
	if err != nil {
		return nil, fmt.Errorf("udp dial %s from %s: %w", raddr, cfg.Bind, err)
	}
	u := &UDPWriter{conn: conn, writeTO: cfg.WriteTimeout}
	if cfg.Batch > 1 {
		raw, err := conn.SyscallConn()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("udp dial: %w", err)
		}
		u.raw = raw
		if sendmmsgProbe(raw) == nil {
			u.batch = newMmsgBatch(cfg.Batch, u, !cfg.NoGSO && probeGSO(raw))
		}
	}
	return u, nil
}

// Batching reports whether messages go out in batches (sendmmsg).
func (u *UDPWriter) Batching() bool { return u.batch != nil }

// GSO reports whether batches use UDP GSO for runs of equal-length
// messages. An IPFIX exporter writing to u asks at each export, and fills
// its messages to one length while it is true (exporter/fill.go).
func (u *UDPWriter) GSO() bool {
	if u.batch == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.batch.gso
}

// WriteMessage sends msg as one datagram, or, when batching, copies it to
// the batch and returns nil; see UDPConfig.Batch. A full socket buffer
// makes the write wait, up to the write timeout.
func (u *UDPWriter) WriteMessage(msg []byte) error {
	return u.WriteMessageRecords(msg, 0)
}

// WriteMessageRecords is WriteMessage of a message holding records flow
// records: if it is accepted into a batch and lost, Stats().RecordsLost
// counts them.
func (u *UDPWriter) WriteMessageRecords(msg []byte, records int) error {
	if u.batch == nil {
		return u.writeOne(msg)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed.Load() {
		u.lost.Add(1)
		return ErrClosed
	}
	if u.writeThrough {
		if err := u.writeOne(msg); err != nil {
			return err
		}
		// Sends work again.
		u.writeThrough = false
		return nil
	}
	if !u.batch.fits(len(msg)) {
		u.flushLocked(u.writeTO)
	}
	u.batch.add(msg, records)
	if u.batch.full() {
		u.flushLocked(u.writeTO)
	}
	return nil
}

// Flush sends the messages held back, if any, and returns the first send
// failure since the last Flush, including those of batches sent because
// they were full. Without batching it does nothing.
func (u *UDPWriter) Flush() error {
	if u.batch == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed.Load() && u.batch.n > 0 {
		u.batch.loseFrom(0)
		u.batch.reset()
		u.deferred = cmp(u.deferred, ErrClosed)
	}
	u.flushLocked(u.writeTO)
	err := u.deferred
	u.deferred = nil
	return err
}

// flushLocked sends the batch. Failures are counted; the first is kept for
// Flush. If any message failed, later ones are written one by one until a
// write works, so that the encoder counts their failures itself.
func (u *UDPWriter) flushLocked(timeout time.Duration) {
	if u.batch.n == 0 {
		return
	}
	err := u.batch.send(u.raw, timeout)
	if err != nil {
		u.deferred = cmp(u.deferred, fmt.Errorf("udp write: %w", err))
		u.writeThrough = true
	}
}

func cmp(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// writeOne writes msg as one datagram, sending it again if the socket
// reports an ICMP error that arrived for an earlier one.
func (u *UDPWriter) writeOne(msg []byte) error {
	if u.closed.Load() {
		u.lost.Add(1)
		return ErrClosed
	}
	n, err := 0, u.conn.SetWriteDeadline(time.Now().Add(u.writeTO))
	for try := 0; err == nil; try++ {
		n, err = u.conn.Write(msg)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || try == maxRefusedRetries {
			break
		}
		// The error was for an earlier datagram, and reporting it
		// cleared it: this one was not sent yet.
		u.unreachable.Add(1)
		err = nil
	}
	if err == nil && n != len(msg) {
		err = fmt.Errorf("%d of %d bytes: %w", n, len(msg), io.ErrShortWrite)
	}
	if err != nil {
		u.lost.Add(1)
		return fmt.Errorf("udp write: %w", err)
	}
	u.messages.Add(1)
	u.bytes.Add(uint64(n))
	return nil
}

// Connect returns nil: a UDP socket has no connection to wait for. It
// fails only after Close.
func (u *UDPWriter) Connect(context.Context) error {
	if u.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Stats returns the counters; a UDP socket counts as connected until
// closed.
func (u *UDPWriter) Stats() TransportStats {
	return TransportStats{
		Messages:    u.messages.Load(),
		Bytes:       u.bytes.Load(),
		Lost:        u.lost.Load(),
		RecordsLost: u.recordsLost.Load(),
		Unreachable: u.unreachable.Load(),
		Connected:   !u.closed.Load(),
	}
}

// LocalAddr returns the socket's local address.
func (u *UDPWriter) LocalAddr() net.Addr { return u.conn.LocalAddr() }

// RemoteAddr returns the collector's address.
func (u *UDPWriter) RemoteAddr() net.Addr { return u.conn.RemoteAddr() }

// Close sends the messages held back (waiting at most half a second for
// room), unless a send is under way in another goroutine, then closes the
// socket, which cuts that send short.
// Messages it could not send are counted as lost, and the error reports
// the send failures Flush has not reported yet. Closing twice is not an
// error.
func (u *UDPWriter) Close() error {
	if u.closed.Swap(true) {
		return nil
	}
	var errs []error
	if u.batch != nil && u.mu.TryLock() {
		// A Collector's drain deadline closes the writer to cut
		// sends short: do not wait long for room here.
		u.flushLocked(min(u.writeTO, closeFlushTimeout))
		errs = append(errs, u.deferred)
		u.deferred = nil
		u.mu.Unlock()
	}
	if err := u.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("udp close: %w", err))
	}
	if u.batch != nil {
		// A send cut short returns at once now.
		u.mu.Lock()
		u.batch.loseFrom(0)
		u.batch.reset()
		u.mu.Unlock()
	}
	return errors.Join(errs...)
}
