package exporter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Bind says where export sockets send from: the same source address on
// every datagram and connection, so that a collector that identifies an
// exporter by its address (Akvorado, nfdump's -n sources) always sees the
// same one, and the VRF (or any device) whose routing table carries them.
// The zero Bind lets the kernel choose, per route.
type Bind struct {
	// SourceAddress, if valid, is the local address of every socket. A
	// collector of the other address family cannot be reached from it:
	// that is an error at NewUDPWriter, and at each dial of a stream.
	SourceAddress netip.Addr
	// Device, if set, binds every socket to this device
	// (SO_BINDTODEVICE), typically a VRF master: the kernel then routes
	// the export through the VRF's table only. It must exist when the
	// socket is made. Since Linux 5.7 binding a new socket needs no
	// privilege.
	Device string
}

// IsZero reports whether b leaves everything to the kernel.
func (b Bind) IsZero() bool { return !b.SourceAddress.IsValid() && b.Device == "" }

// String is the source address and device, for logs.
func (b Bind) String() string {
	s := "any"
	if b.SourceAddress.IsValid() {
		s = b.SourceAddress.String()
	}
	if b.Device != "" {
		s += "%" + b.Device
	}
	return s
}

// Check reports a device that does not exist. A source address is checked
// by the kernel when a socket binds it.
func (b Bind) Check() error {
	if b.Device == "" {
		return nil
	}
	if _, err := net.InterfaceByName(b.Device); err != nil {
		return fmt.Errorf("bind device %q: %w", b.Device, err)
	}
	return nil
}

// checkFamily fails if the source address cannot reach remote.
func (b Bind) checkFamily(remote netip.Addr) error {
	if !b.SourceAddress.IsValid() {
		return nil
	}
	src, dst := b.SourceAddress.Unmap(), remote.Unmap()
	if src.Is4() != dst.Is4() {
		return fmt.Errorf("source address %s cannot reach collector %s: another address family", src, dst)
	}
	return nil
}

// dialer returns a net.Dialer that binds as b says; network is "udp" or
// "tcp".
func (b Bind) dialer(network string) net.Dialer {
	var d net.Dialer
	if b.SourceAddress.IsValid() {
		ap := netip.AddrPortFrom(b.SourceAddress.Unmap(), 0)
		if network == "udp" {
			d.LocalAddr = net.UDPAddrFromAddrPort(ap)
		} else {
			d.LocalAddr = net.TCPAddrFromAddrPort(ap)
		}
	}
	if b.Device != "" {
		dev := b.Device
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind to device %q: %w", dev, serr)
			}
			return nil
		}
	}
	return d
}

// dialUDP connects a UDP socket to raddr as b says.
func (b Bind) dialUDP(raddr *net.UDPAddr) (*net.UDPConn, error) {
	if b.IsZero() {
		return net.DialUDP("udp", nil, raddr)
	}
	if err := b.checkFamily(raddr.AddrPort().Addr()); err != nil {
		return nil, err
	}
	d := b.dialer("udp")
	c, err := d.DialContext(context.Background(), "udp", raddr.String())
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil, errors.New("udp dial: not a UDP socket")
	}
	return uc, nil
}
