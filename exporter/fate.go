package exporter

import "github.com/hostflow/hostflow/bpf"

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
// arrival without its fate (the packet still in flight). So arrivals
// settle late: what was added between two polls settles at the end of the
// poll after, when every arrival has waited at least one whole poll
// interval for its fate to be read. Then, per arrival key,
//
//	consumed = max(0, settled arrivals - fated - consumed already reported)
//
// kept as one running balance (owed): a fate read before its arrival only
// makes the balance negative until the arrival settles, never a negative
// or double count. A flush settles everything at once. Consumed packets
// go into the cache as a flow with fate FateConsumed (its times, TCP
// flags and sampling those of the arrivals that settled), exported by the
// ordinary expiry rules; arrivals themselves are never exported, so the
// records of one arrival key (forwarded, dropped, consumed) add up to
// exactly the packets that arrived.
//
// The derivation is exact when the fates are keyed exactly as their
// arrivals and counted at the same rate: with packet sampling, drops
// counted unsampled against sampled arrivals make it an estimate.
//
// An entry lives while it has arrivals to settle, or a fate counted in the
// current or the previous poll interval (whose arrival the next drain may
// still bring); then it is forgotten, and a fate counted without any
// arrival (its arrival lost, or counted at a different sampling) with it.
type fateTable struct {
	entries map[bpf.NetFlowId]fateEntry
	// poll numbers the poll intervals: incremented by each settle.
	poll uint64
}

// fateEntry is one arrival key's bookkeeping.
type fateEntry struct {
	// young: arrivals since the last poll; old: those of the poll
	// interval before, which settle at the next poll.
	young, old bpf.NetFlowMetrics
	// owedPackets and owedBytes are the settled arrivals minus the fated
	// packets minus the consumed ones already reported.
	owedPackets, owedBytes int64
	// touched is the poll interval of the last fate counted.
	touched uint64
}

func newFateTable() *fateTable {
	return &fateTable{entries: map[bpf.NetFlowId]fateEntry{}}
}

// arrivalKey returns the arrival key of a fate's key: the same flow, as it
// arrived, with fate 0.
func arrivalKey(id bpf.NetFlowId) bpf.NetFlowId {
	id.Fate = FateArrival
	return id
}

// arrived adds the arrivals m of key id (fate 0, ingress).
func (t *fateTable) arrived(id bpf.NetFlowId, m *bpf.NetFlowMetrics) {
	e := t.entries[id]
	e.young.Accumulate(m)
	t.entries[id] = e
}

// fated subtracts the packets m whose fate (id's, not 0) was counted from
// its arrival key's balance.
func (t *fateTable) fated(id bpf.NetFlowId, m *bpf.NetFlowMetrics) {
	k := arrivalKey(id)
	e := t.entries[k]
	e.owedPackets -= int64(m.Packets)
	e.owedBytes -= int64(m.Bytes)
	e.touched = t.poll
	t.entries[k] = e
}

// settle ends a poll interval: the arrivals of the interval before settle,
// and add calls with the consumed packets of each arrival key that has
// some, keyed with fate FateConsumed. Entries with nothing left to settle
// or wait for are forgotten.
func (t *fateTable) settle(add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	for k, e := range t.entries {
		t.consume(k, &e, &e.old, add)
		e.old, e.young = e.young, bpf.NetFlowMetrics{}
		if e.old.Packets == 0 && e.old.Bytes == 0 && e.owedPackets <= 0 && e.touched < t.poll {
			delete(t.entries, k)
			continue
		}
		t.entries[k] = e
	}
	t.poll++
}

// settleAll settles every arrival at once, as a flush does, calls add with
// the consumed packets and forgets every entry.
func (t *fateTable) settleAll(add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	for k, e := range t.entries {
		m := e.old
		m.Accumulate(&e.young)
		t.consume(k, &e, &m, add)
	}
	clear(t.entries)
	t.poll++
}

// consume settles the arrivals m of k into e's balance and reports what it
// owes, if packets, as consumed. The bytes reported are at most those
// owed; a byte deficit (the fates' packets counted longer than at
// arrival) stays in the balance.
func (t *fateTable) consume(k bpf.NetFlowId, e *fateEntry, m *bpf.NetFlowMetrics, add func(bpf.NetFlowId, *bpf.NetFlowMetrics)) {
	e.owedPackets += int64(m.Packets)
	e.owedBytes += int64(m.Bytes)
	if e.owedPackets <= 0 {
		return
	}
	c := *m
	c.Packets = uint64(e.owedPackets)
	c.Bytes = uint64(max(0, e.owedBytes))
	c.OutIfIndex = 0
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
		packets += int64(e.young.Packets+e.old.Packets) + e.owedPackets
		bytes += int64(e.young.Bytes+e.old.Bytes) + e.owedBytes
	}
	return packets, bytes
}

// len returns the number of arrival keys kept.
func (t *fateTable) len() int { return len(t.entries) }
