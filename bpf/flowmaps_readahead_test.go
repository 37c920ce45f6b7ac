package bpf

import (
	"testing"
	"time"
)

// TestDeletingReadReadsAhead: the deleting read of a map switched out
// fetches the next batch while the caller still handles the last one
// (readAhead), and hands out every flow once, exactly. The first flow
// handed out waits until the second batch has been fetched: a read that
// fetched only after handing out would wait forever (here, 10 s).
func TestDeletingReadReadsAhead(t *testing.T) {
	requirePrivileges(t)
	const flows, payload = 10, 20
	const size = 20 + 8 + payload
	f := newTestFetcher(t, 64)
	fm := f.maps()
	fm.maxAge = time.Hour
	fm.testBatch = 4
	for i := range flows {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(1000+i), payload).frame(), nil)
	}
	fetches := 0
	second := make(chan struct{})
	fm.testFail = func(op string) error {
		if op == "delete batch" {
			if fetches++; fetches == 2 {
				close(second)
			}
		}
		return nil
	}
	fm.full.Store(true) // switch first: one deleting read, no live read
	got := map[uint16]NetFlowMetrics{}
	waited := false
	err := fm.Drain(func(id NetFlowId, m []NetFlowMetrics) {
		if !waited {
			waited = true
			select {
			case <-second:
			case <-time.After(10 * time.Second):
				t.Error("the second batch was not fetched while the first was handed out")
			}
		}
		s := got[id.SrcPort]
		s.Accumulate(&m[0])
		got[id.SrcPort] = s
	})
	if err != nil {
		t.Fatal(err)
	}
	if fetches < 3 { // 4 + 4 + 2 flows, then the empty map
		t.Errorf("%d batches fetched, want at least 3 of at most 4 flows", fetches)
	}
	if len(got) != flows {
		t.Errorf("%d flows, want %d", len(got), flows)
	}
	for sport, m := range got {
		if m.Packets != 1 || m.Bytes != size {
			t.Errorf("flow %d: %d packets, %d bytes; want 1, %d", sport, m.Packets, m.Bytes, size)
		}
	}
}
