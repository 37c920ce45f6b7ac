package exporter

import (
	"testing"
	"time"
)

func TestCacheSnapshot(t *testing.T) {
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 15 * time.Second, MaxFlows: 10}, clk)
	now := clk.mono
	c.AddOne(key(1), ptr(pkt(3, 100, now-2*time.Second, now-time.Second)))
	c.AddOne(key(2), ptr(pkt(5, 60, now-time.Second, now)))
	c.AddOne(key(1), ptr(pkt(1, 100, now, now)))

	snap := c.Snapshot(nil)
	if len(snap) != 2 {
		t.Fatalf("snapshot: %d flows, want 2", len(snap))
	}
	// Most recently seen first: key 1 was seen last.
	if snap[0].Key != KeyOf(key(1)) || snap[0].Packets != 4 || snap[0].Bytes != 400 || snap[0].EndReason != 0 {
		t.Errorf("first: %+v", snap[0])
	}
	if snap[1].Key != KeyOf(key(2)) || snap[1].Packets != 5 || snap[1].Bytes != 300 {
		t.Errorf("second: %+v", snap[1])
	}
	if want := clk.Now().Add(-2 * time.Second); !snap[0].Start.Equal(want) {
		t.Errorf("start %v, want %v", snap[0].Start, want)
	}
	// Nothing changed: the flows are still cached, nothing counted.
	if c.Len() != 2 || c.Stats().Exported != ([6]uint64{}) {
		t.Errorf("after snapshot: len %d, stats %+v", c.Len(), c.Stats())
	}
	if p, b := c.Totals(); p != 9 || b != 700 {
		t.Errorf("Totals() = %d packets, %d bytes; want 9, 700", p, b)
	}
	flushed := c.Flush(nil)
	if len(flushed) != 2 || flushed[0].Packets+flushed[1].Packets != 9 {
		t.Errorf("flush after snapshot: %+v", flushed)
	}
}
