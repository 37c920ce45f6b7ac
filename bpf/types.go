package bpf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
	"unsafe"
)

const (
	// DirectionUnset is a convenience value to specify an unset/removed
	// direction field.
	DirectionUnset = 0xFF
	// DirectionIngress and DirectionEgress are the values of IANA IPFIX
	// element 61 (flowDirection).
	DirectionIngress = 0
	DirectionEgress  = 1
	// InterfaceUnset marks an unknown interface index.
	InterfaceUnset = 0xFFFFFFFF
)

// IPAddr encodes IPv4 and IPv6 addresses with a fixed length of 16 bytes.
// IPv4 addresses are IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, RFC 4038
// section 4.2), as in the kernel's flow key.
type IPAddr [16]uint8

// Addr returns the address as a netip.Addr, unmapped for IPv4.
func (ia IPAddr) Addr() netip.Addr {
	return netip.AddrFrom16(ia).Unmap()
}

// Is4 reports whether the address is an IPv4-mapped address.
func (ia IPAddr) Is4() bool {
	return netip.AddrFrom16(ia).Is4In6()
}

// IntEncodeV4 encodes an IPv4 address as an integer in network byte order.
// It assumes the address is IPv4: for an IPv6 address it encodes the last
// four bytes.
func (ia *IPAddr) IntEncodeV4() uint32 {
	return binary.BigEndian.Uint32(ia[12:16])
}

// String returns the address in its usual text form.
func (ia IPAddr) String() string {
	return ia.Addr().String()
}

// MarshalJSON encodes the address as a JSON string.
func (ia *IPAddr) MarshalJSON() ([]byte, error) {
	return json.Marshal(ia.String())
}

// IPAddrFrom returns the IPAddr of a netip.Addr (IPv4 is mapped).
func IPAddrFrom(a netip.Addr) IPAddr {
	return IPAddr(a.As16())
}

// NetFlowId is the flow key the kernel aggregates by: the C typedef
// flow_id, generated as NetFlowIdT (bpf2go names only map key types; the
// maps are keyed by its IPv4 form NetFlowId4 and by NetFlowId6, its first
// 48 bytes). It is a comparable value type, usable as a Go map key; the
// zero value is not a valid flow (it has no ethertype).
type NetFlowId NetFlowIdT

// Valid reports whether the key names a flow: it has an L3 protocol.
func (id NetFlowId) Valid() bool {
	return id.EthProtocol != 0
}

// SrcAddr returns the source address.
func (id NetFlowId) SrcAddr() netip.Addr { return IPAddr(id.SrcIp).Addr() }

// DstAddr returns the destination address.
func (id NetFlowId) DstAddr() netip.Addr { return IPAddr(id.DstIp).Addr() }

// IsIPv4 reports whether the flow is IPv4.
func (id NetFlowId) IsIPv4() bool { return id.EthProtocol == 0x0800 }

// String renders the key for humans, e.g.
// "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 egress".
func (id NetFlowId) String() string {
	dir := "ingress"
	if id.Direction == DirectionEgress {
		dir = "egress"
	}
	src := netip.AddrPortFrom(id.SrcAddr(), id.SrcPort)
	dst := netip.AddrPortFrom(id.DstAddr(), id.DstPort)
	return fmt.Sprintf("%s %s -> %s if=%d %s", ProtocolName(id.TransportProtocol), src, dst, id.IfIndex, dir)
}

// ProtocolName returns a short name of an IANA protocol number.
func ProtocolName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	case 132:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", p)
}

// NetFlowMetrics (generated from the C typedef flow_metrics) is what the
// kernel counts for one flow on one CPU, and what Drain hands out for one
// flow. Timestamps are CLOCK_MONOTONIC nanoseconds.

// Accumulate adds src to fm: counts add up, the time span widens and TCP
// flags are OR-ed. An empty src (a CPU that never saw the flow) changes
// nothing. A src with bytes but no packets (a drain's bytes of packets
// already handed out, see flowMaps.delta, or a CPU read between its
// increments) adds only its bytes.
func (fm *NetFlowMetrics) Accumulate(src *NetFlowMetrics) {
	if src.Packets == 0 {
		fm.Bytes += src.Bytes
		return
	}
	if fm.Packets == 0 || (src.StartMonoTimeTs != 0 && src.StartMonoTimeTs < fm.StartMonoTimeTs) {
		fm.StartMonoTimeTs = src.StartMonoTimeTs
	}
	// The egress interface of the packet seen last (router mode's
	// forwarded records; 0 elsewhere).
	if src.EndMonoTimeTs >= fm.EndMonoTimeTs && src.OutIfIndex != 0 {
		fm.OutIfIndex = src.OutIfIndex
	}
	if src.EndMonoTimeTs > fm.EndMonoTimeTs {
		fm.EndMonoTimeTs = src.EndMonoTimeTs
	}
	fm.Packets += src.Packets
	fm.Bytes += src.Bytes
	fm.Flags |= src.Flags
	// Only a sampling change while the flow runs makes these differ; the
	// coarser rate is the honest one to report.
	fm.Sampling = max(fm.Sampling, src.Sampling)
}

// Record is one flow's key and metrics as the direct_flows ring buffer
// delivers them (see DecodeRecord): one packet the kernel could not
// aggregate. It holds NetFlowId and NetFlowMetrics rather than the
// generated NetFlowRecordT, whose fields have the raw generated types
// without their methods.
type Record struct {
	Id      NetFlowId
	Metrics NetFlowMetrics
}

// DecodeRecord decodes a direct_flows record.
func DecodeRecord(raw []byte) (Record, error) {
	var r NetFlowRecordT
	if len(raw) < int(unsafe.Sizeof(r)) {
		return Record{}, fmt.Errorf("decode record: %d bytes, want %d", len(raw), unsafe.Sizeof(r))
	}
	r = *(*NetFlowRecordT)(unsafe.Pointer(&raw[0]))
	return Record{Id: NetFlowId(r.Id), Metrics: NetFlowMetrics(r.Metrics)}, nil
}

// MonoToTime converts a CLOCK_MONOTONIC timestamp in nanoseconds to wall
// time, given a simultaneous reading of both clocks.
func MonoToTime(mono uint64, nowWall time.Time, nowMono time.Duration) time.Time {
	return nowWall.Add(time.Duration(int64(mono) - int64(nowMono)))
}

// id returns the flow key of an IPv4 key: addresses mapped into
// ::ffff:0:0/96, ethertype 0x0800.
func (k NetFlowId4) id() NetFlowId {
	id := NetFlowId{
		EthProtocol:       0x0800,
		IfIndex:           k.IfIndex,
		SrcPort:           k.SrcPort,
		DstPort:           k.DstPort,
		VlanId:            k.VlanId,
		TransportProtocol: k.TransportProtocol,
		Direction:         k.Direction,
		IcmpType:          k.IcmpType,
		IcmpCode:          k.IcmpCode,
		Tos:               k.Tos,
	}
	id.SrcIp[10], id.SrcIp[11] = 0xff, 0xff
	id.DstIp[10], id.DstIp[11] = 0xff, 0xff
	copy(id.SrcIp[12:], k.SrcIp[:])
	copy(id.DstIp[12:], k.DstIp[:])
	return id
}

// id returns the flow key of an IPv6 key: the same fields, ethertype
// 0x86dd.
func (k NetFlowId6) id() NetFlowId {
	return NetFlowId{
		SrcIp:             k.SrcIp,
		DstIp:             k.DstIp,
		EthProtocol:       0x86dd,
		IfIndex:           k.IfIndex,
		SrcPort:           k.SrcPort,
		DstPort:           k.DstPort,
		VlanId:            k.VlanId,
		TransportProtocol: k.TransportProtocol,
		Direction:         k.Direction,
		IcmpType:          k.IcmpType,
		IcmpCode:          k.IcmpCode,
		Tos:               k.Tos,
	}
}
