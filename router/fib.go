package router

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/hostflow/hostflow/bpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fib returns the kernel's forwarding decision for k, once per Enrich
// call.
func (e *Enricher) fib(k fibKey) fibResult {
	if r, ok := e.routes[k]; ok {
		return r
	}
	r := e.lookup(k)
	e.routes[k] = r
	return r
}

func (e *Enricher) lookup(k fibKey) fibResult {
	if !k.src.IsValid() || !k.dst.IsValid() || k.iif == 0 || k.iif == bpf.InterfaceUnset {
		return fibResult{}
	}
	if k.dst.IsMulticast() {
		// Multicast forwarding is the multicast routing daemon's
		// (MFC), which a unicast route get does not answer (IPv6
		// answers EMSGSIZE): not told.
		return fibResult{}
	}
	e.routeLookups.Add(1)
	rs, err := e.h.RouteGetWithOptions(net.IP(k.dst.AsSlice()), &netlink.RouteGetOptions{
		IifIndex: int(k.iif),
		SrcAddr:  net.IP(k.src.AsSlice()),
	})
	if err != nil {
		if st, ok := statusOfError(err); ok {
			return fibResult{status: st}
		}
		e.routeErrors.Add(1)
		e.log.Debug("router: route lookup failed", "iif", k.iif, "src", k.src, "dst", k.dst, "err", err)
		return fibResult{}
	}
	if len(rs) == 0 {
		e.routeErrors.Add(1)
		return fibResult{}
	}
	return resultOf(&rs[0], k.dst)
}

// resultOf turns the kernel's answer to a route get into the flow's
// forwarding fields. The next hop of a connected route (no gateway) is
// the destination itself: the host the packet is handed to on the link.
func resultOf(r *netlink.Route, dst netip.Addr) fibResult {
	switch r.Type {
	case unix.RTN_UNICAST:
		nh := ipAddr(r.Gw)
		if !nh.IsValid() || nh.IsUnspecified() {
			nh = dst
		}
		return fibResult{status: StatusForwarded, oif: uint32(r.LinkIndex), nextHop: nh}
	case unix.RTN_LOCAL, unix.RTN_BROADCAST:
		return fibResult{status: StatusConsumed}
	case unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_THROW:
		// IPv6 answers a route get on these with the route; IPv4 with
		// an error (statusOfError).
		return fibResult{status: StatusDropped}
	}
	// Multicast, NAT, anycast: not told.
	return fibResult{}
}

// statusOfError maps the errors the kernel answers a route get with for a
// packet it would drop: no route (ENETUNREACH), unreachable route
// (EHOSTUNREACH), blackhole (EINVAL), prohibit (EACCES, EPERM), and a
// source that fails reverse-path filtering (EXDEV).
func statusOfError(err error) (uint8, bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return 0, false
	}
	switch errno {
	case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EINVAL, unix.EACCES, unix.EPERM, unix.EXDEV:
		return StatusDropped, true
	}
	return 0, false
}
