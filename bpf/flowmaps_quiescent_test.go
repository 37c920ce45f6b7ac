package bpf

import "testing"

// TestSeenZeroPackets: totals without packets are not recorded. A slot
// with 0 packets is free: had they been recorded, the next flow that
// probes to that slot would start from them, and its bytes delta would
// wrap around.
func TestSeenZeroPackets(t *testing.T) {
	tab := newTestSeenTable(t)
	k1 := seenKey(1)
	if err := tab.set(&k1, flowTotals{bytes: 1500}); err != nil {
		t.Fatal(err)
	}
	if tab.len() != 0 {
		t.Errorf("len %d after recording totals without packets, want 0", tab.len())
	}
	h1 := tab.hash(&k1)
	p1 := h1 >> (64 - seenPartsShift)
	s1 := tab.parts[p1].index(&k1, h1)
	for i := 2; i < 2_000_000; i++ {
		k2 := seenKey(i)
		h2 := tab.hash(&k2)
		if h2>>(64-seenPartsShift) != p1 || tab.parts[p1].index(&k2, h2) != s1 {
			continue
		}
		if prev := tab.get(&k2); prev != (flowTotals{}) {
			t.Fatalf("flow %d probing to flow 1's slot starts from %+v, want nothing", i, prev)
		}
		return
	}
	t.Fatal("no key probes to flow 1's slot")
}

// putFlow4 writes one IPv4 flow's per-CPU values into the active map, as
// programs on CPU 0 would have counted them.
func putFlow4(t *testing.T, fm *flowMaps, k NetFlowId4, cpu0 NetFlowMetrics) {
	t.Helper()
	v := make([]NetFlowMetrics, fm.ncpu)
	v[0] = cpu0
	if err := fm.shared.flows4[fm.active].Put(&k, v); err != nil {
		t.Fatal(err)
	}
}

// TestDrainAfterDetachBytesAhead: a Drain after a Detach reads the active
// map live (other interfaces' programs may still count). A program found
// between a new flow's byte and packet increments leaves bytes without
// packets: they wait for the packet, whether other hooks remain or not,
// and the totals are exact. With a hook left, bytes ahead of an old flow's
// packets wait too (the read is not quiescent).
func TestDrainAfterDetachBytesAhead(t *testing.T) {
	requirePrivileges(t)
	for _, hooks := range []int32{0, 1} {
		f := newTestFetcher(t, 64)
		fm := f.maps()
		fm.hooks.Store(hooks)
		newFlow, oldFlow := seenKey(1), seenKey(2)
		putFlow4(t, fm, oldFlow, NetFlowMetrics{Packets: 5, Bytes: 500, EndMonoTimeTs: 1, Epoch: fm.epoch})
		if got := drain(t, f); len(got) != 1 {
			t.Fatalf("hooks %d: first drain: %v, want the old flow", hooks, got)
		}
		putFlow4(t, fm, newFlow, NetFlowMetrics{Bytes: 1500, Epoch: fm.epoch})
		putFlow4(t, fm, oldFlow, NetFlowMetrics{Packets: 5, Bytes: 600, EndMonoTimeTs: 1, Epoch: fm.epoch})
		fm.detached.Store(true)
		got := drain(t, f)
		if m, ok := got[newFlow.id()]; ok {
			t.Errorf("hooks %d: drain after the detach handed out the new flow's bytes without packets: %+v", hooks, m)
		}
		if m, ok := got[oldFlow.id()]; ok && hooks > 0 {
			t.Errorf("hooks %d: a live read handed out bytes ahead of their packets: %+v", hooks, m)
		}
		if fm.seen4.len() != 1 {
			t.Errorf("hooks %d: %d flows recorded, want 1", hooks, fm.seen4.len())
		}
		putFlow4(t, fm, newFlow, NetFlowMetrics{Packets: 1, Bytes: 1500, EndMonoTimeTs: 1, Epoch: fm.epoch})
		putFlow4(t, fm, oldFlow, NetFlowMetrics{Packets: 6, Bytes: 600, EndMonoTimeTs: 1, Epoch: fm.epoch})
		got2 := drain(t, f)
		if m := got2[newFlow.id()]; m.Packets != 1 || m.Bytes != 1500 {
			t.Errorf("hooks %d: new flow: %d packets, %d bytes; want 1, 1500", hooks, m.Packets, m.Bytes)
		}
		m := got[oldFlow.id()]
		m2 := got2[oldFlow.id()]
		if m.Packets+m2.Packets != 1 || m.Bytes+m2.Bytes != 100 {
			t.Errorf("hooks %d: old flow: %d packets, %d bytes since the first drain; want 1, 100", hooks, m.Packets+m2.Packets, m.Bytes+m2.Bytes)
		}
	}
}
