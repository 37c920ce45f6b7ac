package bpf

import (
	"errors"
	"testing"
	"time"
)

// failNth returns a testFail that fails the nth operation op (counting
// from 1), once.
func failNth(op string, nth int) func(string) error {
	n := 0
	return func(o string) error {
		if o != op {
			return nil
		}
		n++
		if n == nth {
			return errors.New("injected " + op + " failure")
		}
		return nil
	}
}

// TestSwitchReadFails: the deleting read of the map a switch leaves fails
// after its first batch (both ways to switch: after the live read, and
// switching first on a full map). The flows it left are read again at the
// next Drain, before the active map, and no flow is held back nor handed
// out twice: what every drain handed out adds up to what the programs
// counted.
func TestSwitchReadFails(t *testing.T) {
	requirePrivileges(t)
	const flows, payload = 10, 20
	const size = 20 + 8 + payload
	for _, switchFirst := range []bool{false, true} {
		f := newTestFetcher(t, 64)
		fm := f.maps()
		fm.maxAge = time.Hour
		fm.testBatch = 4
		got := map[uint16]NetFlowMetrics{}
		drainInto := func() error {
			return fm.Drain(func(id NetFlowId, m []NetFlowMetrics) {
				s := got[id.SrcPort]
				s.Accumulate(&m[0])
				got[id.SrcPort] = s
			})
		}
		run := func() {
			for i := range flows {
				runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(1000+i), payload).frame(), nil)
			}
		}
		run()
		if err := drainInto(); err != nil {
			t.Fatal(err)
		}
		run()
		fm.testFail = failNth("delete batch", 2)
		if switchFirst {
			fm.full.Store(true)
		} else {
			fm.maxAge = 0
		}
		if err := drainInto(); err == nil {
			t.Fatalf("switch first %v: the drain with a failed batch did not fail", switchFirst)
		}
		fm.testFail = nil
		fm.maxAge = time.Hour
		run()
		if err := drainInto(); err != nil {
			t.Fatal(err)
		}
		// Switch at every drain, so that both maps are read out.
		fm.maxAge = 0
		for range 3 {
			if err := drainInto(); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != flows {
			t.Errorf("switch first %v: %d flows, want %d", switchFirst, len(got), flows)
		}
		for sport, m := range got {
			if m.Packets != 3 || m.Bytes != 3*size {
				t.Errorf("switch first %v: flow %d: %d packets, %d bytes; want 3, %d", switchFirst, sport, m.Packets, m.Bytes, 3*size)
			}
		}
	}
}

// TestFinalDrainAfterFailedOldDrain: the drain after a sampling change
// fails (its grace period wait does), so the old programs' map is still
// to be drained when every hook is detached. The last drain then hands
// out both what the old programs counted and what the new ones did since
// the change, exactly: nothing is left in the maps to be lost when they
// close.
func TestFinalDrainAfterFailedOldDrain(t *testing.T) {
	requirePrivileges(t)
	const payload, size = 20, 20 + 8 + 20
	f := newTestFetcher(t, 64)
	fm := f.maps()
	oldProg, err := f.progs.IngressFlowParse.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer oldProg.Close()
	if err := f.SetSampling(1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		runFrame(t, oldProg, udpFlow(7, payload).frame(), nil)
	}
	for range 2 {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(8, payload).frame(), nil)
	}
	fm.testFail = failNth("wait", 1)
	if _, err := fm.LookupAndDeleteMap(); err == nil {
		t.Fatal("the drain with a failed wait did not fail")
	}
	fm.testFail = nil
	fm.detached.Store(true) // every hook gone: the last drain
	got := drain(t, f)
	for sport, want := range map[uint16]uint64{7: 3, 8: 2} {
		var m NetFlowMetrics
		for id, v := range got {
			if id.SrcPort == sport {
				m = v
			}
		}
		if m.Packets != want || m.Bytes != want*size {
			t.Errorf("last drain: flow %d: %d packets, %d bytes; want %d, %d", sport, m.Packets, m.Bytes, want, want*size)
		}
	}
	if rest := drain(t, f); len(rest) != 0 {
		t.Errorf("after the last drain: %v, want nothing", rest)
	}
}
