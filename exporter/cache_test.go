package exporter

import (
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// fakeClock is a settable Clock; wall = epoch + mono.
type fakeClock struct {
	epoch time.Time
	mono  time.Duration
}

func (c *fakeClock) Now() time.Time           { return c.epoch.Add(c.mono) }
func (c *fakeClock) Monotonic() time.Duration { return c.mono }
func (c *fakeClock) advance(d time.Duration)  { c.mono += d }

func newFakeClock() *fakeClock {
	return &fakeClock{epoch: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), mono: time.Hour}
}

func key(port uint16) bpf.NetFlowId {
	var id bpf.NetFlowId
	id.EthProtocol = 0x0800
	id.TransportProtocol = 17
	id.SrcIp = [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 1}
	id.DstIp = [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 2}
	id.SrcPort = port
	id.DstPort = 53
	return id
}

// pkt returns metrics of n packets of size bytes each, first at start and
// last at end (monotonic).
func pkt(n, size uint64, start, end time.Duration) bpf.NetFlowMetrics {
	return bpf.NetFlowMetrics{Packets: n, Bytes: n * size, StartMonoTimeTs: uint64(start), EndMonoTimeTs: uint64(end)}
}

func mustCache(t *testing.T, cfg CacheConfig, clk Clock) *Cache {
	t.Helper()
	c, err := NewCache(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCacheMergesPerCPUValues(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 10}, clk)
	now := clk.mono
	perCPU := []bpf.NetFlowMetrics{
		pkt(2, 100, now-3*time.Second, now-2*time.Second),
		{}, // a CPU that never saw the flow: zero start must not win
		pkt(1, 100, now-5*time.Second, now-4*time.Second),
	}
	perCPU[0].Flags = 0x02
	perCPU[2].Flags = 0x10
	perCPU[0].Sampling, perCPU[2].Sampling = 8, 8
	c.Add(key(1), perCPU)
	out := c.Flush(nil)
	if len(out) != 1 {
		t.Fatalf("got %d flows, want 1", len(out))
	}
	f := out[0]
	if f.Packets != 3 || f.Bytes != 300 || f.TCPFlags != 0x12 || f.EndReason != EndForced || f.SamplingInterval != 8 {
		t.Errorf("got %+v", f)
	}
	if want := clk.epoch.Add(now - 5*time.Second); !f.Start.Equal(want) {
		t.Errorf("start %v, want %v", f.Start, want)
	}
	if want := clk.epoch.Add(now - 2*time.Second); !f.End.Equal(want) {
		t.Errorf("end %v, want %v", f.End, want)
	}
}

func TestCacheExpiry(t *testing.T) {
	cfg := CacheConfig{ActiveTimeout: 60 * time.Second, IdleTimeout: 15 * time.Second, MaxFlows: 10}
	tests := []struct {
		name       string
		start, end time.Duration // before now at Add
		wait       time.Duration
		want       EndReason // 0: still cached
	}{
		{"fresh", 0, 0, 14 * time.Second, 0},
		{"idle exactly", 0, 0, 15 * time.Second, EndIdleTimeout},
		{"idle", 10 * time.Second, 5 * time.Second, 10 * time.Second, EndIdleTimeout},
		{"active before idle", 59 * time.Second, 0, 2 * time.Second, EndActiveTimeout},
		{"neither", 40 * time.Second, 0, 10 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			c := mustCache(t, cfg, clk)
			c.AddOne(key(7), ptr(pkt(4, 60, clk.mono-tt.start, clk.mono-tt.end)))
			clk.advance(tt.wait)
			out := c.Expire(nil)
			if tt.want == 0 {
				if len(out) != 0 || c.Len() != 1 {
					t.Fatalf("expired %+v, want none", out)
				}
				return
			}
			if len(out) != 1 || out[0].EndReason != tt.want || c.Len() != 0 {
				t.Fatalf("got %+v (cache %d), want one flow ending %v", out, c.Len(), tt.want)
			}
			if out[0].Packets != 4 || out[0].Bytes != 240 {
				t.Errorf("counts %d/%d, want 4/240", out[0].Packets, out[0].Bytes)
			}
		})
	}
}

func ptr(m bpf.NetFlowMetrics) *bpf.NetFlowMetrics { return &m }

// A long flow split at each active timeout gives contiguous records whose
// counts add up to what was added.
func TestCacheActiveSplitAddsUp(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: 10 * time.Second, IdleTimeout: 5 * time.Second, MaxFlows: 10}, clk)
	var sentPk, sentBy uint64
	var out []Flow
	for i := 0; i < 95; i++ { // one poll a second, 3 packets each
		c.AddOne(key(9), ptr(pkt(3, 1000, clk.mono-time.Second+time.Millisecond, clk.mono)))
		sentPk += 3
		sentBy += 3000
		out = c.Expire(out)
		clk.advance(time.Second)
	}
	out = c.Flush(out)
	var gotPk, gotBy uint64
	for i, f := range out {
		gotPk += f.Packets
		gotBy += f.Bytes
		if i > 0 && f.Start.Before(out[i-1].End) {
			t.Errorf("record %d starts %v before the previous end %v", i, f.Start, out[i-1].End)
		}
		if i < len(out)-1 && f.EndReason != EndActiveTimeout {
			t.Errorf("record %d ended %v, want active", i, f.EndReason)
		}
	}
	if gotPk != sentPk || gotBy != sentBy {
		t.Fatalf("exported %d pkts %d bytes, added %d/%d", gotPk, gotBy, sentPk, sentBy)
	}
	if len(out) < 9 {
		t.Errorf("got %d records over 95 s with a 10 s active timeout", len(out))
	}
}

func TestCacheFullExportsLeastRecentlySeen(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxFlows: 2}, clk)
	for p := uint16(1); p <= 5; p++ {
		c.AddOne(key(p), ptr(pkt(1, 80, clk.mono, clk.mono)))
	}
	if c.Len() != 2 {
		t.Fatalf("cache holds %d flows, want 2", c.Len())
	}
	out := c.Expire(nil)
	if len(out) != 3 {
		t.Fatalf("got %d records, want 3 for lack of resources", len(out))
	}
	for i, f := range out {
		// Each new flow pushed out the oldest: 1, 2, then 3.
		if f.EndReason != EndLackOfResources || f.Packets != 1 || f.Key != KeyOf(key(uint16(i+1))) {
			t.Errorf("record %d: got %+v", i, f)
		}
	}
	out = c.Flush(nil)
	if len(out) != 2 || out[0].Key != KeyOf(key(4)) || out[1].Key != KeyOf(key(5)) {
		t.Errorf("flush %+v, want flows 4 and 5", out)
	}
	if st := c.Stats(); st.Exported[EndLackOfResources] != 3 || st.Exported[EndForced] != 2 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A packet of a cached flow makes it the most recently seen: the next new
// flow pushes out the other one.
func TestCacheFullKeepsRecentlySeen(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxFlows: 3}, clk)
	for _, p := range []uint16{1, 2, 3, 1, 4, 5} {
		c.AddOne(key(p), ptr(pkt(1, 80, clk.mono, clk.mono)))
		clk.advance(time.Millisecond)
	}
	out := c.Expire(nil)
	if len(out) != 2 || out[0].Key != KeyOf(key(2)) || out[1].Key != KeyOf(key(3)) {
		t.Fatalf("pushed out %+v, want flows 2 and 3", out)
	}
	out = c.Flush(nil)
	if len(out) != 3 || out[0].Key != KeyOf(key(1)) || out[0].Packets != 2 {
		t.Fatalf("flush %+v, want flow 1 (2 packets) first", out)
	}
}

func tcpKey(port uint16) bpf.NetFlowId {
	id := key(port)
	id.TransportProtocol = 6
	id.DstPort = 443
	return id
}

// step is one event of a cache scenario: packets added at the current time
// (with TCP flags), then the clock advanced, then Expire.
type step struct {
	pkts  uint64
	flags uint16
	wait  time.Duration
}

// Every end reason, on a fake clock. Each scenario runs one flow through
// steps and checks the records Expire and Flush give.
func TestCacheEndReasons(t *testing.T) {
	cfg := CacheConfig{ActiveTimeout: 60 * time.Second, IdleTimeout: 15 * time.Second, MaxFlows: 10, TCPEndGrace: 2 * time.Second}
	type rec struct {
		reason EndReason
		pkts   uint64
	}
	tests := []struct {
		name  string
		tcp   bool
		steps []step
		want  []rec // from Expire after the steps, then Flush
	}{
		{"idle", true, []step{{3, 0x10, 15 * time.Second}}, []rec{{EndIdleTimeout, 3}}},
		{"active", true, []step{{1, 0x02, 10 * time.Second}, {1, 0x10, 10 * time.Second}, {1, 0x10, 10 * time.Second},
			{1, 0x10, 10 * time.Second}, {1, 0x10, 10 * time.Second}, {1, 0x10, 10 * time.Second}, {1, 0x10, 0}},
			[]rec{{EndActiveTimeout, 6}, {EndForced, 1}}},
		{"fin", true, []step{{5, 0x12, time.Second}, {1, 0x11, 2 * time.Second}}, []rec{{EndOfFlowDetected, 6}}},
		{"rst", true, []step{{2, 0x02, time.Second}, {1, 0x04, 2 * time.Second}}, []rec{{EndOfFlowDetected, 3}}},
		{"fin not yet", true, []step{{1, 0x11, 1999 * time.Millisecond}}, []rec{{EndForced, 1}}},
		// The last ACK after the FIN lands in the same record; the grace
		// runs from the last packet.
		{"fin then ack within grace", true, []step{{4, 0x11, time.Second}, {1, 0x10, 1500 * time.Millisecond}, {1, 0x10, 2 * time.Second}},
			[]rec{{EndOfFlowDetected, 6}}},
		// A packet after the grace starts a new flow, which has no FIN.
		{"fin then ack after grace", true, []step{{4, 0x11, 2 * time.Second}, {1, 0x10, 0}},
			[]rec{{EndOfFlowDetected, 4}, {EndForced, 1}}},
		{"fin beats active", true, []step{{1, 0x02, 10 * time.Second}, {1, 0x10, 10 * time.Second}, {1, 0x10, 10 * time.Second},
			{1, 0x10, 10 * time.Second}, {1, 0x10, 10 * time.Second}, {1, 0x01, 10 * time.Second}}, []rec{{EndOfFlowDetected, 6}}},
		// Bit 0 of a UDP flow is not a FIN.
		{"udp flags ignored", false, []step{{1, 0x01, 2 * time.Second}}, []rec{{EndForced, 1}}},
		{"forced", true, []step{{7, 0x18, time.Second}}, []rec{{EndForced, 7}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			c := mustCache(t, cfg, clk)
			id := key(7)
			if tt.tcp {
				id = tcpKey(7)
			}
			var out []Flow
			for _, s := range tt.steps {
				m := pkt(s.pkts, 100, clk.mono, clk.mono)
				m.Flags = s.flags
				c.AddOne(id, &m)
				clk.advance(s.wait)
				out = c.Expire(out)
			}
			out = c.Flush(out)
			if len(out) != len(tt.want) {
				t.Fatalf("got %d records %+v, want %v", len(out), out, tt.want)
			}
			var counts [6]uint64
			for i, w := range tt.want {
				if out[i].EndReason != w.reason || out[i].Packets != w.pkts || out[i].Bytes != 100*w.pkts {
					t.Errorf("record %d: %v, %d packets, %d bytes; want %v, %d packets", i, out[i].EndReason, out[i].Packets, out[i].Bytes, w.reason, w.pkts)
				}
				counts[w.reason]++
			}
			if st := c.Stats(); st.Exported != counts || st.Active != 0 {
				t.Errorf("stats %+v, want exported %v", st, counts)
			}
		})
	}
}

// The FIN's record carries every flag seen, and its end time is the last
// packet's, not the export time.
func TestCacheFINRecord(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 10}, clk)
	start := clk.mono
	c.AddOne(tcpKey(1), &bpf.NetFlowMetrics{Packets: 3, Bytes: 180, StartMonoTimeTs: uint64(start), EndMonoTimeTs: uint64(start + time.Second), Flags: 0x02 | 0x10})
	c.AddOne(tcpKey(1), &bpf.NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: uint64(start + 3*time.Second), EndMonoTimeTs: uint64(start + 3*time.Second), Flags: 0x11})
	clk.advance(3*time.Second + DefaultTCPEndGrace - time.Nanosecond)
	if out := c.Expire(nil); len(out) != 0 {
		t.Fatalf("expired %+v before the default grace", out)
	}
	clk.advance(time.Nanosecond)
	out := c.Expire(nil)
	if len(out) != 1 {
		t.Fatalf("got %+v, want one record", out)
	}
	f := out[0]
	if f.EndReason != EndOfFlowDetected || f.TCPFlags != 0x13 || f.Packets != 4 || f.Bytes != 240 {
		t.Errorf("got %+v", f)
	}
	if want := clk.epoch.Add(start + 3*time.Second); !f.End.Equal(want) {
		t.Errorf("end %v, want %v", f.End, want)
	}
}

// A grace longer than the idle timeout gives way to it, but a TCP end is
// still reported as such.
func TestCacheGraceCappedByIdle(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Second, MaxFlows: 10, TCPEndGrace: 5 * time.Second}, clk)
	c.AddOne(tcpKey(1), &bpf.NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: uint64(clk.mono), EndMonoTimeTs: uint64(clk.mono), Flags: 0x01})
	clk.advance(time.Second)
	if out := c.Expire(nil); len(out) != 1 || out[0].EndReason != EndOfFlowDetected {
		t.Fatalf("got %+v, want one end-of-flow record", out)
	}
}

func TestCacheConfigValidate(t *testing.T) {
	for _, cfg := range []CacheConfig{
		{ActiveTimeout: 0, IdleTimeout: time.Second, MaxFlows: 1},
		{ActiveTimeout: time.Second, IdleTimeout: -1, MaxFlows: 1},
		{ActiveTimeout: time.Second, IdleTimeout: time.Second, MaxFlows: 0},
		{ActiveTimeout: time.Second, IdleTimeout: time.Second, MaxFlows: 1, TCPEndGrace: -1},
	} {
		if _, err := NewCache(cfg, newFakeClock()); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestCacheBytesOnly: a drain may hand out bytes with no packets (bytes of
// packets it handed out before, read ahead of their count): they are added
// to the cached flow, or start a record of 0 packets when the flow is no
// longer cached, never dropped.
func TestCacheBytesOnly(t *testing.T) {
	bytesOnly := func(n uint64, at time.Duration) *bpf.NetFlowMetrics {
		return &bpf.NetFlowMetrics{Bytes: n, StartMonoTimeTs: uint64(at), EndMonoTimeTs: uint64(at)}
	}
	for _, tc := range []struct {
		name           string
		add            func(c *Cache, now time.Duration)
		packets, bytes uint64
	}{
		{name: "merged into its flow", add: func(c *Cache, now time.Duration) {
			c.AddOne(key(1), ptr(pkt(2, 100, now-time.Second, now)))
			c.AddOne(key(1), bytesOnly(50, now))
		}, packets: 2, bytes: 250},
		{name: "before the flow's packets", add: func(c *Cache, now time.Duration) {
			c.AddOne(key(1), bytesOnly(50, now-2*time.Second))
			c.AddOne(key(1), ptr(pkt(2, 100, now-time.Second, now)))
		}, packets: 2, bytes: 250},
		{name: "flow no longer cached", add: func(c *Cache, now time.Duration) {
			c.AddOne(key(1), bytesOnly(50, now))
		}, packets: 0, bytes: 50},
		{name: "per-CPU value between its increments", add: func(c *Cache, now time.Duration) {
			c.Add(key(1), []bpf.NetFlowMetrics{*bytesOnly(78, now), pkt(1, 78, now, now)})
		}, packets: 1, bytes: 156},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 10}, clk)
			tc.add(c, clk.mono)
			out := c.Flush(nil)
			if len(out) != 1 {
				t.Fatalf("got %d flows, want 1: %+v", len(out), out)
			}
			if out[0].Packets != tc.packets || out[0].Bytes != tc.bytes {
				t.Errorf("packets %d bytes %d, want %d and %d", out[0].Packets, out[0].Bytes, tc.packets, tc.bytes)
			}
		})
	}
}
