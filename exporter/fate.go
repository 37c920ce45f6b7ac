package exporter

import (
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// Fates, the IANA forwardingStatus (element 89, RFC 7270) values a flow
// key's Fate takes in router mode. The status is in the two high bits, a
// reason code in the six low ones: 128 to 143 are the dropped reasons the
// kernel reports (128 unknown, 129 ACL deny, 131 unroutable, 137 bad TTL,
// 140 RPF ...).
const (
	// FateArrival is a packet counted as it arrived, at TC ingress:
	// what then happened to it is told by its other fates.
	FateArrival uint8 = 0
	// FateForwarded is a packet seen leaving on another interface.
	FateForwarded uint8 = 64
	// FateDropped is the first dropped code (reason unknown).
	FateDropped uint8 = 128
	// FateConsumed is a packet that arrived and was neither forwarded
	// nor dropped: delivered locally. The kernel never counts it; the
	// Cache derives it (see fateTable).
	FateConsumed uint8 = 192
)

// DefaultFateHold is how long an arrival waits for its fate by default
// (CacheConfig.FateHold). The kernel counts most fates within
// microseconds of the arrival, but a packet forwarded to a neighbour
// whose address is not resolved yet waits in the neighbour queue until
// resolution fails, about 3 s with the default neigh settings
// (mcast_solicit 3 x retrans_time 1 s), and is only then dropped
// (NEIGH_FAILED): 5 s covers that, plus the poll interval after it in
// which the fate is read. The daemon uses the longer of this and two
// poll intervals.
const DefaultFateHold = 5 * time.Second

// fateBuckets is how many groups of arrivals, by the poll that read them,
// an arrival key keeps apart: with groups of half a hold at most, three
// are waiting at a time, and the fourth takes the arrivals of the current
// poll interval.
const fateBuckets = 4

// fateTable is the router mode's bookkeeping of a Cache whose kernel
// reports fates (CacheConfig.Fates): per arrival key (an ingress flow key
// with fate 0), the packets that arrived and those whose fate was counted,
// from which it derives the consumed ones. It lives beside the cache's
// flow table, not in its entries, which host mode keeps small.
//
// The kernel counts a packet's arrival at TC ingress and its fate later
// (forwarded at TC egress, dropped at kfree_skb); consumed packets have no
// fate of their own. A drain reads the arrival and fate entries one after
// the other, so it can read a packet's fate without its arrival (the
// arrival entry read before the increment, the fate entry after) or its
// arrival without its fate (the packet still in flight, or waiting
// seconds in a neighbour queue before it is dropped). So arrivals settle
// by age: the arrivals read up to a poll settle at the first poll at
// least hold (CacheConfig.FateHold) later, when their fates have been
// read. Then, per arrival key,
//
//	consumed = max(0, settled arrivals - fated - consumed already reported)
//
// kept as one running balance (owed): a fate read before its arrival only
// makes the balance negative until the arrival settles, never a negative
// or double count. Consumed packets go into the cache as a flow with fate
// FateConsumed (its times and TCP flags those of the arrivals that
// settled), exported by the ordinary expiry rules; arrivals themselves
// are never exported, so the records of one arrival key (forwarded,
// dropped, consumed) add up to exactly the packets that arrived.
//
// Arrivals are kept in at most fateBuckets groups per key, by the polls
// that read them (packets, bytes, times and flags; not a whole flow's
// metrics): the arrivals of the polls in one half hold of time make one
// group, so a key needs a few groups whatever the poll interval (about
// 230 bytes per arrival key in all).
//
// A fate counted after its arrival settled (later than the hold) makes
// the balance negative with nothing left to settle: the packets were
// reported consumed already, and now with their fate too. If more
// arrivals of the key settle later, their consumed packets make up for it
// (the records then add up to the arrivals again); if the key falls
// quiet, the packets still owed when it is forgotten are counted as
// unmatched (CacheStats.UnmatchedFatePackets), as is a fate whose arrival
// never came (counted at another sampling rate, or lost).
//
// The derivation is exact when the fates are keyed exactly as their
// arrivals and every packet is counted (no sampling): the daemon counts
// fates only then, and the Cache passes sampled arrivals through as
// ordinary flows.
//
// An entry lives while it has arrivals to settle, or a fate read less
// than a hold ago (whose arrival a later drain may still bring).
//
// The table holds at most max keys (the cache's MaxFlows), so memory stays
// bounded under a flood of new flows: a new key that finds it full first
// settles a kept key at once, whatever its age (earlySettled counts them).
// Its arrivals are reported, consumed as far as its fates read so far do
// not cover them; a fate of that key read later finds no arrival left and
// is counted unmatched, as a fate read after the hold is.
type fateTable struct {
	entries map[bpf.NetFlowId]fateEntry
	// hold is how long after the poll that read them arrivals settle.
	hold time.Duration
	// max bounds len(entries).
	max int
	// unmatched counts fate packets no arrival was left to match.
	unmatched uint64
	// earlySettled counts keys settled before their hold to make room.
	earlySettled uint64
}

// fateBucket is a group of arrivals read by one or more consecutive polls.
type fateBucket struct {
	packets, bytes uint64
	// start and end are the kernel's times of the first and last packet.
	start, end uint64
	// last is the (monotonic) time of the last poll whose arrivals are
	// in the bucket; unset while it is open.
	last  time.Duration
	flags uint16
}

// fateEntry is one arrival key's bookkeeping.
type fateEntry struct {
	// b holds the arrivals not settled yet, oldest first: n of them,
	// the last one open (taking this poll interval's arrivals) if open.
	b    [fateBuckets]fateBucket
	n    uint8
	open bool
	// fatePending: a fate was counted since the last poll; fateRead is
	// the time of the poll after the last fate counted (0: none).
	fatePending bool
	fateRead    time.Duration
	sampling    uint32
	// owedPackets and owedBytes are the settled arrivals minus the fated
	// packets minus the consumed ones already reported.
	owedPackets, owedBytes int64
}

func newFateTable(hold time.Duration, max int) *fateTable {
	return &fateTable{entries: map[bpf.NetFlowId]fateEntry{}, hold: hold, max: max}
}

// room makes room for key k if it is new and the table is full: it settles
// and forgets one kept key, an arbitrary one (Go's map iteration starts at
// a random place), reporting its consumed packets through add.
func (t *fateTable) room(k bpf.NetFlowId, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	if len(t.entries) < t.max {
		return
	}
	if _, ok := t.entries[k]; ok {
		return
	}
	for old, e := range t.entries {
		for i := range e.n {
			t.consume(old, &e, &e.b[i], add)
		}
		t.forget(old, &e)
		t.earlySettled++
		return
	}
}

// arrivalKey returns the arrival key of a fate's key: the same flow, as it
// arrived, with fate 0.
func arrivalKey(id bpf.NetFlowId) bpf.NetFlowId {
	id.Fate = FateArrival
	return id
}

// arrived adds the arrivals m of key id (fate 0, ingress) to its open
// bucket. If every bucket is taken (the hold grew, at a reload), the
// newest opens again: its arrivals then wait for the next poll's, never
// less than the hold. A new key may settle another first (room).
func (t *fateTable) arrived(id bpf.NetFlowId, m *bpf.NetFlowMetrics, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	t.room(id, add)
	e := t.entries[id]
	if !e.open {
		if int(e.n) < fateBuckets {
			e.b[e.n] = fateBucket{}
			e.n++
		}
		e.open = true
	}
	b := &e.b[e.n-1]
	if m.Packets != 0 {
		if b.packets == 0 || (m.StartMonoTimeTs != 0 && m.StartMonoTimeTs < b.start) {
			b.start = m.StartMonoTimeTs
		}
		b.end = max(b.end, m.EndMonoTimeTs)
	}
	b.packets += m.Packets
	b.bytes += m.Bytes
	b.flags |= m.Flags
	e.sampling = max(e.sampling, m.Sampling)
	t.entries[id] = e
}

// fated subtracts the packets m whose fate (id's, not 0) was counted from
// its arrival key's balance. A new key may settle another first (room).
func (t *fateTable) fated(id bpf.NetFlowId, m *bpf.NetFlowMetrics, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	k := arrivalKey(id)
	t.room(k, add)
	e := t.entries[k]
	e.owedPackets -= int64(m.Packets)
	e.owedBytes -= int64(m.Bytes)
	e.fatePending = true
	t.entries[k] = e
}

// settle ends a poll interval at monotonic time now: the arrivals read at
// least a hold ago settle, and add is called with the consumed packets of
// each arrival key that has some, keyed with fate FateConsumed; this
// interval's arrivals close their bucket. Entries with nothing left to
// settle or wait for are forgotten.
func (t *fateTable) settle(now time.Duration, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	for k, e := range t.entries {
		due := 0
		for due < int(e.n) && !(e.open && due == int(e.n)-1) && now-e.b[due].last >= t.hold {
			t.consume(k, &e, &e.b[due], add)
			due++
		}
		if due > 0 {
			copy(e.b[:], e.b[due:e.n])
			e.n -= uint8(due)
			clear(e.b[e.n:])
		}
		if e.open {
			e.open = false
			b := &e.b[e.n-1]
			if e.n > 1 && b.last == 0 && t.slot(e.b[e.n-2].last) == t.slot(now) {
				// Read in the same half hold: one group.
				p := &e.b[e.n-2]
				mergeBucket(p, b)
				p.last = now
				*b = fateBucket{}
				e.n--
			} else {
				b.last = now
			}
		}
		if e.fatePending {
			e.fatePending, e.fateRead = false, now
		}
		if e.n == 0 && (e.fateRead == 0 || now-e.fateRead >= t.hold) {
			t.forget(k, &e)
			continue
		}
		t.entries[k] = e
	}
}

// slot numbers the half holds of monotonic time: the arrivals read in
// one make one bucket. A bucket settles at most a hold after its slot
// ends, so at most three are waiting at a time.
func (t *fateTable) slot(at time.Duration) int64 {
	return int64(at / max(1, t.hold/2))
}

// mergeBucket adds b's arrivals to p's.
func mergeBucket(p, b *fateBucket) {
	if b.packets != 0 {
		if p.packets == 0 || b.start < p.start {
			p.start = b.start
		}
		p.end = max(p.end, b.end)
	}
	p.packets += b.packets
	p.bytes += b.bytes
	p.flags |= b.flags
}

// settleAll settles every arrival at once, as the final flush does, once
// the kernel counts no more: it calls add with the consumed packets and
// forgets every entry.
func (t *fateTable) settleAll(add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	for k, e := range t.entries {
		for i := range e.n {
			t.consume(k, &e, &e.b[i], add)
		}
		t.forget(k, &e)
	}
}

// forget drops k's entry, counting the fate packets still owed (no
// arrival left to match them) as unmatched.
func (t *fateTable) forget(k bpf.NetFlowId, e *fateEntry) {
	if e.owedPackets < 0 {
		t.unmatched += uint64(-e.owedPackets)
	}
	delete(t.entries, k)
}

// consume settles the arrivals b of k into e's balance and reports what it
// owes, if packets, as consumed. The bytes reported are at most those
// owed; a byte deficit (the fates' packets counted longer than at
// arrival) stays in the balance.
func (t *fateTable) consume(k bpf.NetFlowId, e *fateEntry, b *fateBucket, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	e.owedPackets += int64(b.packets)
	e.owedBytes += int64(b.bytes)
	if e.owedPackets <= 0 {
		return
	}
	c := bpf.NetFlowMetrics{
		Packets:         uint64(e.owedPackets),
		Bytes:           uint64(max(0, e.owedBytes)),
		StartMonoTimeTs: b.start,
		EndMonoTimeTs:   b.end,
		Flags:           b.flags,
		Sampling:        e.sampling,
	}
	e.owedPackets = 0
	e.owedBytes -= int64(c.Bytes)
	k.Fate = FateConsumed
	add(k, &c)
}

// unreported returns the arrivals not yet in a fate's or a consumed flow:
// those to settle, plus the balances (negative while fates are ahead of
// the settled arrivals, which then are in both the fates' flows and to
// settle).
func (t *fateTable) unreported() (packets, bytes int64) {
	for _, e := range t.entries {
		for i := range e.n {
			packets += int64(e.b[i].packets)
			bytes += int64(e.b[i].bytes)
		}
		packets += e.owedPackets
		bytes += e.owedBytes
	}
	return packets, bytes
}

// len returns the number of arrival keys kept.
func (t *fateTable) len() int { return len(t.entries) }
