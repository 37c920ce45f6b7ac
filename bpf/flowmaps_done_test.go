package bpf

import (
	"errors"
	"testing"
)

// TestDoneReading: once the last drain and the ring buffer's flush are
// done, DoneReading gives back the per-flow totals and the ring buffer's
// mapping; a later Drain or ReadRingBuf fails with ErrDoneReading instead
// of reading freed memory, while the counters and Close still work.
func TestDoneReading(t *testing.T) {
	requirePrivileges(t)
	f := newTestFetcher(t, 64)
	fm := f.maps()
	putFlow4(t, fm, seenKey(1), NetFlowMetrics{Packets: 5, Bytes: 500, EndMonoTimeTs: 1, Epoch: fm.epoch})
	n := 0
	if err := fm.Drain(func(NetFlowId, []NetFlowMetrics) { n++ }); err != nil || n != 1 {
		t.Fatalf("Drain: %d flows, %v; want 1", n, err)
	}
	if fm.seen4.slots() == 0 {
		t.Fatal("no totals recorded by the live read")
	}
	if err := fm.DoneReading(); err != nil {
		t.Fatalf("DoneReading: %v", err)
	}
	if s := fm.seen4.slots() + fm.seen.slots(); s != 0 {
		t.Errorf("%d totals slots still mapped after DoneReading", s)
	}
	if err := fm.Drain(func(NetFlowId, []NetFlowMetrics) {}); !errors.Is(err, ErrDoneReading) {
		t.Errorf("Drain after DoneReading: %v, want ErrDoneReading", err)
	}
	if _, err := fm.ReadRingBuf(); !errors.Is(err, ErrDoneReading) {
		t.Errorf("ReadRingBuf after DoneReading: %v, want ErrDoneReading", err)
	}
	if err := fm.FlushRingBuf(); !errors.Is(err, ErrDoneReading) {
		t.Errorf("FlushRingBuf after DoneReading: %v, want ErrDoneReading", err)
	}
	if _, err := fm.ReadCounters(); err != nil {
		t.Errorf("ReadCounters after DoneReading: %v", err)
	}
	if err := fm.DoneReading(); err != nil {
		t.Errorf("DoneReading again: %v", err)
	}
}
