package exporter

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// Default timeouts, as on most routers' NetFlow exports: a long flow is
// reported every minute, a quiet one 15 s after its last packet.
const (
	DefaultActiveTimeout = 60 * time.Second
	DefaultIdleTimeout   = 15 * time.Second
	DefaultMaxFlows      = 1 << 18

	// DefaultTCPEndGrace is how long a TCP flow that has seen FIN or RST
	// stays cached after its last packet. After a FIN the flow still
	// carries the ACK of the peer's FIN, and a lost FIN is retransmitted
	// after one retransmission timeout, whose floor is 1 s (RFC 6298
	// section 2.4; Linux uses 200 ms). 2 s covers one such retransmission
	// on any terrestrial path, so the closing packets land in the same
	// record instead of opening a 1-packet record of their own, while the
	// record still leaves far sooner than the 15 s idle timeout.
	DefaultTCPEndGrace = 2 * time.Second

	// MaxUnread bounds NextEnd after the last read: however long the
	// timeouts, a poll reads what the kernel counted at least this often,
	// so what was counted but not exported yet (the daemon's
	// hostflow_observed_* counters, a switch of the kernel maps by age)
	// never waits longer.
	MaxUnread = 10 * time.Second
)

// TCP control bits in bpf.NetFlowMetrics.Flags (RFC 9293 section 3.1).
const (
	tcpFIN = 0x01
	tcpRST = 0x04

	protoTCP = 6
)

// CacheConfig sets the expiry rules of a Cache.
type CacheConfig struct {
	// ActiveTimeout ends a flow this long after its first packet, even if
	// it is still sending; the next packets start a new record.
	ActiveTimeout time.Duration
	// IdleTimeout ends a flow this long after its last packet.
	IdleTimeout time.Duration
	// MaxFlows bounds the cache. A new flow that finds it full pushes out
	// the least recently seen flow, exported with flowEndReason lack of
	// resources.
	MaxFlows int
	// TCPEndGrace ends a TCP flow that has seen FIN or RST this long after
	// its last packet, with flowEndReason end of flow detected. It acts as
	// the idle timeout of a closing connection, so packets after the FIN
	// (the last ACKs, a retransmitted FIN) stay in the same record. If it
	// exceeds IdleTimeout, IdleTimeout applies instead. Zero means
	// DefaultTCPEndGrace.
	TCPEndGrace time.Duration
	// Fates says the kernel counts each packet's fate (router mode):
	// ingress flows with fate 0 are arrivals, not records; the cache
	// derives the consumed packets from them and from the other fates
	// at each Poll (see fateTable). Arrivals tagged with a VLAN (their
	// fates are keyed by the VLAN subinterface, never by the tag) and
	// sampled ones (their fates are not counted at the same rate) are
	// not: they go into the cache as ordinary flows with fate 0.
	Fates bool
	// FateHold is how long after the poll that read them arrivals wait
	// for their fates before the packets without one are taken as
	// consumed (see fateTable); it must cover the longest time the
	// kernel takes to count a fate plus a poll interval. Zero means
	// DefaultFateHold.
	FateHold time.Duration
}

// Validate reports every bad setting.
func (c CacheConfig) Validate() error {
	var errs []error
	if c.ActiveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("active timeout %v: must be positive", c.ActiveTimeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v: must be positive", c.IdleTimeout))
	}
	if c.MaxFlows <= 0 {
		errs = append(errs, fmt.Errorf("max flows %d: must be positive", c.MaxFlows))
	}
	if c.TCPEndGrace < 0 {
		errs = append(errs, fmt.Errorf("tcp end grace %v: must not be negative", c.TCPEndGrace))
	}
	if c.FateHold < 0 {
		errs = append(errs, fmt.Errorf("fate hold %v: must not be negative", c.FateHold))
	}
	return errors.Join(errs...)
}

// CacheStats counts what went through a Cache.
type CacheStats struct {
	// Exported counts flow records by end reason (index: EndReason).
	// Exported[EndLackOfResources] counts the emergency expiries of a
	// full cache.
	Exported [6]uint64
	// Active is the number of flows in the cache now.
	Active int
	// Arrivals is the number of arrival keys whose fates the cache
	// follows now (CacheConfig.Fates; 0 otherwise).
	Arrivals int
	// UnmatchedFatePackets counts packets whose fate the kernel counted
	// but that no arrival was left to match: read after their arrival
	// had settled as consumed (later than CacheConfig.FateHold), so
	// exported twice, or whose arrival was never counted. It follows
	// the fate bookkeeping across TakeFates.
	UnmatchedFatePackets uint64
	// EarlySettledArrivals counts arrival keys settled before
	// CacheConfig.FateHold because the fate bookkeeping held MaxFlows
	// keys and a new one came (a flood of new flows): their fates read
	// later count as unmatched. It follows the bookkeeping across
	// TakeFates.
	EarlySettledArrivals uint64
}

// Cache aggregates kernel metrics by flow key and decides when a flow ends.
// Times are kept on the kernel's monotonic clock and converted to wall time
// only when a record leaves, so a wall-clock step never expires a flow. A
// Cache is used by one goroutine.
//
// A flow ends, with the flowEndReason of RFC 7011 / IANA element 136:
//   - idle (1): IdleTimeout after its last packet;
//   - active (2): ActiveTimeout after its first packet; the next packets
//     start a new record, so consecutive records add up to the flow;
//   - end of flow detected (3): TCP only, TCPEndGrace after its last packet
//     once FIN or RST was seen;
//   - forced (4): at Flush, on shutdown;
//   - lack of resources (5): pushed out of a full cache by a new flow.
//
// Memory is bounded by MaxFlows and follows the number of flows: flows
// live in a table of their own (see flowTable), about 90 bytes each,
// without pointers for the garbage collector to scan; records pushed out
// of a full cache wait in a list that the caller empties (TakePending) as
// often as it likes.
type Cache struct {
	cfg     CacheConfig
	clock   Clock
	flows   flowTable
	pending []Flow // pushed out while adding (lack of resources)
	stats   CacheStats
	// fates is the router mode's arrival bookkeeping; nil unless
	// CacheConfig.Fates.
	fates *fateTable
	// nextEnd is a lower bound of when a cached flow can end, on the
	// monotonic clock (ns): exact after Expire, lowered by every add.
	nextEnd uint64
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig, clock Clock) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cache config: %w", err)
	}
	if cfg.TCPEndGrace == 0 {
		cfg.TCPEndGrace = DefaultTCPEndGrace
	}
	cfg.TCPEndGrace = min(cfg.TCPEndGrace, cfg.IdleTimeout)
	if cfg.FateHold == 0 {
		cfg.FateHold = DefaultFateHold
	}
	c := &Cache{cfg: cfg, clock: clock, flows: newFlowTable(cfg.MaxFlows), nextEnd: math.MaxUint64}
	if cfg.Fates {
		c.fates = newFateTable(cfg.FateHold, cfg.MaxFlows)
	}
	return c, nil
}

// Add merges the per-CPU values of one flow into the cache.
func (c *Cache) Add(id bpf.NetFlowId, perCPU []bpf.NetFlowMetrics) {
	var sum bpf.NetFlowMetrics
	for i := range perCPU {
		sum.Accumulate(&perCPU[i])
	}
	c.AddOne(id, &sum)
}

// AddOne merges one metrics value into the cache.
//
// When a new flow finds the cache full, the least recently seen flow is
// exported (lack of resources) and the new one takes its place. The other
// choice, exporting the new flow at once, turns every packet of every new
// flow into a record of its own for as long as the cache stays full; the
// least recently seen flow is instead the one most likely to have ended
// already, and exporting it early costs nothing but an earlier record:
// its counts are complete and the next packets, if any, start a new
// record. This is what routers call emergency expiry. Exactly one flow is
// pushed out per new flow, so the work per call is O(1), and the pushed-out
// entry is reused for the new flow. Its record waits in the pending list
// (Pending, TakePending, Expire).
//
// "Recently seen" is the order of AddOne calls: within one drain of the
// kernel map that order is arbitrary, so flows seen in the same poll
// interval are equally recent.
//
// A value with bytes but no packets (a drain can hand out, at the end of a
// kernel map's life, bytes of packets it handed out before: see
// bpf.FlowFetcher.Drain) is merged into its flow; if the flow is no longer
// cached it starts one, exported with 0 packets (legal in IPFIX and
// NetFlow v9) rather than losing the bytes. An empty value changes
// nothing.
//
// With CacheConfig.Fates, an ingress flow's arrivals (fate 0) go to the
// fate bookkeeping only, and its other fates there too (see fateTable),
// but for FateConsumed, which the kernel never counts: the cache's own.
// Arrivals tagged with a VLAN or sampled stay ordinary flows of fate 0
// (see CacheConfig.Fates).
func (c *Cache) AddOne(id bpf.NetFlowId, m *bpf.NetFlowMetrics) {
	if m.Packets == 0 && m.Bytes == 0 {
		return
	}
	if c.fates != nil && id.Direction == bpf.DirectionIngress && id.Fate != FateConsumed {
		switch {
		case id.Fate != FateArrival:
			c.fates.fated(id, m, c.AddOne)
		case id.VlanId == 0 && m.Sampling <= 1:
			c.fates.arrived(id, m, c.AddOne)
			return
		}
	}
	t := &c.flows
	p := probeOf(&id)
	h := t.hash(&p)
	if i, _ := t.find(&p, h); i != none {
		e := t.at(i)
		e.accumulate(m)
		c.nextEnd = min(c.nextEnd, c.endsAt(e))
		t.moveToFront(i)
		return
	}
	if t.n >= c.cfg.MaxFlows {
		old := t.tail
		c.pending = append(c.pending, c.record(t.at(old), EndLackOfResources, c.clock.Now(), c.clock.Monotonic()))
		t.remove(old)
	}
	t.insert(&p, h, m)
	c.nextEnd = min(c.nextEnd, c.endsAt(t.at(t.head)))
}

// Poll marks the end of a poll interval. With CacheConfig.Fates, it
// settles the arrivals read at least CacheConfig.FateHold ago and adds
// their consumed packets, if any, as flows of fate FateConsumed (see
// fateTable); otherwise it does nothing. The owner calls it once per
// interval, after that interval's drain and before Expire.
func (c *Cache) Poll() {
	if c.fates != nil {
		c.fates.settle(c.clock.Monotonic(), c.AddOne)
	}
}

// TakeFates moves old's fate bookkeeping (CacheConfig.Fates) into c, a
// cache that replaces old while the kernel keeps counting (a reload):
// the arrivals old has not settled yet settle in c, at c's FateHold,
// against fates c is given. c's own bookkeeping, which must be empty,
// is dropped; old follows no arrival after. Nothing happens unless both
// caches follow fates.
func (c *Cache) TakeFates(old *Cache) {
	if c.fates == nil || old.fates == nil {
		return
	}
	c.fates, old.fates = old.fates, c.fates
	c.fates.hold, old.fates.hold = c.cfg.FateHold, old.cfg.FateHold
}

// Pending returns how many records of flows pushed out for lack of room
// wait for the next Expire or TakePending.
func (c *Cache) Pending() int { return len(c.pending) }

// TakePending appends the records of flows pushed out for lack of room to
// out and forgets them. A caller that adds many new flows between two
// Expire calls (a flood of new flows, a kernel map full) calls it when
// Pending reaches the batch size it exports, so that they do not pile up.
func (c *Cache) TakePending(out []Flow) []Flow {
	out = append(out, c.pending...)
	clear(c.pending)
	c.pending = c.pending[:0]
	return out
}

// Expire appends to out the flows that ended (see Cache) and those pushed
// out for lack of room, and removes them. Records are appended from the
// least to the most recently seen flow. It visits every cached flow, unless
// none can have ended yet (before the earliest end it knows of: see
// NextEnd): it runs once per poll interval, not per packet, but a full
// cache is 262,144 flows scattered in memory, and a flood of new flows
// pushes out flows between every two polls.
func (c *Cache) Expire(out []Flow) []Flow {
	c.ExpireBatches(make([]Flow, 0, 64), func(b []Flow) { out = append(out, b...) })
	return out
}

// ExpireBatches is Expire in batches: it fills buf (from length 0 up to
// its capacity; 64 if it has none) with records and calls emit with each batch,
// so the records of a whole cache are never held at once. emit must not
// keep the slice nor call the Cache.
func (c *Cache) ExpireBatches(buf []Flow, emit func([]Flow)) {
	c.drainPending(&buf, emit)
	t := &c.flows
	wall, mono := c.clock.Now(), c.clock.Monotonic()
	if t.n > 0 && uint64(mono) < c.nextEnd {
		// nextEnd is at most every flow's endsAt: none ended.
		if len(buf) > 0 {
			emit(buf)
		}
		return
	}
	c.nextEnd = math.MaxUint64
	for i := t.tail; i != none; {
		e := t.at(i)
		prev := e.prev
		if reason := c.ended(e, uint64(mono)); reason != 0 {
			buf = c.emitTo(buf, c.record(e, reason, wall, mono), emit)
			t.remove(i)
		} else {
			c.nextEnd = min(c.nextEnd, c.endsAt(e))
		}
		i = prev
	}
	if t.n == 0 && t.chunks != nil {
		// Every flow has ended: let go of the blocks and the index a
		// burst of flows grew, rather than keep them until the next.
		t.reset()
	}
	if len(buf) > 0 {
		emit(buf)
	}
}

// ended returns why the flow m ended at monotonic time now, or 0 if it has
// not. A TCP end wins over the timeouts: it says what really happened.
func (c *Cache) ended(e *entry, now uint64) EndReason {
	since := func(t uint64, d time.Duration) bool { return now >= t && now-t >= uint64(d) }
	switch {
	case e.k.rest.proto == protoTCP && e.flags&(tcpFIN|tcpRST) != 0 && since(e.end, c.cfg.TCPEndGrace):
		return EndOfFlowDetected
	case since(e.end, c.cfg.IdleTimeout):
		return EndIdleTimeout
	case since(e.start, c.cfg.ActiveTimeout):
		return EndActiveTimeout
	}
	return 0
}

// endsAt is when flow e ends (see ended) unless more packets come: the
// earliest of its deadlines, on the monotonic clock.
func (c *Cache) endsAt(e *entry) uint64 {
	idle := c.cfg.IdleTimeout
	if e.k.rest.proto == protoTCP && e.flags&(tcpFIN|tcpRST) != 0 {
		idle = c.cfg.TCPEndGrace // never above IdleTimeout
	}
	return min(sat(e.end, idle), sat(e.start, c.cfg.ActiveTimeout))
}

// sat is t + d, saturated.
func sat(t uint64, d time.Duration) uint64 {
	if t > math.MaxUint64-uint64(d) {
		return math.MaxUint64
	}
	return t + uint64(d)
}

// NextEnd returns the monotonic time before which Expire has nothing to
// export, given that every packet counted before lastRead (monotonic) has
// been added: the earliest time a cached flow ends, or one counted after
// lastRead. If tcpEnds, a TCP packet with FIN or RST may have been counted
// since lastRead, so a flow may end the TCP end grace after it; otherwise
// a packet counted since ends its flow no sooner than the idle or active
// timeout after lastRead, and NextEnd is at most MaxUnread after it. A
// poll before it needs neither to read the
// kernel's counts nor to call Expire: no record would leave earlier. It
// leaves out the records of flows pushed out for lack of room (Pending),
// which are due at once.
func (c *Cache) NextEnd(lastRead time.Duration, tcpEnds bool) time.Duration {
	after := min(c.cfg.IdleTimeout, c.cfg.ActiveTimeout, MaxUnread)
	if tcpEnds {
		after = c.cfg.TCPEndGrace
	}
	next := min(c.nextEnd, sat(uint64(max(lastRead, 0)), after))
	return time.Duration(min(next, math.MaxInt64))
}

// Flush appends every cached flow to out with flowEndReason forced end, as
// at shutdown, and empties the cache. With CacheConfig.Fates it first
// settles every arrival, so the consumed packets are exported too: a
// flush for when the kernel counts no more (a fate read after it would
// be exported as well as its arrival's consumed packets). While it still
// counts, ForceBatches exports the flows and keeps the arrivals.
func (c *Cache) Flush(out []Flow) []Flow {
	c.FlushBatches(make([]Flow, 0, 64), func(b []Flow) { out = append(out, b...) })
	return out
}

// FlushBatches is Flush in batches of at most cap(buf), as ExpireBatches.
func (c *Cache) FlushBatches(buf []Flow, emit func([]Flow)) {
	if c.fates != nil {
		c.fates.settleAll(c.AddOne)
	}
	c.ForceBatches(buf, emit)
}

// ForceBatches is FlushBatches while the kernel still counts (a reload, a
// request to export everything now): every cached flow is exported as
// forced end, in batches of at most cap(buf), but with CacheConfig.Fates
// the arrivals not settled yet stay in the fate bookkeeping, to settle at
// a later Poll (of this cache, or of the one TakeFates moves them to)
// against the fates read meanwhile.
func (c *Cache) ForceBatches(buf []Flow, emit func([]Flow)) {
	c.drainPending(&buf, emit)
	t := &c.flows
	wall, mono := c.clock.Now(), c.clock.Monotonic()
	for i := t.tail; i != none; {
		e := t.at(i)
		prev := e.prev
		buf = c.emitTo(buf, c.record(e, EndForced, wall, mono), emit)
		t.remove(i)
		i = prev
	}
	if len(buf) > 0 {
		emit(buf)
	}
	t.reset()
	c.nextEnd = math.MaxUint64
}

// drainPending moves the pending records into batches.
func (c *Cache) drainPending(buf *[]Flow, emit func([]Flow)) {
	*buf = (*buf)[:0]
	if cap(*buf) == 0 {
		*buf = make([]Flow, 0, 64)
	}
	for i := range c.pending {
		*buf = c.emitTo(*buf, c.pending[i], emit)
	}
	clear(c.pending)
	c.pending = c.pending[:0]
}

// emitTo appends f to buf, first emitting buf if it is full.
func (c *Cache) emitTo(buf []Flow, f Flow, emit func([]Flow)) []Flow {
	if len(buf) == cap(buf) {
		emit(buf)
		buf = buf[:0]
	}
	return append(buf, f)
}

// Len returns the number of flows in the cache.
func (c *Cache) Len() int { return c.flows.n }

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	s := c.stats
	s.Active = c.flows.n
	if c.fates != nil {
		s.Arrivals = c.fates.len()
		s.UnmatchedFatePackets = c.fates.unmatched
		s.EarlySettledArrivals = c.fates.earlySettled
	}
	return s
}

// record is the Flow of entry e. A flow with a fate is exported with it
// as its forwarding status, and a forwarded one with the interface the
// kernel saw it leave on.
func (c *Cache) record(e *entry, reason EndReason, wall time.Time, mono time.Duration) Flow {
	c.stats.Exported[reason]++
	var out uint32
	if e.k.rest.fate == FateForwarded {
		out = e.outIf
	}
	return Flow{
		Key:       KeyOf(c.flows.idOf(e)),
		Packets:   e.packets,
		Bytes:     e.bytes,
		Start:     bpf.MonoToTime(e.start, wall, mono),
		End:       bpf.MonoToTime(e.end, wall, mono),
		TCPFlags:  e.flags,
		EndReason: reason,

		SamplingInterval: e.sampling,

		ForwardingStatus: e.k.rest.fate,
		EgressIfIndex:    out,
	}
}
