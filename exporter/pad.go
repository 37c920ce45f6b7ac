package exporter

import "encoding/binary"

// Padding full IPFIX messages to the maximum size, for UDP GSO
// (PadForGSO).
//
// Exact fill (fill.go) makes every message of an export L bytes long by
// choosing its records, with at most 3 octets of padding per data set,
// which every collector takes; L is the longest length the export's mix
// of templates can fill, and a message whose remaining mix cannot fill
// it ends its GSO run. With IPFIXConfig.PadForGSO, L is the maximum size
// whatever the mix, and a message exact fill leaves short of it (but the
// export's last, which only ends the run) is padded to exactly L, so an
// export is one send whatever its mix.
//
// The padding is what RFC 7011 section 3.3.1 allows at the end of a Set:
// zero octets, counted in the Set Length, and shorter than any record of
// that Set, so a collector can never read it as a record. The gap to L
// is spread over the message's flow data sets, each taking, with what
// exact fill gave it, fewer octets than its record length, from the last
// set back. Options data sets (whose records may hold variable-length
// strings) and template sets get none. If the flow data sets cannot take
// the whole gap, the message stays as it is: it ends a GSO run, nothing
// else.
//
// Padding goes with exact fill: only IPFIX, only for a writer that
// reports GSO. It is off by default, and since exact fill it adds little
// (for mixed traffic exact fill reaches the maximum size by itself; it
// pads exports of one or two templates, whose record lengths cannot add
// up to it): nfcapd (nfdump 1.7.1) tries to read padding of 4 octets or
// more as another record; it stores every real record but logs an error
// for each such set (1 to 3 octets, alignment padding, it takes
// silently, which is why exact fill pads no more). goflow2,
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

// padMessage pads the message to l octets if its flow data sets can take
// the gap (see the top of this file). Its sets are closed.
func (e *encoder) padMessage(l int) {
	gap := l - len(e.buf)
	if gap <= 0 || e.nPadSets == 0 {
		return
	}
	sets := e.padSets[:e.nPadSets]
	var pad [len(e.padSets)]int
	left := gap
	for i := len(sets) - 1; i >= 0 && left > 0; i-- {
		// Less than a record in all, with what exact fill put in.
		had := (int(binary.BigEndian.Uint16(e.buf[sets[i].start+2:])) - setHeaderLen) % sets[i].recLen
		p := min(left, sets[i].recLen-1-had)
		pad[i] = p
		left -= p
	}
	if left > 0 {
		return
	}
	end := len(e.buf)
	e.buf = e.buf[:l]
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
