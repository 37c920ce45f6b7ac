package exporter

import (
	"math/bits"
	"slices"

	"github.com/hostflow/hostflow/templates"
)

// Exact fill: IPFIX messages of one length for UDP GSO, without padding
// that a collector could mistake for a record.
//
// A UDPWriter with GSO sends a run of messages of one length L (the last
// of the run possibly shorter) as one send, which the kernel cuts into
// one datagram per message; a message of another length starts a new
// send, which costs several times a datagram of a run. Records of the
// templates differ in length (56, 80, 54 and 78 bytes in the default
// set), so messages filled in template order, each as full as the next
// record allows, differ by a few dozen bytes: the benchmark's 256-flow
// exports went out in 7.85 sends each on average.
//
// Records of an export may go in any order and in any message: each is
// self-contained, and a message holds one data set per template. So for
// a writer that reports GSO, the IPFIX encoder chooses how many records
// of each template each message takes, so that every message is exactly
// L bytes long. A data set may end in up to 3 octets of padding (RFC
// 7011 section 3.3.1: zeros, counted in the Set Length, fewer than one
// record of the set), which the collectors take as alignment padding
// (nfcapd, which misreads padding of 4 octets or more, included), so a
// message with k data sets can take up to 3k octets of slack.
//
// L is the longest message up to the maximum size that the export's
// records can fill exactly (search on all of them): the maximum size
// itself for mixed traffic. Each message then takes the plan for the room
// it has left. A message that cannot be exactly L (the last one, whose
// records run out, and the rare one whose remaining mix cannot reach L)
// is as full as the mix allows below L: it ends the run it is in, and the
// next messages aim at its length, for a run of their own. A message
// carrying templates or options data (the first of an export, when due)
// is L if it can be, else as full as it can be up to the maximum size: it
// stands alone. With PadForGSO, L is the maximum size, and padding makes
// up what exact fill leaves short (pad.go).
//
// search is a bounded search: whole records, in proportion to what is
// left of each template, fill the message up to fillWindow bytes short of
// the target (the prefix), then a reachability bitset over the last
// fillWindow bytes, built one template at a time (k more records of it,
// k up to what is left, plus its set header if it is new, plus 0 to 3
// octets of padding), gives every length the templates can reach; the
// longest up to the target is traced back to counts per template. The
// proportional prefix keeps what is left of the export in its mix, so
// that its last messages can still be filled. Near the end of an export,
// searchRest instead looks for the records to leave out of all that is
// left, and plan looks one message ahead (restFills). A search is a few
// hundred word operations; plan makes one a message, but where the mix
// cannot fill L (up to 10, once per room).
//
// Only IPFIX fills exactly, and only for a writer that reports GSO
// (gsoWriter, a UDPWriter with batching and GSO): without GSO, message
// lengths cost nothing and the packer keeps the records in template
// order, as full as they go, byte for byte what it sent before; NetFlow
// v9 (whose sets are aligned to 4 bytes) and TCP, TLS and SCTP are left
// as they are.

const (
	// fillWords is the size of the reachability bitset, in words.
	fillWords = 4
	// fillWindow is the last part of a message that plan searches
	// exhaustively, in bytes: offsets 0 to fillWindow.
	fillWindow = fillWords*64 - 1
	// maxSetPad is the most padding a data set gets: nfcapd 1.7.1 reads
	// 4 octets or more as another record.
	maxSetPad = 3
)

// fillBits is a set of offsets 0 to fillWindow.
type fillBits [fillWords]uint64

// orShifted adds every offset of a, plus s, to b (dropping those past the
// window).
func (b *fillBits) orShifted(a *fillBits, s int) {
	w, r := s/64, uint(s%64)
	if w >= fillWords {
		return
	}
	b[w] |= a[0] << r
	for i := w + 1; i < fillWords; i++ {
		// A shift by 64 gives 0: nothing carries when r is 0.
		b[i] |= a[i-w]<<r | a[i-w-1]>>(64-r)
	}
}

// smear adds to b every offset of b plus 1 to n (n at most 3).
func (b *fillBits) smear(n int) {
	if n <= 0 {
		return
	}
	a := *b
	b.orShifted(&a, 1) // +0..1
	switch n {
	case 2:
		b.orShifted(&a, 2)
	case 3:
		a = *b
		b.orShifted(&a, 2) // +0..3
	}
}

func (b *fillBits) has(i int) bool {
	return i >= 0 && i <= fillWindow && b[i/64]>>(i%64)&1 != 0
}

// below returns the largest offset in b that is at most i, or -1.
func (b *fillBits) below(i int) int {
	i = min(i, fillWindow)
	for w := i / 64; w >= 0; w-- {
		x := b[w]
		if w == i/64 {
			x &= 2<<(i%64) - 1 // overflows to all ones for bit 63
		}
		if x != 0 {
			return w*64 + 63 - bits.LeadingZeros64(x)
		}
	}
	return -1
}

// fillState is the exact-fill packer's state for one export, reused.
type fillState struct {
	avail [templates.NumTemplates]int // records of each template not placed yet
	// order holds the export's flow indexes by template, each
	// template's in the export's order; next[t] is where t's not placed
	// yet start. order grows to the largest export, then allocates no
	// more.
	order []int32
	next  [templates.NumTemplates]int
	// The plan for a message: records and padding octets of each
	// template's set.
	count, pad [templates.NumTemplates]int
	// maxK[t] is how many more records of t the search could add.
	maxK [templates.NumTemplates]int
	// reach[t] is the offsets past the prefix that templates 0..t reach.
	reach [templates.NumTemplates]fillBits
	// lastRoom is the room of the plan in count and pad (-1: none),
	// lastGot the bytes it fills.
	lastRoom, lastGot int
}

// setPad is the most padding a set of records of length recLen takes:
// fewer octets than a record, and at most maxSetPad.
func setPad(recLen int) int { return min(maxSetPad, recLen-1) }

// plan chooses the records (from fill.avail) and padding of data sets
// that fill room bytes, or as many bytes up to room as they can, into
// fill.count and fill.pad, and returns the bytes they take (set headers
// included).
//
// The plan of the last message, if it was for the same room and could
// not fill it, is taken again while the records last. Otherwise search
// builds the prefix in proportion to what is left of each template; if
// that cannot fill room, searchRest tries leaving records out of all that
// is left, then search builds the prefix from each template first in
// turn; the fullest plan wins. Near the end of the export, a plan that fills room but leaves a
// rest that cannot fill the next message (of room next) and a last one
// gives way to the next candidate that does, if any.
func (e *encoder) plan(room, next int) int {
	f := &e.fill
	if room <= 0 {
		f.count, f.pad = [templates.NumTemplates]int{}, [templates.NumTemplates]int{}
		f.lastRoom = -1
		return 0
	}
	if room == f.lastRoom && f.lastGot < room {
		// The last message could not fill room: with fewer records
		// left, this one will not either, and searching again for
		// each message of a mix that cannot would cost the most.
		again := true
		for t, c := range f.count {
			again = again && c <= f.avail[t]
		}
		if again {
			return f.lastGot
		}
	}
	best, bestCount, bestPad := -1, f.count, f.pad
	exact := false // best fills room, but not the rest
	for lead := -2; lead < len(f.avail); lead++ {
		var got int
		switch {
		case lead == -2:
			got = e.search(room, -1)
		case lead == -1:
			if !e.searchRest(room) {
				continue
			}
			got = room
		case f.avail[lead] == 0:
			continue
		default:
			got = e.search(room, lead)
		}
		if got == room {
			if e.restFills(next) {
				best, bestCount, bestPad = got, f.count, f.pad
				break
			}
			if exact {
				continue
			}
			exact = true
			best, bestCount, bestPad = got, f.count, f.pad
		}
		if got > best {
			best, bestCount, bestPad = got, f.count, f.pad
		}
	}
	f.count, f.pad = bestCount, bestPad
	f.lastRoom, f.lastGot = room, best
	return best
}

// restFills reports whether what the plan leaves of the export either
// is not near its end or can fill a message of room next exactly, with
// the rest in a last message (searchRest). It keeps the plan.
func (e *encoder) restFills(next int) bool {
	f := &e.fill
	count, pad, avail := f.count, f.pad, f.avail
	for t, c := range count {
		f.avail[t] -= c
	}
	ok := !e.nearEnd(next) || e.searchRest(next)
	f.count, f.pad, f.avail = count, pad, avail
	return ok
}

// search is plan's bounded search, the prefix starting with template
// lead if it is not -1.
func (e *encoder) search(room, lead int) int {
	f := &e.fill
	f.count, f.pad = [templates.NumTemplates]int{}, [templates.NumTemplates]int{}
	if room <= 0 {
		return 0
	}
	// The prefix: whole records, up to no more than fillWindow bytes
	// short of room.
	used := 0
	if lead < 0 && room > fillWindow {
		// In proportion to what is left of each template, so that
		// what is left keeps the export's mix.
		total := 0
		for t, a := range f.avail {
			total += a * e.compiled[t].recLen
		}
		budget := room - fillWindow
		if total > budget {
			// a*budget/total, with one division.
			scale := budget << 20 / total
			for t, a := range f.avail {
				if k := a * scale >> 20; k > 0 {
					f.count[t] = k
					used += setHeaderLen + k*e.compiled[t].recLen
				}
			}
		}
	}
	// Then lead's, then the most plentiful template's.
	for room-used > fillWindow {
		t, most := -1, 0
		for i := range f.avail {
			if a := f.avail[i] - f.count[i]; a > most {
				t, most = i, a
			}
		}
		if lead >= 0 && f.avail[lead] > f.count[lead] {
			t, most = lead, f.avail[lead]-f.count[lead]
		}
		if t < 0 {
			// Every record is in, with room to spare.
			return used
		}
		r := e.compiled[t].recLen
		hdr := 0
		if f.count[t] == 0 {
			hdr = setHeaderLen
		}
		// Enough records to come within fillWindow of room, but no
		// more than fit (a record may be longer than the window).
		k := min(max((room-fillWindow-used-hdr+r-1)/r, 1), most, (room-used-hdr)/r)
		if k <= 0 {
			break
		}
		f.count[t] += k
		used += hdr + k*r
	}
	target := room - used
	// Offsets reachable past the prefix, one template at a time, until
	// target is: the templates after take no more records.
	prev, last := fillBits{1}, -1
	for t := range f.reach {
		if prev.has(target) {
			break
		}
		last = t
		r := e.compiled[t].recLen
		k := min(f.avail[t]-f.count[t], target/r)
		f.maxK[t] = k
		if k == 0 && f.count[t] == 0 {
			f.reach[t] = prev
			continue
		}
		var more fillBits // k' more records, 1 <= k' <= k
		for i := 1; i <= k; i++ {
			more.orShifted(&prev, i*r)
		}
		cur := &f.reach[t]
		if f.count[t] > 0 {
			// The set is open: no header, and its padding whether
			// or not it takes more records.
			*cur = prev
			for w := range cur {
				cur[w] |= more[w]
			}
			cur.smear(setPad(r))
		} else {
			more.smear(setPad(r))
			*cur = prev
			cur.orShifted(&more, setHeaderLen)
		}
		prev = *cur
	}
	best := prev.below(target)
	// Trace back: which k and padding of each template got to best.
	x := best
	for t := last; t >= 0; t-- {
		before := &fillBits{1}
		if t > 0 {
			before = &f.reach[t-1]
		}
		r, open, pmax := e.compiled[t].recLen, f.count[t] > 0, setPad(e.compiled[t].recLen)
		if !open && before.has(x) {
			continue
		}
		hdr := setHeaderLen
		if open {
			hdr = 0
		}
	search:
		for k := 0; k <= f.maxK[t]; k++ {
			if k == 0 && !open {
				continue
			}
			for p := 0; p <= pmax; p++ {
				if y := x - hdr - k*r - p; before.has(y) {
					f.count[t] += k
					f.pad[t] = p
					x = y
					break search
				}
			}
		}
	}
	return used + best
}

// searchRest looks for the records to leave out of a message that would
// take all that is left but for fewer than fillWindow bytes (the
// second-to-last of an export, mostly), so that it fills room exactly:
// the search of the prefix leaves the window at the end of the message,
// this one at the end of the export. Leaving k records of template t
// out saves k times their length; leaving all out, their set header too;
// padding p takes p back. Savings are offset by each set's most padding
// so that they are never negative. It sets the plan and reports whether
// it found one.
func (e *encoder) searchRest(room int) bool {
	f := &e.fill
	total, target := e.restTarget(room)
	if total <= room || target > fillWindow {
		return false
	}
	prev := fillBits{1}
	for t, a := range f.avail {
		r, pmax := e.compiled[t].recLen, setPad(e.compiled[t].recLen)
		k := min(a, target/r)
		f.maxK[t] = k
		if a == 0 {
			f.reach[t] = prev
			continue
		}
		cur := &f.reach[t]
		*cur = prev // none left out, padding 0..pmax, saving pmax..0
		for i := 1; i <= k && i < a; i++ {
			cur.orShifted(&prev, i*r)
		}
		cur.smear(pmax)
		if k == a {
			cur.orShifted(&prev, a*r+setHeaderLen+pmax)
		}
		prev = *cur
	}
	if !prev.has(target) {
		return false
	}
	x := target
	for t := len(f.reach) - 1; t >= 0; t-- {
		a := f.avail[t]
		f.count[t], f.pad[t] = a, 0
		if a == 0 {
			continue
		}
		before := &fillBits{1}
		if t > 0 {
			before = &f.reach[t-1]
		}
		r, pmax := e.compiled[t].recLen, setPad(e.compiled[t].recLen)
		if y := x - a*r - setHeaderLen - pmax; f.maxK[t] == a && before.has(y) {
			f.count[t] = 0
			x = y
			continue
		}
	search:
		for k := 0; k <= f.maxK[t] && k < a; k++ {
			for p := 0; p <= pmax; p++ {
				if y := x - k*r - (pmax - p); before.has(y) {
					f.count[t], f.pad[t] = a-k, p
					x = y
					break search
				}
			}
		}
	}
	return true
}

// restTarget returns the bytes the records left would take in one
// message, and searchRest's target for room.
func (e *encoder) restTarget(room int) (total, target int) {
	for t, a := range e.fill.avail {
		if a > 0 {
			r := e.compiled[t].recLen
			total += setHeaderLen + a*r
			target += setPad(r)
		}
	}
	return total, target + total - room
}

// nearEnd reports whether searchRest applies to the records left: they
// take more than room, but not by more than about fillWindow bytes.
func (e *encoder) nearEnd(room int) bool {
	total, target := e.restTarget(room)
	return total > room && target <= fillWindow
}

// exportFill is export's loop for exact fill: every message of the
// export, but those that cannot be, is exactly L bytes long (see the top
// of this file). The message begun by export (templates and options data
// in it, if due) is the first.
func (e *encoder) exportFill(flows []Flow, n *[templates.NumTemplates]int) {
	f := &e.fill
	f.avail = *n
	f.lastRoom = -1
	left := len(flows)
	if left == 0 {
		return
	}
	// The flows of each template, in order: order[next[t]:] are t's
	// not placed yet.
	off := 0
	for t, c := range n {
		f.next[t] = off
		off += c
	}
	f.order = slices.Grow(f.order[:0], len(flows))[:len(flows)]
	at := f.next
	for i, v := range e.variants {
		f.order[at[v]] = int32(i)
		at[v]++
	}
	hdr := e.wire.headerLen()
	l := e.max // PadForGSO: what exact fill cannot fill, padding does
	if !e.padding {
		l = hdr + e.search(e.max-hdr, -1)
	}
	for left > 0 {
		room := l - len(e.buf)
		first := len(e.buf) > hdr // templates or options data first
		got := e.plan(room, l-hdr)
		if got != room && (first && !e.padding || got == 0) {
			// This message cannot be L (or padded to it): it
			// stands alone and takes what it can.
			got = e.plan(e.max-len(e.buf), l-hdr)
		}
		placed := e.place(flows)
		left -= placed
		if left == 0 {
			return // export sends the last one
		}
		if got < room && e.padding {
			e.padMessage(l)
		}
		if len(e.buf) < l && !first && !e.padding {
			// What is left cannot fill L: this message ends the
			// run, and the next ones aim at its length, which they
			// may well reach, for a run of their own.
			l = len(e.buf)
		}
		e.send()
		// A message that templates (or options data) filled alone is
		// followed by one without them, as room does: with templates
		// in every message, none would have room for a record.
		e.begin(placed > 0)
	}
}

// place appends the planned records, taking each template's flows in the
// order of the export, and returns how many.
func (e *encoder) place(flows []Flow) int {
	f := &e.fill
	placed := 0
	for t, c := range f.count {
		if c == 0 {
			continue
		}
		ct := &e.compiled[t]
		e.openSet(ct.t.ID)
		if e.padding {
			e.notePadSet(ct.recLen)
		}
		for _, i := range f.order[f.next[t] : f.next[t]+c] {
			n := len(e.buf)
			e.buf = e.buf[:n+ct.recLen]
			ct.putRecord(e.buf[n:], &flows[i], e.msgOrigin)
		}
		f.next[t] += c
		n := len(e.buf)
		e.buf = e.buf[:n+f.pad[t]]
		clear(e.buf[n:])
		f.avail[t] -= c
		placed += c
	}
	e.closeSet()
	e.msgRecords += uint32(placed)
	e.msgFlows += uint32(placed)
	return placed
}
