package bpf

// A small hand-written frame builder for the parser tests: just enough
// Ethernet, 802.1Q/802.1ad, IPv4, IPv6 (with extension headers), TCP, UDP,
// SCTP, ICMP and ARP to exercise every branch of c/parse.h. Checksums are
// filled where cheap (IPv4 header, ICMP); the programs never check them.

import (
	"encoding/binary"
	"net/netip"
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeARP  = 0x0806
	tpid8021Q     = 0x8100
	tpid8021AD    = 0x88a8

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoHop    = 0
	protoRoute  = 43
	protoFrag   = 44
	protoAH     = 51
	protoICMPv6 = 58
	protoDstOpt = 60
	protoSCTP   = 132

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
	tcpNS  = 0x100
)

var (
	macSrc = [6]byte{0x02, 0x48, 0x46, 0x00, 0x00, 0x01}
	macDst = [6]byte{0x02, 0x48, 0x46, 0x00, 0x00, 0x02}
)

// vlanTag is one 802.1Q or 802.1ad tag.
type vlanTag struct {
	tpid uint16
	vid  uint16
	pcp  uint8
}

// ether builds an Ethernet frame with the given tags (outermost first)
// around an L3 payload of type etherType.
func ether(etherType uint16, tags []vlanTag, l3 []byte) []byte {
	b := make([]byte, 0, 14+4*len(tags)+len(l3))
	b = append(b, macDst[:]...)
	b = append(b, macSrc[:]...)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t.tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(t.pcp)<<13|t.vid&0x0fff)
	}
	b = binary.BigEndian.AppendUint16(b, etherType)
	return append(b, l3...)
}

// ipv4 describes an IPv4 header.
type ipv4 struct {
	src, dst netip.Addr
	proto    uint8
	options  []byte // a multiple of 4 bytes: IHL = 5 + len/4
	fragOff  uint16 // in 8-byte units
	mf       bool   // more fragments
	ttl      uint8
	tos      uint8 // type of service byte: DSCP << 2 | ECN
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func (h ipv4) build(payload []byte) []byte {
	if len(h.options)%4 != 0 {
		panic("IPv4 options must be a multiple of 4 bytes")
	}
	hl := 20 + len(h.options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = h.tos
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x4846) // identification
	fo := h.fragOff & 0x1fff
	if h.mf {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = h.ttl
	if b[8] == 0 {
		b[8] = 64
	}
	b[9] = h.proto
	s, d := h.src.As4(), h.dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], h.options)
	binary.BigEndian.PutUint16(b[10:], checksum(b[:hl]))
	return append(b, payload...)
}

// ipv6Ext is one IPv6 extension header. Its next-header byte is filled by
// ipv6.build.
type ipv6Ext struct {
	proto uint8
	// length in bytes: a multiple of 8 for hop-by-hop, routing and
	// destination options (at least 8), a multiple of 4 for AH (at least
	// 12); ignored for the fragment header (always 8).
	length  int
	fragOff uint16 // fragment header: offset in 8-byte units
	mf      bool   // fragment header: more fragments
}

func (e ipv6Ext) build(next uint8) []byte {
	switch e.proto {
	case protoFrag:
		b := make([]byte, 8)
		b[0] = next
		fo := e.fragOff << 3
		if e.mf {
			fo |= 1
		}
		binary.BigEndian.PutUint16(b[2:], fo)
		binary.BigEndian.PutUint32(b[4:], 0x48464846)
		return b
	case protoAH:
		b := make([]byte, e.length)
		b[0] = next
		b[1] = byte(e.length/4 - 2)
		binary.BigEndian.PutUint32(b[4:], 0x100) // SPI
		binary.BigEndian.PutUint32(b[8:], 1)     // sequence
		return b
	default: // hop-by-hop, routing, destination options
		b := make([]byte, e.length)
		b[0] = next
		b[1] = byte(e.length/8 - 1)
		if e.proto == protoRoute {
			b[2] = 4 // segment routing; segments left 0
		} else if e.length > 2 {
			// One PadN option filling the rest of the header.
			b[2] = 1
			b[3] = byte(e.length - 4)
		}
		return b
	}
}

// ipv6 describes an IPv6 header and its extension header chain.
type ipv6 struct {
	src, dst netip.Addr
	exts     []ipv6Ext
	proto    uint8 // transport protocol after the chain
	tclass   uint8 // Traffic Class: DSCP << 2 | ECN
	flow     uint32
}

func (h ipv6) build(payload []byte) []byte {
	var chain []byte
	for i, e := range h.exts {
		next := h.proto
		if i+1 < len(h.exts) {
			next = h.exts[i+1].proto
		}
		chain = append(chain, e.build(next)...)
	}
	first := h.proto
	if len(h.exts) > 0 {
		first = h.exts[0].proto
	}
	b := make([]byte, 40, 40+len(chain)+len(payload))
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(h.tclass)<<20|h.flow&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(payload)))
	b[6] = first
	b[7] = 64
	s, d := h.src.As16(), h.dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	b = append(b, chain...)
	return append(b, payload...)
}

// tcp builds a TCP header with the given flags (NS included) and options
// (a multiple of 4 bytes), followed by payload.
func tcp(sport, dport uint16, flags uint16, options, payload []byte) []byte {
	hl := 20 + len(options)
	b := make([]byte, hl, hl+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12] = byte(hl/4)<<4 | byte(flags>>8&0x01)
	b[13] = byte(flags)
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], options)
	return append(b, payload...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func sctp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 12, 12+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0xdeadbeef) // verification tag
	return append(b, payload...)
}

// icmpEcho builds an ICMP (or ICMPv6: same layout, checksum not covering
// the pseudo-header) message of the given type and code with an echo
// identifier and sequence.
func icmpEcho(typ, code uint8, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

// arpRequest builds an ARP who-has for target from sender.
func arpRequest(sender, target netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(b[2:], etherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:], macSrc[:])
	s, d := sender.As4(), target.As4()
	copy(b[14:], s[:])
	copy(b[24:], d[:])
	return b
}

func bytesN(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}
