package router

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Tuple is a connection tuple as conntrack and the flow key see it. Ports
// are 0 for protocols other than TCP, UDP, SCTP and UDP-Lite: the netlink
// library does not decode ICMP ids, and the flow key has no ports for
// ICMP, so ICMP flows match on addresses and protocol.
type Tuple struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Reverse is the tuple of the other direction.
func (t Tuple) Reverse() Tuple {
	return Tuple{Proto: t.Proto, Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort}
}

// hasPorts reports whether flows and conntrack of protocol p carry ports.
func hasPorts(p uint8) bool {
	switch p {
	case 6, 17, 132, 136: // TCP, UDP, SCTP, UDP-Lite
		return true
	}
	return false
}

// normalTuple is t as an index key: addresses unmapped, ports dropped for
// protocols without them.
func normalTuple(t Tuple) Tuple {
	t.Src, t.Dst = t.Src.Unmap(), t.Dst.Unmap()
	if !hasPorts(t.Proto) {
		t.SrcPort, t.DstPort = 0, 0
	}
	return t
}

// PostNAT returns, for a conntrack entry with original tuple orig and reply
// tuple reply, what a packet of each direction looks like after the
// kernel's NAT:
//
//   - a packet of the original direction (it matches orig) leaves with
//     the reverse of the reply tuple: SNAT or masquerade show as source =
//     reply destination, DNAT as destination = reply source, and the same
//     for ports;
//   - a packet of the reply direction (it matches reply) leaves with the
//     reverse of the original tuple: de-NAT back to the client.
//
// Without NAT, reply is the reverse of orig and both results equal their
// input.
func PostNAT(orig, reply Tuple) (fwd, rev Tuple) {
	return reply.Reverse(), orig.Reverse()
}

// NATIndex maps the tuple a packet has before NAT to the tuple it has
// after, for both directions of every conntrack entry.
type NATIndex map[Tuple]Tuple

// Add indexes one conntrack entry.
func (x NATIndex) Add(orig, reply Tuple) {
	orig, reply = normalTuple(orig), normalTuple(reply)
	fwd, rev := PostNAT(orig, reply)
	x[orig] = fwd
	// An entry whose reply tuple is another's original (it cannot happen
	// within one zone) keeps the original-direction meaning.
	if _, ok := x[reply]; !ok {
		x[reply] = rev
	}
}

// Lookup returns the post-NAT tuple of a packet with tuple t.
func (x NATIndex) Lookup(t Tuple) (Tuple, bool) {
	r, ok := x[normalTuple(t)]
	return r, ok
}

// tupleOf converts a netlink conntrack tuple.
func tupleOf(t *netlink.IPTuple) Tuple {
	return Tuple{Proto: t.Protocol, Src: ipAddr(t.SrcIP), Dst: ipAddr(t.DstIP), SrcPort: t.SrcPort, DstPort: t.DstPort}
}

func ipAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// indexFlows builds the index of a conntrack dump.
func indexFlows(x NATIndex, flows []*netlink.ConntrackFlow) {
	for _, f := range flows {
		x.Add(tupleOf(&f.Forward), tupleOf(&f.Reverse))
	}
}
