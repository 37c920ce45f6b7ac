package bpf

import (
	"testing"
)

// TestCoarseClockCache checks that the TC programs take the coarse clock
// from their per-CPU cache while jiffies stays the same: after a packet,
// the cache of the CPU that ran it holds the flow's end time; with that
// value moved one nanosecond on (same jiffies), the next packet must
// store the moved value, not a fresh clock read. A tick between the two
// packets makes the program read the clock again, so the test retries.
func TestCoarseClockCache(t *testing.T) {
	requirePrivileges(t)
	f := newTestFetcher(t, 64)
	frame := ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: protoUDP}.build(udp(1, 2, bytesN(30))))
	zero := uint32(0)

	for attempt := 0; attempt < 50; attempt++ {
		before := monoCoarse(t)
		runFrame(t, f.progs.IngressFlowParse, frame, nil)
		after := monoNow(t)
		var caches []NetCoarseClockCache
		if err := f.objs.CoarseClock.Lookup(&zero, &caches); err != nil {
			t.Fatalf("lookup coarse_clock: %v", err)
		}
		flows := drain(t, f)
		if len(flows) != 1 {
			t.Fatalf("got %d flows, want 1: %v", len(flows), flows)
		}
		var end uint64
		for _, m := range flows {
			end = m.EndMonoTimeTs
		}
		if end < before || end > after {
			t.Fatalf("end time %d outside [%d, %d] (coarse clock before, clock after)", end, before, after)
		}
		cpu := -1
		for i, c := range caches {
			if c.Ns == end {
				cpu = i
			}
		}
		if cpu < 0 {
			t.Fatalf("no CPU's cache holds the end time %d: %+v", end, caches)
		}

		// Every CPU (the test may move to another): the jiffies of that
		// read, and a value the clock cannot give before the next tick.
		moved := end + 1
		jiffies := caches[cpu].Jiffies
		for i := range caches {
			caches[i] = NetCoarseClockCache{Jiffies: jiffies, Ns: moved}
		}
		if err := f.objs.CoarseClock.Put(&zero, caches); err != nil {
			t.Fatalf("update coarse_clock: %v", err)
		}
		runFrame(t, f.progs.IngressFlowParse, frame, nil)
		flows = drain(t, f)
		for _, m := range flows {
			end = m.EndMonoTimeTs
		}
		if end == moved {
			return // taken from the cache
		}
		if end < moved {
			t.Fatalf("end time %d went back from the cached %d", end, moved)
		}
		// A tick came between: the clock was read again. Try again.
	}
	t.Fatal("50 packets in a row read the clock instead of the per-CPU cache")
}
