package bpf

import (
	"testing"
	"unsafe"
)

func seenKey(i int) NetFlowId4 {
	return NetFlowId4{SrcIp: [4]uint8{198, 18, uint8(i >> 16), uint8(i >> 8)}, DstIp: [4]uint8{198, 19, 0, uint8(i)},
		IfIndex: 2, SrcPort: uint16(i), DstPort: 53, TransportProtocol: 17}
}

// TestSeenTable records, updates, reads back and forgets flows across
// growth and reset, for sizes around the steps of the table.
func TestSeenTable(t *testing.T) {
	for _, n := range []int{0, 1, 895, 896, 897, 5000, 100_608} {
		tab := newTestSeenTable(t)
		for i := range n {
			k := seenKey(i)
			if err := tab.set(&k, flowTotals{packets: uint64(i + 1), bytes: 1}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < n; i += 2 { // update half
			k := seenKey(i)
			tab.set(&k, flowTotals{packets: uint64(i + 1), bytes: uint64(i)})
		}
		if tab.len() != n {
			t.Fatalf("n=%d: len %d", n, tab.len())
		}
		for i := range n {
			k := seenKey(i)
			want := flowTotals{packets: uint64(i + 1), bytes: 1}
			if i%2 == 0 {
				want.bytes = uint64(i)
			}
			if got := tab.get(&k); got != want {
				t.Fatalf("n=%d: get(%d) = %+v, want %+v", n, i, got, want)
			}
		}
		if k := seenKey(n); tab.get(&k) != (flowTotals{}) {
			t.Errorf("n=%d: a flow never set has totals %+v", n, tab.get(&k))
		}
		for i := range tab.parts {
			if p := &tab.parts[i]; p.n*8 > len(p.slots)*7 {
				t.Errorf("n=%d: part %d: %d flows in %d slots, more than 7/8 full", n, i, p.n, len(p.slots))
			}
		}
		size := tab.slots()
		tab.reset()
		if tab.len() != 0 {
			t.Errorf("n=%d: len %d after reset", n, tab.len())
		}
		for i := range n {
			k := seenKey(i)
			if got := tab.get(&k); got != (flowTotals{}) {
				t.Fatalf("n=%d: get(%d) after reset = %+v", n, i, got)
			}
		}
		if n > 5000 && tab.slots() != size {
			t.Errorf("n=%d: reset of a table over 1/8 full resized it from %d to %d slots", n, size, tab.slots())
		}
	}
}

// TestSeenTableShrinks: a reset lets a table mostly empty go.
func TestSeenTableShrinks(t *testing.T) {
	tab := newTestSeenTable(t)
	for i := range 100_000 {
		k := seenKey(i)
		tab.set(&k, flowTotals{packets: 1})
	}
	tab.reset()
	big := tab.slots()
	k := seenKey(1)
	tab.set(&k, flowTotals{packets: 1})
	tab.reset()
	if got := tab.slots(); got != big/4 {
		t.Errorf("reset with 1 flow in %d slots: %d slots, want %d", big, got, big/4)
	}
}

// TestSeenTableBytesPerFlow bounds what the handed-out totals of 100,608
// IPv4 flows (bench/memory.sh's flows-100k) cost: the Go map they were in
// cost about 62 bytes per flow.
func TestSeenTableBytesPerFlow(t *testing.T) {
	const n = 100_608
	tab := newTestSeenTable(t)
	for i := range n {
		k := seenKey(i)
		tab.set(&k, flowTotals{packets: 1})
	}
	size := unsafe.Sizeof(seenSlot[NetFlowId4]{})
	per := float64(tab.slots()) * float64(size) / n
	t.Logf("%d flows: %d slots of %d bytes, %.1f bytes per flow", n, tab.slots(), size, per)
	if per > 53 {
		t.Errorf("%.1f bytes per flow, want at most 53", per)
	}
}

func newTestSeenTable(t *testing.T) *seenTable[NetFlowId4] {
	t.Helper()
	tab, err := newSeenTable[NetFlowId4]()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tab.free)
	return tab
}
