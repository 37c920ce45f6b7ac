package exporter

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// UDPWriter sends each IPFIX message as one UDP datagram (RFC 7011 section
// 10.3) on a connected socket. It is safe for concurrent use.
type UDPWriter struct {
	conn    *net.UDPConn
	writeTO time.Duration
	closed  atomic.Bool

	messages, bytes, lost atomic.Uint64
}

var _ Transport = (*UDPWriter)(nil)

// DialUDP connects a UDP socket to addr ("host:port", "[v6addr]:port").
// Connecting makes the kernel pick the source address once and report ICMP
// port-unreachable errors back as write errors, which the exporter counts.
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

// WriteMessage writes msg as one datagram. A full socket buffer makes the
// write wait, up to DefaultWriteTimeout.
func (u *UDPWriter) WriteMessage(msg []byte) error {
	if u.closed.Load() {
		u.lost.Add(1)
		return ErrClosed
	}
	n, err := 0, u.conn.SetWriteDeadline(time.Now().Add(u.writeTO))
	if err == nil {
		n, err = u.conn.Write(msg)
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
		Messages:  u.messages.Load(),
		Bytes:     u.bytes.Load(),
		Lost:      u.lost.Load(),
		Connected: !u.closed.Load(),
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
