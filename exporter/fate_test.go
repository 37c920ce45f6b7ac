package exporter

import (
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// fateSim drives a Cache in router mode with kernel fates as the daemon
// does: per poll interval, the drained values, then Poll and Expire.
type fateSim struct {
	t   *testing.T
	c   *Cache
	clk *fakeClock
	out []Flow
}

// newFateSim polls every second; arrivals settle hold after the poll that
// read them.
func newFateSim(t *testing.T, active, hold time.Duration) *fateSim {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: active, IdleTimeout: 15 * time.Second, MaxFlows: 100, Fates: true, FateHold: hold}, clk)
	return &fateSim{t: t, c: c, clk: clk}
}

// fated returns id with fate f.
func fated(id bpf.NetFlowId, f uint8) bpf.NetFlowId {
	id.Fate = f
	return id
}

// fv is one drained value.
type fv struct {
	id      bpf.NetFlowId
	packets uint64
	out     uint32 // kernel egress interface
}

// poll drains vs (100-byte packets stamped now), then polls and expires,
// and advances the clock by a second.
func (s *fateSim) poll(vs ...fv) {
	now := s.clk.mono
	for _, v := range vs {
		m := pkt(v.packets, 100, now-time.Millisecond, now)
		m.OutIfIndex = v.out
		s.c.AddOne(v.id, &m)
	}
	s.c.Poll()
	s.out = s.c.Expire(s.out)
	s.clk.advance(time.Second)
}

func (s *fateSim) flush() { s.out = s.c.Flush(s.out) }

// byFate sums the exported packets and bytes by fate, and checks that no
// record is empty and none is an arrival.
func (s *fateSim) byFate() map[uint8][2]uint64 {
	s.t.Helper()
	sum := map[uint8][2]uint64{}
	for _, f := range s.out {
		if f.Packets == 0 {
			s.t.Errorf("record with 0 packets: %+v", f)
		}
		if f.Key.Fate == FateArrival {
			s.t.Errorf("arrival exported: %+v", f)
		}
		if f.ForwardingStatus != f.Key.Fate {
			s.t.Errorf("forwarding status %d, fate %d", f.ForwardingStatus, f.Key.Fate)
		}
		v := sum[f.Key.Fate]
		sum[f.Key.Fate] = [2]uint64{v[0] + f.Packets, v[1] + f.Bytes}
	}
	return sum
}

func TestFateAllForwardedHasNoConsumed(t *testing.T) {
	s := newFateSim(t, time.Minute, time.Second)
	a := key(1000)
	a.IfIndex = 2
	s.poll(fv{id: a, packets: 10}, fv{id: fated(a, FateForwarded), packets: 10, out: 3})
	s.poll(fv{id: a, packets: 5}, fv{id: fated(a, FateForwarded), packets: 5, out: 3})
	s.poll()
	s.poll()
	if n := s.c.Stats().Arrivals; n != 0 {
		t.Errorf("%d arrival keys kept after two quiet polls, want 0", n)
	}
	s.flush()
	got := s.byFate()
	if len(got) != 1 || got[FateForwarded] != [2]uint64{15, 1500} {
		t.Errorf("exported %v, want only 15 forwarded packets", got)
	}
	for _, f := range s.out {
		if f.EgressIfIndex != 3 || f.Key.IfIndex != 2 {
			t.Errorf("forwarded record in %d out %d, want 2 -> 3", f.Key.IfIndex, f.EgressIfIndex)
		}
	}
}

func TestFateAllConsumed(t *testing.T) {
	s := newFateSim(t, time.Minute, time.Second)
	a := key(1000)
	s.poll(fv{id: a, packets: 5})
	if s.c.Len() != 0 {
		t.Fatalf("%d flows cached after the first poll: arrivals settle a hold (one poll) later", s.c.Len())
	}
	s.poll(fv{id: a, packets: 3})
	if s.c.Len() != 1 {
		t.Fatalf("%d flows cached after the second poll, want the consumed one", s.c.Len())
	}
	s.clk.advance(20 * time.Second) // idle: the consumed flow ends
	s.poll()
	got := s.byFate()
	if len(got) != 1 || got[FateConsumed] != [2]uint64{8, 800} {
		t.Errorf("exported %v, want 8 consumed packets", got)
	}
	if len(s.out) != 1 {
		t.Errorf("%d records, want 1: the last arrivals settle into the cached consumed flow", len(s.out))
	}
	for _, f := range s.out {
		if f.EgressIfIndex != 0 || f.Key.Direction != bpf.DirectionIngress {
			t.Errorf("consumed record %+v", f)
		}
	}
}

// TestFateBeforeArrival: a drain that reads a packet's fate before its
// arrival (the arrival entry read before the increment) never makes a
// negative or double count, and one that reads its arrival before its fate
// (in flight) neither.
func TestFateBeforeArrival(t *testing.T) {
	for _, tt := range []struct {
		name  string
		polls [][]fv
		want  map[uint8][2]uint64
	}{
		{"fate first", [][]fv{
			{{id: fated(key(1), FateForwarded), packets: 1, out: 3}},
			{{id: key(1), packets: 1}},
		}, map[uint8][2]uint64{FateForwarded: {1, 100}}},
		{"fate first, some consumed", [][]fv{
			{{id: key(1), packets: 2}, {id: fated(key(1), 131), packets: 3}},
			{{id: key(1), packets: 5}},
		}, map[uint8][2]uint64{131: {3, 300}, FateConsumed: {4, 400}}},
		{"arrival first (in flight)", [][]fv{
			{{id: key(1), packets: 4}},
			{{id: fated(key(1), FateForwarded), packets: 4, out: 3}},
		}, map[uint8][2]uint64{FateForwarded: {4, 400}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newFateSim(t, time.Minute, time.Second)
			for _, p := range tt.polls {
				s.poll(p...)
			}
			for range 3 {
				s.poll()
			}
			s.flush()
			got := s.byFate()
			if len(got) != len(tt.want) {
				t.Errorf("exported %v, want %v", got, tt.want)
			}
			for f, w := range tt.want {
				if got[f] != w {
					t.Errorf("fate %d: %v, want %v (all %v)", f, got[f], w, got)
				}
			}
		})
	}
}

// TestFateFlushSettlesEverything: a flush right after the arrivals were
// drained exports them as consumed, without waiting for a poll.
func TestFateFlushSettlesEverything(t *testing.T) {
	s := newFateSim(t, time.Minute, time.Second)
	s.poll(fv{id: key(1), packets: 2}, fv{id: fated(key(1), FateForwarded), packets: 1, out: 3})
	s.poll(fv{id: key(1), packets: 6})
	s.flush()
	got := s.byFate()
	if got[FateConsumed] != [2]uint64{7, 700} || got[FateForwarded] != [2]uint64{1, 100} {
		t.Errorf("exported %v, want 7 consumed and 1 forwarded", got)
	}
	if s.c.Stats().Arrivals != 0 || s.c.Len() != 0 {
		t.Errorf("flush left %d arrival keys, %d flows", s.c.Stats().Arrivals, s.c.Len())
	}
}

// TestFateMixedSumsToArrivals: a flow partly forwarded, partly dropped and
// partly consumed, with fates read in the poll of their arrival or the
// next, exported across several active timeouts: the records of each fate
// add up to its packets, and all of them to exactly the arrivals.
func TestFateMixedSumsToArrivals(t *testing.T) {
	s := newFateSim(t, 3*time.Second, time.Second)
	a := key(1000)
	var arrived, fwd, drop uint64
	var lagFwd uint64 // forwarded packets whose fate the next poll reads
	for i := range uint64(20) {
		n, f, d := 10+i%7, i%5, (i*3)%4 // arrivals, forwarded, dropped
		vs := []fv{{id: a, packets: n}}
		if lagFwd > 0 {
			vs = append(vs, fv{id: fated(a, FateForwarded), packets: lagFwd, out: 3})
		}
		if f/2 > 0 {
			vs = append(vs, fv{id: fated(a, FateForwarded), packets: f / 2, out: 3})
		}
		if d > 0 {
			vs = append(vs, fv{id: fated(a, 129), packets: d})
		}
		lagFwd = f - f/2
		arrived, fwd, drop = arrived+n, fwd+f, drop+d
		s.poll(vs...)
		// Exported plus cached (Totals) is every arrival so far.
		var exported uint64
		for _, f := range s.out {
			exported += f.Packets
		}
		if p, _ := s.c.Totals(); exported+p != arrived {
			t.Errorf("poll %d: exported %d + cached %d packets, want the %d that arrived", i, exported, p, arrived)
		}
	}
	s.poll(fv{id: fated(a, FateForwarded), packets: lagFwd, out: 3})
	active := 0
	for _, f := range s.out {
		if f.EndReason == EndActiveTimeout {
			active++
		}
	}
	if active < 3 {
		t.Errorf("%d active-timeout records before the flush, want several", active)
	}
	s.flush()
	got := s.byFate()
	want := map[uint8][2]uint64{FateForwarded: {fwd, fwd * 100}, 129: {drop, drop * 100},
		FateConsumed: {arrived - fwd - drop, (arrived - fwd - drop) * 100}}
	var sum uint64
	for f, v := range got {
		sum += v[0]
		if v != want[f] {
			t.Errorf("fate %d: %v, want %v", f, v, want[f])
		}
	}
	if sum != arrived || len(got) != 3 {
		t.Errorf("exported %d packets in %v, want the %d that arrived", sum, got, arrived)
	}
}

// TestFateEgressAndHostMode: egress flows are not arrivals, and without
// Fates the cache exports arrivals as before.
func TestFateEgressAndHostMode(t *testing.T) {
	s := newFateSim(t, time.Minute, time.Second)
	e := key(1)
	e.Direction = bpf.DirectionEgress
	s.poll(fv{id: e, packets: 2})
	s.flush()
	if len(s.out) != 1 || s.out[0].Packets != 2 || s.out[0].ForwardingStatus != 0 {
		t.Errorf("egress flow in fate mode: %+v", s.out)
	}

	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 10}, clk)
	m := pkt(3, 100, clk.mono, clk.mono)
	c.AddOne(key(1), &m)
	c.Poll()
	out := c.Flush(nil)
	if len(out) != 1 || out[0].Packets != 3 || out[0].Key.Fate != 0 {
		t.Errorf("host mode: %+v", out)
	}
}

// TestFateTableBounded: router mode's fate bookkeeping holds at most
// MaxFlows arrival keys. A flood of new keys settles kept keys early
// (counted), so memory stays bounded and every arrival is still reported:
// the records of the flood add up to its arrivals, plus the fates counted
// unmatched (read after their key was settled).
func TestFateTableBounded(t *testing.T) {
	clk := newFakeClock()
	const maxFlows = 16
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: maxFlows, Fates: true, FateHold: 5 * time.Second}, clk)
	s := &fateSim{t: t, c: c, clk: clk}
	// One poll reads 40 new keys (3 packets each), one of every two
	// forwarded.
	var vs []fv
	for i := range 40 {
		a := key(uint16(2000 + i))
		vs = append(vs, fv{id: a, packets: 3})
		if i%2 == 0 {
			vs = append(vs, fv{id: fated(a, FateForwarded), packets: 3, out: 3})
		}
	}
	s.poll(vs...)
	if n := c.Stats().Arrivals; n > maxFlows {
		t.Errorf("%d arrival keys kept, want at most MaxFlows %d", n, maxFlows)
	}
	if n := c.Stats().EarlySettledArrivals; n == 0 {
		t.Errorf("EarlySettledArrivals 0: the table overflowed and nothing was counted")
	}
	s.flush()
	got := s.byFate()
	// A key settled before its fate was read reports those packets as
	// consumed and then with their fate: counted as unmatched.
	unmatched := c.Stats().UnmatchedFatePackets
	if sum := got[FateForwarded][0] + got[FateConsumed][0]; sum != 120+unmatched {
		t.Errorf("exported %v: %d packets, want the 120 that arrived + %d unmatched", got, sum, unmatched)
	}
	if got[FateForwarded][0] != 60 {
		t.Errorf("exported %v, want 60 forwarded packets", got)
	}
}
