package bpf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sockAttachment is the packet socket that carries the filter on one
// interface.
type sockAttachment struct {
	name string
	l2   bool // the device has an Ethernet header
	fd   int
}

// ethPAllBE is ETH_P_ALL in network byte order, as sockaddr_ll wants it.
const ethPAllBE = uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8

// Attach opens an AF_PACKET socket on interface ifindex and puts the filter
// on it (name is for messages). The socket and the link look-up belong to
// the calling thread's network namespace, so a caller watching another
// namespace runs Attach inside it; Detach and Close may run anywhere.
//
// The socket is created with protocol 0, which hooks it nowhere, gets its
// filter, and only then is bound to the interface with ETH_P_ALL: there is
// no moment at which a packet could be queued on it unfiltered.
func (m *SockFlowFetcher) Attach(ifindex int, name string) error {
	return m.attach(ifindex, name, func() (*sockAttachment, error) {
		lnk, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return nil, fmt.Errorf("attach socket to %s (ifindex %d): %w", name, ifindex, err)
		}
		a := &sockAttachment{name: name, l2: hasEthernetHeader(lnk), fd: -1}
		if err := a.open(m.progs.program(a.l2), ifindex); err != nil {
			_ = a.close()
			return nil, fmt.Errorf("attach socket to %s (ifindex %d): %w", name, ifindex, err)
		}
		return a, nil
	})
}

func (a *sockAttachment) open(prog *ebpf.Program, ifindex int) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	a.fd = fd
	if err := a.setFilter(prog); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAllBE, Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind packet socket: %w", err)
	}
	return nil
}

// setFilter attaches prog to the socket, replacing any filter it had.
func (a *sockAttachment) setFilter(prog *ebpf.Program) error {
	if err := unix.SetsockoptInt(a.fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	return nil
}

func (a *sockAttachment) close() error {
	if a.fd < 0 {
		return nil
	}
	err := unix.Close(a.fd)
	a.fd = -1
	if err != nil {
		return fmt.Errorf("close packet socket: %w", err)
	}
	return nil
}

func (a *sockAttachment) iface() string { return a.name }

// hooks returns the socket: it is the attachment's only hook.
func (a *sockAttachment) hooks() []hook[*NetSkPrograms] { return []hook[*NetSkPrograms]{a} }

// update puts the filter of progs on the socket.
func (a *sockAttachment) update(progs *NetSkPrograms) error {
	return setSockFilter(a, progs.program(a.l2))
}

// setSockFilter is sockAttachment.setFilter; tests replace it to make a
// socket refuse a filter.
var setSockFilter = (*sockAttachment).setFilter
