package bpf

import (
	"testing"
	"time"
)

// TestReadAhead: a read of a map, live or the deleting read of a map
// switched out, fetches the next batch while the caller still handles the
// last one (readAhead), and hands out every flow once, exactly. The first
// flow handed out waits until the second batch has been fetched: a read
// that fetched only after handing out would wait forever (here, 10 s).
func TestReadAhead(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range []struct {
		name, op string
		del      bool
	}{
		{"live", "batch", false},
		{"delete", "delete batch", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testReadAhead(t, tc.op, tc.del) })
	}
}

func testReadAhead(t *testing.T, op string, del bool) {
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
	fm.testFail = func(o string) error {
		if o == op {
			if fetches++; fetches == 2 {
				close(second)
			}
		}
		return nil
	}
	// Switch first: one deleting read, no live read; or a live read.
	fm.full.Store(del)
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
