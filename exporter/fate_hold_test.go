package exporter

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// total sums the packets of every exported fate.
func total(got map[uint8][2]uint64) uint64 {
	var n uint64
	for _, v := range got {
		n += v[0]
	}
	return n
}

// TestFateLateWithinHold: a fate counted seconds after its arrival (a
// packet held ~3 s in the neighbour queue, then dropped NEIGH_FAILED, 132)
// is matched to it: the arrival waits the hold (default 5 s), polls or
// not, and is never exported consumed as well.
func TestFateLateWithinHold(t *testing.T) {
	s := newFateSim(t, time.Minute, 0)
	id := bpf.NetFlowId{EthProtocol: 0x0800, IfIndex: 2, TransportProtocol: 17, SrcPort: 41001, DstPort: 5000}
	s.poll(fv{id: id, packets: 2}) // arrival read at poll 0
	s.poll()                       // poll 1
	s.poll()                       // poll 2
	s.poll(fv{id: fated(id, 132), packets: 2})
	for range 8 {
		s.poll()
	}
	s.flush()
	got := s.byFate()
	if len(got) != 1 || got[132] != [2]uint64{2, 200} {
		t.Errorf("2 packets arrived and dropped 3 s later, exported %v", got)
	}
	if n := s.c.Stats().UnmatchedFatePackets; n != 0 {
		t.Errorf("%d unmatched fate packets, want 0", n)
	}
}

// TestFateHoldSettlesByAge: arrivals settle at the first poll at least
// the hold after the poll that read them, whatever the poll interval,
// and an arrival key keeps at most fateBuckets groups of them.
func TestFateHoldSettlesByAge(t *testing.T) {
	for _, poll := range []time.Duration{100 * time.Millisecond, time.Second, 3 * time.Second} {
		t.Run(poll.String(), func(t *testing.T) {
			clk := newFakeClock()
			const hold = 5 * time.Second
			c := mustCache(t, CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: 10, Fates: true, FateHold: hold}, clk)
			a := key(7)
			// One packet per poll, for 30 s; the packet read at a
			// poll must not be consumed before hold later, and must
			// be by hold plus one poll interval (plus half a hold,
			// as polls' arrivals are grouped).
			var arrived, consumed []time.Duration // per packet
			for clk.mono < time.Hour+30*time.Second {
				m := pkt(1, 100, clk.mono, clk.mono)
				c.AddOne(a, &m)
				arrived = append(arrived, clk.mono)
				c.Poll()
				p, _ := c.fates.unreported()
				for int64(len(consumed)) < int64(len(arrived))-p {
					consumed = append(consumed, clk.mono)
				}
				// After a poll, none is open: at most three wait,
				// and the next poll's arrivals never find all four
				// taken.
				if e := c.fates.entries[a]; e.open || e.n > fateBuckets-1 {
					t.Fatalf("%d groups of arrivals waiting (open %v), want at most %d", e.n, e.open, fateBuckets-1)
				}
				clk.advance(poll)
			}
			if len(consumed) == 0 {
				t.Fatal("nothing consumed in 30 s")
			}
			for i, at := range consumed {
				wait := at - arrived[i]
				if wait < hold || wait > hold+hold/2+poll {
					t.Errorf("packet read at %v consumed at %v: waited %v, want %v to %v", arrived[i]-time.Hour, at-time.Hour, wait, hold, hold+hold/2+poll)
				}
			}
		})
	}
}

// TestFateUnmatched: a fate counted after its arrival settled (later than
// the hold) is exported with its arrival's consumed packets: counted as
// unmatched once the key is forgotten. If the key's traffic goes on, the
// next consumed packets make up for it and nothing is unmatched.
func TestFateUnmatched(t *testing.T) {
	t.Run("quiet", func(t *testing.T) {
		s := newFateSim(t, time.Minute, 2*time.Second)
		id := key(9)
		s.poll(fv{id: id, packets: 2})
		for range 3 {
			s.poll()
		}
		s.poll(fv{id: fated(id, 132), packets: 2}) // 4 s later
		if n := s.c.Stats().UnmatchedFatePackets; n != 0 {
			t.Errorf("%d unmatched fate packets while their arrival may still come, want 0", n)
		}
		for range 3 {
			s.poll()
		}
		s.flush()
		got := s.byFate()
		if got[FateConsumed][0] != 2 || got[132][0] != 2 {
			t.Errorf("exported %v, want 2 consumed and 2 dropped", got)
		}
		if n := s.c.Stats().UnmatchedFatePackets; n != 2 {
			t.Errorf("%d unmatched fate packets, want 2", n)
		}
		if n := s.c.Stats().Arrivals; n != 0 {
			t.Errorf("%d arrival keys kept", n)
		}
	})
	t.Run("fate without arrival, flushed", func(t *testing.T) {
		s := newFateSim(t, time.Minute, 2*time.Second)
		s.poll(fv{id: fated(key(9), FateForwarded), packets: 3, out: 4})
		s.flush()
		if n := s.c.Stats().UnmatchedFatePackets; n != 3 {
			t.Errorf("%d unmatched fate packets, want 3", n)
		}
	})
	t.Run("traffic goes on", func(t *testing.T) {
		s := newFateSim(t, time.Minute, 2*time.Second)
		id := key(9)
		s.poll(fv{id: id, packets: 2})
		for range 3 {
			s.poll(fv{id: id, packets: 1})
		}
		s.poll(fv{id: id, packets: 1}, fv{id: fated(id, 132), packets: 2})
		for range 5 {
			s.poll()
		}
		s.flush()
		got := s.byFate()
		if total(got) != 6 || got[132][0] != 2 {
			t.Errorf("6 packets arrived, 2 dropped late; exported %v", got)
		}
		if n := s.c.Stats().UnmatchedFatePackets; n != 0 {
			t.Errorf("%d unmatched fate packets, want 0", n)
		}
	})
}

// TestFateForceKeepsArrivals: a flush while the kernel still counts (a
// reload, the expire command) exports the cached flows but not the
// arrivals whose fates are still to be read, and a cache replacing the
// old one takes them over: a packet read arriving before the reload and
// forwarded after it is exported once, forwarded.
func TestFateForceKeepsArrivals(t *testing.T) {
	s := newFateSim(t, time.Minute, 2*time.Second)
	id := key(11)
	s.poll(fv{id: id, packets: 5}, fv{id: fated(id, FateForwarded), packets: 2, out: 3})
	s.c.ForceBatches(nil, func(b []Flow) { s.out = append(s.out, b...) })
	if p, _ := s.c.Totals(); p != 3 {
		t.Errorf("after a forced flush, %d packets unreported, want the 3 whose fate is to come", p)
	}
	old := s.c
	s.c = mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 100, Fates: true, FateHold: 2 * time.Second}, s.clk)
	s.c.TakeFates(old)
	if old.Stats().Arrivals != 0 || s.c.Stats().Arrivals != 1 {
		t.Errorf("arrival keys: old cache %d, new %d; want 0, 1", old.Stats().Arrivals, s.c.Stats().Arrivals)
	}
	s.poll(fv{id: fated(id, FateForwarded), packets: 3, out: 3})
	for range 3 {
		s.poll()
	}
	s.flush()
	got := s.byFate()
	if len(got) != 1 || got[FateForwarded] != [2]uint64{5, 500} {
		t.Errorf("5 packets forwarded across a reload, exported %v", got)
	}
}

// TestFatePassThrough: arrivals whose fates cannot be matched are
// ordinary flows of fate 0 (the enricher gives them the route lookup's
// status), never settled into consumed: those tagged with a VLAN (their
// fates are keyed by the VLAN subinterface) and sampled ones (1 in N at
// ingress, picked apart from the fates).
func TestFatePassThrough(t *testing.T) {
	t.Run("vlan", func(t *testing.T) {
		s := newFateSim(t, time.Minute, time.Second)
		id := key(12)
		id.VlanId = 10
		s.poll(fv{id: id, packets: 4})
		for range 3 {
			s.poll()
		}
		s.flush()
		if len(s.out) != 1 || s.out[0].Key.Fate != FateArrival || s.out[0].Packets != 4 || s.out[0].ForwardingStatus != 0 {
			t.Errorf("VLAN-tagged arrivals exported as %+v, want one fate-0 record of 4 packets", s.out)
		}
	})
	t.Run("sampled", func(t *testing.T) {
		// 1 in 100 at random, arrivals and forwarded counts picked
		// apart: every packet is forwarded, none may be consumed.
		r := rand.New(rand.NewPCG(1, 2))
		clk := newFakeClock()
		c := mustCache(t, CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: 10, Fates: true, FateHold: time.Second}, clk)
		id := key(13)
		const n, perPoll, polls = 100, 10000, 30
		var arrivals uint64
		for range polls {
			var a uint64
			for range perPoll {
				if r.IntN(n) == 0 {
					a++
				}
			}
			arrivals += a
			m := pkt(a, 100, clk.mono, clk.mono)
			m.Sampling = n
			c.AddOne(id, &m)
			c.Poll()
			clk.advance(time.Second)
		}
		var fate0 uint64
		for _, f := range c.Flush(nil) {
			if f.Key.Fate == FateConsumed {
				t.Errorf("sampled arrivals made a consumed record: %+v", f)
			}
			if f.Key.Fate == FateArrival && f.SamplingInterval == n {
				fate0 += f.Packets
			}
		}
		if fate0 != arrivals {
			t.Errorf("%d sampled arrivals exported as fate 0, want %d", fate0, arrivals)
		}
	})
}

// TestFateBucketsFull: arrivals that find every group of their key taken
// (the hold grew at a reload) join the newest group, which then waits a
// hold from the next poll: they never settle early.
func TestFateBucketsFull(t *testing.T) {
	const hold = 10 * time.Second
	tb := newFateTable(hold, 8)
	id := key(14)
	base := time.Hour
	var e fateEntry
	for i := range fateBuckets {
		e.b[i] = fateBucket{packets: 1, bytes: 100, last: base + time.Duration(i)*time.Second}
	}
	e.n = fateBuckets
	tb.entries[id] = e
	m := pkt(5, 100, base, base)
	var consumed []uint64
	add := func(_ bpf.NetFlowId, m *bpf.NetFlowMetrics) { consumed = append(consumed, m.Packets) }
	tb.arrived(id, &m, add)
	// At base+13 s the newest group (last read at base+3 s) would be
	// due, but it took arrivals since: it waits until base+23 s.
	tb.settle(base+13*time.Second, add)
	if len(consumed) != 3 {
		t.Fatalf("consumed %v at +13 s, want the three older groups", consumed)
	}
	tb.settle(base+22*time.Second, add)
	if len(consumed) != 3 {
		t.Fatalf("consumed %v at +22 s: arrivals settled before the hold", consumed)
	}
	tb.settle(base+23*time.Second, add)
	if len(consumed) != 4 || consumed[3] != 6 {
		t.Errorf("consumed %v at +23 s, want the newest group's 1 + 5 packets last", consumed)
	}
}
