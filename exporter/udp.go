package exporter

import (
	"fmt"
	"io"
	"net"
)

// UDPWriter sends each IPFIX message as one UDP datagram (RFC 7011 section
// 10.3) on a connected socket.
type UDPWriter struct {
	conn *net.UDPConn
}

var _ MessageWriter = (*UDPWriter)(nil)

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
	return &UDPWriter{conn: conn}, nil
}

// WriteMessage writes msg as one datagram.
func (u *UDPWriter) WriteMessage(msg []byte) error {
	n, err := u.conn.Write(msg)
	if err != nil {
		return fmt.Errorf("udp write: %w", err)
	}
	if n != len(msg) {
		return fmt.Errorf("udp write: %d of %d bytes: %w", n, len(msg), io.ErrShortWrite)
	}
	return nil
}

// LocalAddr returns the socket's local address.
func (u *UDPWriter) LocalAddr() net.Addr { return u.conn.LocalAddr() }

// RemoteAddr returns the collector's address.
func (u *UDPWriter) RemoteAddr() net.Addr { return u.conn.RemoteAddr() }

// Close closes the socket.
func (u *UDPWriter) Close() error {
	if err := u.conn.Close(); err != nil {
		return fmt.Errorf("udp close: %w", err)
	}
	return nil
}
