package exporter

import "encoding/binary"

// Padding full IPFIX messages to one length, for UDP GSO.
//
// A UDPWriter with GSO sends a run of messages of one length L (the last
// possibly shorter) as one send, cut by the kernel into one datagram per
// message; a message of another length starts a new send, which costs
// several times more than a datagram of a run. Records of different
// templates differ in length, so the messages the packer fills differ by
// a few dozen bytes, and a 256-flow export went out as 5 sends instead
// of 1. With padding, every message the packer sends because the next
// record did not fit is padded to exactly max bytes, so an export (all
// but its last message, which only ends the run) is one send.
//
// The padding is what RFC 7011 section 3.3.1 allows at the end of a Set:
// zero octets, counted in the Set Length, and shorter than any record of
// that Set, so a collector can never read it as a record. The gap to
// max is spread over the message's flow data sets, each taking fewer
// octets than its record length, from the last set back. Options data
// sets (whose records may hold variable-length strings) and template
// sets get none. If the flow data sets cannot take the whole gap, the
// message stays as it is: it ends a GSO run, nothing else.
//
// Only IPFIX pads, only if IPFIXConfig.PadForGSO asks for it, and only
// for a writer that reports GSO (UDPWriter's GSO method): without GSO
// (no batching, NoGSO, a route that refused it) and over TCP, TLS or
// SCTP, message lengths cost nothing and padding would only add bytes.
// NetFlow v9 is left as it is. It is off by default because nfcapd
// (nfdump 1.7.1) tries to read padding of 4 octets or more as another
// record: it stores every real record but logs an error for each padded
// set (1 to 3 octets, alignment padding, it takes silently). goflow2,
// pmacct's nfacctd, libfixbuf and Wireshark decode padded messages
// cleanly (TestIPFIXPadDecodes, TestPeerNfacctd, TestTshark,
// TestIPFIXDump).

// gsoWriter is a writer that sends runs of equal-length messages
// cheaper: a UDPWriter.
type gsoWriter interface{ GSO() bool }

// padSet is a flow data set of the message being built.
type padSet struct {
	start  int // offset of the set header
	recLen int // length of its records, all equal
}

// notePadSet records that the set just opened holds records of recLen.
func (e *encoder) notePadSet(recLen int) {
	if e.nPadSets < len(e.padSets) {
		e.padSets[e.nPadSets] = padSet{start: e.setStart, recLen: recLen}
		e.nPadSets++
	}
}

// padMessage pads the message to max octets if its flow data sets can
// take the gap (see the top of this file).
func (e *encoder) padMessage() {
	gap := e.max - len(e.buf)
	if gap <= 0 || e.nPadSets == 0 {
		return
	}
	sets := e.padSets[:e.nPadSets]
	var pad [len(e.padSets)]int
	left := gap
	for i := len(sets) - 1; i >= 0 && left > 0; i-- {
		p := min(left, sets[i].recLen-1)
		pad[i] = p
		left -= p
	}
	if left > 0 {
		return
	}
	e.closeSet()
	end := len(e.buf)
	e.buf = e.buf[:e.max]
	// From the last set back, move each set (with whatever follows it
	// up to the next one) by the padding of the sets before it, then
	// zero its padding and count it in its length.
	shift := gap
	for i := len(sets) - 1; i >= 0; i-- {
		s := sets[i].start
		shift -= pad[i]
		setLen := int(binary.BigEndian.Uint16(e.buf[s+2:]))
		seg := e.buf[s:end]
		ns := s + shift
		copy(e.buf[ns+setLen+pad[i]:], seg[setLen:])
		copy(e.buf[ns:ns+setLen], seg[:setLen])
		clear(e.buf[ns+setLen : ns+setLen+pad[i]])
		binary.BigEndian.PutUint16(e.buf[ns+2:], uint16(setLen+pad[i]))
		end = s
	}
}
