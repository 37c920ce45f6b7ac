package exporter

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/hostflow/hostflow/bpf"
)

// floodKey is the i-th of many distinct flows.
func floodKey(i int) bpf.NetFlowId {
	id := key(uint16(i))
	id.DstPort = uint16(i >> 16)
	id.SrcIp[14] = uint8(i >> 24)
	return id
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The cache costs at most 96 bytes of heap per IPv4 flow: an 80-byte
// entry (key, metrics, LRU links) and the index; an IPv6 flow's addresses
// take 32 more (issue 11: 100k flows in 30 MB of RSS). A Go map of
// pointers to list nodes took about 200, the kernel's key and metrics in
// each entry about 115.
func TestCacheMemoryPerFlow(t *testing.T) {
	const n = 100_000
	for _, tc := range []struct {
		name  string
		key   func(int) bpf.NetFlowId
		limit float64
	}{
		{"ipv4", floodKey, 96},
		{"ipv6", func(i int) bpf.NetFlowId {
			id := floodKey(i)
			id.EthProtocol = 0x86dd
			id.SrcIp[0], id.DstIp[0] = 0xfd, 0xfd
			return id
		}, 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			before := heapInUse()
			c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxFlows: DefaultMaxFlows}, clk)
			m := pkt(1, 60, clk.mono, clk.mono)
			for i := range n {
				c.AddOne(tc.key(i), &m)
			}
			used := heapInUse() - before
			if c.Len() != n {
				t.Fatalf("%d flows cached, want %d", c.Len(), n)
			}
			perFlow := float64(used) / n
			t.Logf("%d flows: %d bytes of heap, %.0f per flow", n, used, perFlow)
			if perFlow > tc.limit {
				t.Errorf("%d flows take %d bytes of heap, %.0f per flow; want at most %.0f", n, used, perFlow, tc.limit)
			}
			runtime.KeepAlive(c)
		})
	}
}

// A flood of new flows into a full cache leaves its memory where max_flows
// put it, as long as the pushed-out records are taken in batches.
func TestCacheMemoryBoundedUnderFlood(t *testing.T) {
	const maxFlows, flood, batch = 10_000, 300_000, 1024
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxFlows: maxFlows}, clk)
	m := pkt(1, 60, clk.mono, clk.mono)
	buf := make([]Flow, 0, batch)
	var pushedOut int
	for i := range maxFlows {
		c.AddOne(floodKey(i), &m)
	}
	before := heapInUse()
	for i := maxFlows; i < maxFlows+flood; i++ {
		c.AddOne(floodKey(i), &m)
		if c.Pending() >= batch {
			pushedOut += len(c.TakePending(buf[:0]))
		}
	}
	grown := int64(heapInUse()) - int64(before)
	pushedOut += len(c.TakePending(buf[:0]))
	if pushedOut != flood || c.Len() != maxFlows {
		t.Errorf("%d records pushed out, %d flows cached; want %d and %d", pushedOut, c.Len(), flood, maxFlows)
	}
	// The pending list holds at most a batch of records.
	if limit := int64(batch) * 2 * int64(unsafe.Sizeof(Flow{})); grown > limit {
		t.Errorf("heap grew by %d bytes under a flood of %d new flows, want at most %d", grown, flood, limit)
	}
}

// The index agrees with a Go map through any mix of inserts, hits,
// expiries and pushed-out flows, growth and backward-shift deletion
// included.
func TestCacheTableMatchesMap(t *testing.T) {
	const maxFlows = 3000
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: 10 * time.Millisecond, MaxFlows: maxFlows}, clk)
	model := map[bpf.NetFlowId]uint64{} // packets not yet exported
	exported := map[FlowKey]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	collect := func(b []Flow) {
		for _, f := range b {
			exported[f.Key] += f.Packets
		}
	}
	var added uint64
	for step := range 200_000 {
		id := floodKey(rng.IntN(8000))
		m := pkt(1+uint64(rng.IntN(3)), 60, clk.mono, clk.mono)
		c.AddOne(id, &m)
		model[id] += m.Packets
		added += m.Packets
		if step%997 == 0 {
			clk.advance(time.Duration(rng.IntN(20)) * time.Millisecond)
			c.ExpireBatches(make([]Flow, 0, 7), collect)
		}
		if c.Len() > maxFlows {
			t.Fatalf("step %d: %d flows cached, max %d", step, c.Len(), maxFlows)
		}
	}
	c.FlushBatches(make([]Flow, 0, 5), collect)
	var sum uint64
	for id, n := range model {
		if exported[KeyOf(id)] != n {
			t.Fatalf("flow %v: exported %d packets, added %d", id, exported[KeyOf(id)], n)
		}
		sum += exported[KeyOf(id)]
	}
	if sum != added || len(exported) != len(model) || c.Len() != 0 {
		t.Errorf("exported %d packets of %d flows, added %d of %d; %d left", sum, len(exported), added, len(model), c.Len())
	}
}

// ExpireBatches and FlushBatches hand out what Expire and Flush return, in
// batches no larger than the buffer.
func TestCacheBatches(t *testing.T) {
	for _, size := range []int{1, 3, 64, 1000} {
		clk := newFakeClock()
		a := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Second, MaxFlows: 50}, clk)
		b := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Second, MaxFlows: 50}, clk)
		// 0..69 are pushed out, 70..99 go idle, 100..119 stay.
		for i := range 120 {
			m := pkt(1, 60, clk.mono, clk.mono)
			a.AddOne(floodKey(i), &m)
			b.AddOne(floodKey(i), &m)
			if i == 99 {
				clk.advance(2 * time.Second)
			}
		}
		var got []Flow
		collect := func(batch []Flow) {
			if len(batch) == 0 || len(batch) > size {
				t.Errorf("size %d: batch of %d", size, len(batch))
			}
			got = append(got, batch...)
		}
		a.ExpireBatches(make([]Flow, 0, size), collect)
		want := b.Expire(nil)
		if len(want) != 100 || !equalFlows(got, want) {
			t.Errorf("size %d: ExpireBatches gave %d records, Expire %d (want 100)", size, len(got), len(want))
		}
		got = nil
		a.FlushBatches(make([]Flow, 0, size), collect)
		want = b.Flush(nil)
		if len(want) != 20 || !equalFlows(got, want) {
			t.Errorf("size %d: FlushBatches gave %d records, Flush %d (want 20)", size, len(got), len(want))
		}
	}
}

func equalFlows(a, b []Flow) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Packets != b[i].Packets || a[i].EndReason != b[i].EndReason || !a[i].End.Equal(b[i].End) {
			return false
		}
	}
	return true
}

// Once every flow of a burst has expired, the cache lets go of the memory
// the burst grew: it does not keep its peak size as a Go map does.
func TestCacheMemoryReleasedWhenEmpty(t *testing.T) {
	const n = 50_000
	clk := newFakeClock()
	before := heapInUse()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Second, MaxFlows: DefaultMaxFlows}, clk)
	m := pkt(1, 60, clk.mono, clk.mono)
	for i := range n {
		c.AddOne(floodKey(i), &m)
	}
	clk.advance(2 * time.Second)
	expired := 0
	c.ExpireBatches(make([]Flow, 0, 256), func(b []Flow) { expired += len(b) })
	if expired != n || c.Len() != 0 {
		t.Fatalf("expired %d of %d flows, %d left", expired, n, c.Len())
	}
	if left := int64(heapInUse()) - int64(before); left > 64<<10 {
		t.Errorf("an empty cache still holds %d bytes", left)
	}
	runtime.KeepAlive(c)
}
