package bpf

import "testing"

// TestDivertedAfterSamplingChange: records the old programs diverted
// before a sampling change (read before or after the drain that empties
// their map) do not make the next Drain switch the new programs' map; a
// record of the new map diverted after its first read does.
func TestDivertedAfterSamplingChange(t *testing.T) {
	requirePrivileges(t)
	f := newTestFetcher(t, 64)
	fm := f.maps()
	if err := f.SetSampling(1); err != nil {
		t.Fatal(err)
	}
	old := Record{Metrics: NetFlowMetrics{Packets: 1, Bytes: 48, Epoch: fm.epoch}}
	if fm.Diverted(&old) {
		t.Error("a record read before the old map's drain counts as the active map's")
	}
	drain(t, f) // the old programs' map
	if fm.Diverted(&old) {
		t.Error("a record of the old programs read after their map's drain counts as the active map's")
	}
	switches := fm.switches
	drain(t, f)
	if fm.switches != switches {
		t.Errorf("the drain after the old map's switched maps %d times, want 0", fm.switches-switches)
	}
	cur := Record{Metrics: NetFlowMetrics{Packets: 1, Bytes: 48, Epoch: fm.epoch}}
	if !fm.Diverted(&cur) {
		t.Error("a record of the new programs' map, full after its first read, is not the active map's")
	}
}
