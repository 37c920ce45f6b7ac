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
	c.Add(key(1), perCPU)
	out := c.Flush(nil)
	if len(out) != 1 {
		t.Fatalf("got %d flows, want 1", len(out))
	}
	f := out[0]
	if f.Packets != 3 || f.Bytes != 300 || f.TCPFlags != 0x12 || f.EndReason != EndForced {
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

func TestCacheFullExportsLackOfResources(t *testing.T) {
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
	for _, f := range out {
		if f.EndReason != EndLackOfResources || f.Packets != 1 {
			t.Errorf("got %+v", f)
		}
	}
	out = c.Flush(nil)
	if len(out) != 2 || c.Stats().Exported[EndLackOfResources] != 3 || c.Stats().Exported[EndForced] != 2 {
		t.Errorf("flush %d, stats %+v", len(out), c.Stats())
	}
}

func TestCacheConfigValidate(t *testing.T) {
	for _, cfg := range []CacheConfig{
		{ActiveTimeout: 0, IdleTimeout: time.Second, MaxFlows: 1},
		{ActiveTimeout: time.Second, IdleTimeout: -1, MaxFlows: 1},
		{ActiveTimeout: time.Second, IdleTimeout: time.Second, MaxFlows: 0},
	} {
		if _, err := NewCache(cfg, newFakeClock()); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
