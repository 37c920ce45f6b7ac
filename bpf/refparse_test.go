package bpf

// refParse is a reference for what the kernel programs must record for one
// Ethernet frame, written from the protocol specifications rather than from
// c/parse.h, for the differential fuzz test (fuzz_test.go). It is slow and
// plain on purpose: every rule is one if statement with its source.
//
//   - Ethernet II (IEEE 802.3 clause 3.2.6): destination, source, type; at
//     least 14 bytes.
//   - IEEE 802.1Q C-tag (TPID 0x8100) and 802.1ad S-tag (0x88a8): 2-byte
//     TPID, 2-byte TCI whose low 12 bits are the VID. hostflow reads up to
//     two tags and keys by the outermost VID; a third tag leaves no IP type.
//   - IPv4 (RFC 791): the type of service byte (byte 1, DSCP and ECN
//     since RFC 2474 and RFC 3168) is kept as the key's tos; version 4, IHL in 32-bit words (at least 5), total
//     length covering header and data (0 is accepted: TSO and BIG TCP
//     leave it unset); the fragment offset (low 13 bits of bytes 6-7) is
//     non-zero on every fragment but the first, which alone carries the
//     transport header (RFC 791, RFC 1858).
//   - IPv6 (RFC 8200): version 6, Traffic Class (the 8 bits after the
//     version) kept as the key's tos, 40-byte header, payload length (0 for
//     jumbograms, RFC 2675); extension headers hop-by-hop (0), routing
//     (43), destination options (60) are (len+1)*8 bytes, fragment (44) is
//     8 bytes with the offset in the high 13 bits of bytes 2-3, AH (51,
//     RFC 4302) is (len+2)*4 bytes. hostflow walks at most 8 of them.
//   - TCP (RFC 9293) header at least 20 bytes, flags in byte 13 and NS
//     (RFC 3540) in the low bit of byte 12; UDP (RFC 768), UDP-Lite
//     (RFC 3828) 8 bytes; SCTP common header (RFC 9260) 12 bytes; all
//     start with the source and destination ports. ICMP (RFC 792) messages
//     have an 8-byte header, ICMPv6 (RFC 4443) at least type, code and
//     checksum (4 bytes).
//
// What a header needs must lie inside the IP packet: the frame, cut at the
// length the IP header declares (the rest is Ethernet padding or a
// trailer, never IP). A packet that cannot hold its own headers is
// malformed. Bytes are the IP packet's: from the IP header to that end.

import "encoding/binary"

// refVerdict is what the programs must do with a frame.
type refVerdict int

const (
	refFlow refVerdict = iota
	refNotIP
	refMalformed
)

func (v refVerdict) String() string {
	return [...]string{"flow", "not IP", "malformed"}[v]
}

// refResult is the reference's answer for one frame. key has no IfIndex
// and no Direction: those come from the hook, not the frame.
type refResult struct {
	verdict refVerdict
	key     NetFlowId
	bytes   uint64
	flags   uint16
}

const (
	refMaxTags       = 2
	refMaxExtHeaders = 8
)

// refParse parses frame, which must be at least 14 bytes long.
func refParse(frame []byte) refResult {
	var r refResult
	typ := binary.BigEndian.Uint16(frame[12:14])
	rest := frame[14:]
	for tags := 0; tags < refMaxTags && (typ == 0x8100 || typ == 0x88a8); tags++ {
		if len(rest) < 4 {
			return refResult{verdict: refMalformed}
		}
		if tags == 0 {
			r.key.VlanId = binary.BigEndian.Uint16(rest[0:2]) & 0x0fff
		}
		typ = binary.BigEndian.Uint16(rest[2:4])
		rest = rest[4:]
	}
	r.key.EthProtocol = typ
	switch typ {
	case 0x0800:
		return refIPv4(r, rest)
	case 0x86dd:
		return refIPv6(r, rest)
	}
	return refResult{verdict: refNotIP}
}

func refIPv4(r refResult, pkt []byte) refResult {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return refResult{verdict: refMalformed}
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 {
		return refResult{verdict: refMalformed}
	}
	if total := int(binary.BigEndian.Uint16(pkt[2:4])); total != 0 {
		if total < ihl {
			return refResult{verdict: refMalformed}
		}
		pkt = pkt[:min(total, len(pkt))]
	}
	if len(pkt) < ihl {
		return refResult{verdict: refMalformed}
	}
	r.key.SrcIp = [16]uint8{10: 0xff, 11: 0xff}
	r.key.DstIp = r.key.SrcIp
	copy(r.key.SrcIp[12:], pkt[12:16])
	copy(r.key.DstIp[12:], pkt[16:20])
	r.key.TransportProtocol = pkt[9]
	r.key.Tos = pkt[1]
	r.bytes = uint64(len(pkt))
	if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		return r // a later fragment: no transport header
	}
	return refTransport(r, pkt[ihl:])
}

func refIPv6(r refResult, pkt []byte) refResult {
	if len(pkt) < 40 || pkt[0]>>4 != 6 {
		return refResult{verdict: refMalformed}
	}
	if payload := int(binary.BigEndian.Uint16(pkt[4:6])); payload != 0 {
		pkt = pkt[:min(40+payload, len(pkt))]
	}
	copy(r.key.SrcIp[:], pkt[8:24])
	copy(r.key.DstIp[:], pkt[24:40])
	r.key.Tos = uint8(binary.BigEndian.Uint16(pkt[0:2]) >> 4)
	r.bytes = uint64(len(pkt))
	next := pkt[6]
	rest := pkt[40:]
	for i := 0; i < refMaxExtHeaders; i++ {
		var n int
		switch next {
		case 0, 43, 60:
			if len(rest) < 8 {
				return refResult{verdict: refMalformed}
			}
			n = (int(rest[1]) + 1) * 8
		case 51:
			if len(rest) < 8 {
				return refResult{verdict: refMalformed}
			}
			n = (int(rest[1]) + 2) * 4
		case 44:
			if len(rest) < 8 {
				return refResult{verdict: refMalformed}
			}
			if binary.BigEndian.Uint16(rest[2:4])>>3 != 0 {
				r.key.TransportProtocol = rest[0]
				return r // a later fragment: no transport header
			}
			n = 8
		default:
			r.key.TransportProtocol = next
			return refTransport(r, rest)
		}
		if len(rest) < n {
			return refResult{verdict: refMalformed}
		}
		next = rest[0]
		rest = rest[n:]
	}
	// More extension headers than hostflow walks: keyed by the last
	// next-header value, without ports.
	r.key.TransportProtocol = next
	if next == 0 || next == 43 || next == 60 || next == 44 || next == 51 {
		return r
	}
	return refTransport(r, rest)
}

// refTransport reads ports, ICMP type and code, or TCP flags from l4, the
// rest of the IP packet.
func refTransport(r refResult, l4 []byte) refResult {
	need := map[uint8]int{6: 20, 17: 8, 136: 8, 132: 12, 1: 8, 58: 4}
	n, ok := need[r.key.TransportProtocol]
	if !ok {
		return r
	}
	if len(l4) < n {
		return refResult{verdict: refMalformed}
	}
	switch r.key.TransportProtocol {
	case 1, 58:
		r.key.IcmpType, r.key.IcmpCode = l4[0], l4[1]
		return r
	case 6:
		r.flags = uint16(l4[12]&0x01)<<8 | uint16(l4[13])
	}
	r.key.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	r.key.DstPort = binary.BigEndian.Uint16(l4[2:4])
	return r
}
