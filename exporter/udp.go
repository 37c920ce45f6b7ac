package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// maxRefusedRetries bounds how often one datagram is sent again after the
// socket reported ECONNREFUSED. Reporting the error clears it, so one retry
// is enough unless another ICMP error arrived in between; the bound keeps
// a storm of them from holding the writer.
const maxRefusedRetries = 3

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
	writeTO time.Duration
	closed  atomic.Bool

	messages, bytes, lost, unreachable atomic.Uint64
}

var _ Transport = (*UDPWriter)(nil)

// DialUDP connects a UDP socket to addr ("host:port", "[v6addr]:port").
// Connecting makes the kernel pick the source address and route once.
func DialUDP(addr string) (*UDPWriter, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp resolve: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, fmt.Errorf("udp dial: %w", err)
	}
	return &UDPWriter{conn: conn, writeTO: DefaultWriteTimeout}, nil
}

// WriteMessage writes msg as one datagram, sending it again if the socket
// reports an ICMP error that arrived for an earlier one. A full socket
// buffer makes the write wait, up to DefaultWriteTimeout.
func (u *UDPWriter) WriteMessage(msg []byte) error {
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
		Unreachable: u.unreachable.Load(),
		Connected:   !u.closed.Load(),
	}
}

// LocalAddr returns the socket's local address.
func (u *UDPWriter) LocalAddr() net.Addr { return u.conn.LocalAddr() }

// RemoteAddr returns the collector's address.
func (u *UDPWriter) RemoteAddr() net.Addr { return u.conn.RemoteAddr() }

// Close closes the socket. Closing twice is not an error.
func (u *UDPWriter) Close() error {
	if u.closed.Swap(true) {
		return nil
	}
	if err := u.conn.Close(); err != nil {
		return fmt.Errorf("udp close: %w", err)
	}
	return nil
}
