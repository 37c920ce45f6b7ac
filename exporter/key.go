package exporter

import (
	"fmt"
	"net/netip"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// FlowKey is the key of an exported flow: what a Flow carries from the
// moment it leaves the Cache, which alone is keyed by the kernel's
// bpf.NetFlowId. It is a comparable value type, usable as a map key. The
// zero value is not a valid key: it has no addresses.
//
// Addresses are netip.Addr: an IPv4 flow has 4-byte addresses (Is4), an
// IPv6 flow 16-byte ones, an IPv4-mapped IPv6 address included.
type FlowKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	// Proto is the IANA protocol number (6 TCP, 17 UDP, 1 ICMP ...).
	Proto uint8
	// Direction is bpf.DirectionIngress or bpf.DirectionEgress, the
	// values of flowDirection (61).
	Direction uint8
	IfIndex   uint32
	VLAN      uint16
	// TOS is the IPv4 ToS byte or the IPv6 Traffic Class.
	TOS uint8
	// ICMPType and ICMPCode are set for ICMP (over IPv4) and ICMPv6
	// flows only.
	ICMPType, ICMPCode uint8
	// Fate is what happened to the flow's packets, as an IANA
	// forwardingStatus (89) value, in router mode when the kernel
	// reports fates: FateForwarded (64), a dropped code (128 to 143),
	// or FateConsumed (192) for the records the Cache derives. 0 (an
	// arrival, or any flow outside router mode) says nothing. The packets
	// of one flow that met different fates are counted under different
	// keys, one record per fate.
	Fate uint8
}

// KeyOf returns the FlowKey of a kernel flow key.
func KeyOf(id bpf.NetFlowId) FlowKey {
	k := FlowKey{
		SrcPort:   id.SrcPort,
		DstPort:   id.DstPort,
		Proto:     id.TransportProtocol,
		Direction: id.Direction,
		IfIndex:   id.IfIndex,
		VLAN:      id.VlanId,
		TOS:       id.Tos,
		ICMPType:  id.IcmpType,
		ICMPCode:  id.IcmpCode,
		Fate:      id.Fate,
	}
	switch {
	case id.IsIPv4():
		// The kernel holds IPv4 as ::ffff:a.b.c.d.
		k.Src = netip.AddrFrom4([4]byte(id.SrcIp[12:]))
		k.Dst = netip.AddrFrom4([4]byte(id.DstIp[12:]))
	case id.Valid():
		k.Src = netip.AddrFrom16(id.SrcIp)
		k.Dst = netip.AddrFrom16(id.DstIp)
	}
	return k
}

// Valid reports whether k names a flow: it has both addresses.
func (k FlowKey) Valid() bool { return k.Src.IsValid() && k.Dst.IsValid() }

// IsIPv4 reports whether the flow is IPv4 (its addresses are 4 bytes).
func (k FlowKey) IsIPv4() bool { return k.Src.Is4() }

// EtherType is the flow's L3 ethertype: 0x0800 IPv4, 0x86dd IPv6, 0 for
// an invalid key.
func (k FlowKey) EtherType() uint16 {
	switch {
	case !k.Src.IsValid():
		return 0
	case k.Src.Is4():
		return 0x0800
	}
	return 0x86dd
}

// isICMP reports whether the flow is ICMP over IPv4 or ICMPv6 over IPv6:
// the flows of the ICMP templates.
func (k *FlowKey) isICMP() bool {
	if k.Src.Is4() {
		return k.Proto == protoICMP
	}
	return k.Proto == protoICMPv6
}

// variant is the index of the flow's template in a templates.Set.
func (k *FlowKey) variant() int {
	return templates.Variant(k.IsIPv4(), k.Direction == bpf.DirectionEgress, k.isICMP())
}

// String renders the key for humans, e.g.
// "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 egress", followed by
// " fate=N" when the key has a fate (router mode), e.g.
// "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 ingress fate=131".
func (k FlowKey) String() string {
	if !k.Valid() {
		return "invalid flow key"
	}
	src := netip.AddrPortFrom(k.Src, k.SrcPort)
	dst := netip.AddrPortFrom(k.Dst, k.DstPort)
	s := fmt.Sprintf("%s %s -> %s if=%d %s", bpf.ProtocolName(k.Proto), src, dst, k.IfIndex, directionName(k.Direction))
	if k.Fate != 0 {
		s += fmt.Sprintf(" fate=%d", k.Fate)
	}
	return s
}
