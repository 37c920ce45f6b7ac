package bpf

import "testing"

// TestDelta checks what delta hands out of one flow's per-CPU values read
// live (a program may be between its byte and packet increments) or from a
// quiescent map (after a grace period, with deletion): whatever grew is
// handed out, so that the totals telescope exactly, and the sampling rate
// is that of the CPUs that counted the new packets.
func TestDelta(t *testing.T) {
	const epoch, lastRead = 7, 1000
	for _, tc := range []struct {
		name      string
		prev      flowTotals
		perCPU    []NetFlowMetrics
		quiescent bool
		want      *NetFlowMetrics // nil: nothing handed out
		wantTot   flowTotals      // the totals kept when handed out
	}{
		{name: "new flow", perCPU: []NetFlowMetrics{{Packets: 2, Bytes: 200, StartMonoTimeTs: 1100, EndMonoTimeTs: 1200, Epoch: epoch, Sampling: 1}},
			want: &NetFlowMetrics{Packets: 2, Bytes: 200, StartMonoTimeTs: 1100, EndMonoTimeTs: 1200, Sampling: 1}, wantTot: flowTotals{2, 200}},
		{name: "nothing new", prev: flowTotals{5, 500}, perCPU: []NetFlowMetrics{{Packets: 5, Bytes: 500, EndMonoTimeTs: 900, Epoch: epoch - 1, Sampling: 1}}},
		{name: "nothing new quiescent", prev: flowTotals{5, 500}, quiescent: true,
			perCPU: []NetFlowMetrics{{Packets: 5, Bytes: 500, EndMonoTimeTs: 900, Epoch: epoch - 1, Sampling: 1}}},
		// A live read saw a packet's bytes before its count: held in
		// the totals table until the packet count grows.
		{name: "bytes ahead live", prev: flowTotals{5, 500},
			perCPU: []NetFlowMetrics{{Packets: 5, Bytes: 600, EndMonoTimeTs: 1100, Epoch: epoch, Sampling: 1}}},
		// A quiescent read hands the bytes out: no further read of
		// this map will.
		{name: "bytes only quiescent", prev: flowTotals{5, 500}, quiescent: true,
			perCPU: []NetFlowMetrics{{Packets: 5, Bytes: 600, StartMonoTimeTs: 800, EndMonoTimeTs: 900, Epoch: epoch - 1, Sampling: 4}},
			want:   &NetFlowMetrics{Packets: 0, Bytes: 100, StartMonoTimeTs: 900, EndMonoTimeTs: 900, Sampling: 4}, wantTot: flowTotals{5, 600}},
		{name: "packets and bytes grew", prev: flowTotals{5, 500},
			perCPU: []NetFlowMetrics{{Packets: 6, Bytes: 650, StartMonoTimeTs: 1100, EndMonoTimeTs: 1100, Epoch: epoch, Sampling: 1}},
			want:   &NetFlowMetrics{Packets: 1, Bytes: 150, StartMonoTimeTs: 1100, EndMonoTimeTs: 1100, Sampling: 1}, wantTot: flowTotals{6, 650}},
		// CPU 0 counted at 1:10 before the last read (a reload since);
		// only CPU 1, at 1:1, counted since: the delta is at 1:1.
		{name: "sampling of the new packets only", prev: flowTotals{10, 1000},
			perCPU: []NetFlowMetrics{
				{Packets: 10, Bytes: 1000, StartMonoTimeTs: 100, EndMonoTimeTs: 500, Epoch: epoch - 2, Sampling: 10},
				{Packets: 3, Bytes: 300, StartMonoTimeTs: 1100, EndMonoTimeTs: 1300, Epoch: epoch, Sampling: 1},
			},
			want: &NetFlowMetrics{Packets: 3, Bytes: 300, StartMonoTimeTs: 1100, EndMonoTimeTs: 1300, Sampling: 1}, wantTot: flowTotals{13, 1300}},
		// A CPU still on the previous epoch whose last packet came after
		// the last read began counted some of the new packets.
		{name: "sampling of a CPU after the last read", prev: flowTotals{10, 1000},
			perCPU: []NetFlowMetrics{
				{Packets: 12, Bytes: 1200, StartMonoTimeTs: 100, EndMonoTimeTs: 1050, Epoch: epoch - 1, Sampling: 2},
				{Packets: 1, Bytes: 100, StartMonoTimeTs: 100, EndMonoTimeTs: 200, Epoch: epoch - 3, Sampling: 10},
			},
			want: &NetFlowMetrics{Packets: 3, Bytes: 300, StartMonoTimeTs: 1050, EndMonoTimeTs: 1050, Sampling: 2}, wantTot: flowTotals{13, 1300}},
		// Router mode's forwarded flows: the egress interface of the
		// CPU that counted last, wherever it comes in the slice.
		{name: "out interface of the latest CPU", prev: flowTotals{1, 100},
			perCPU: []NetFlowMetrics{
				{Packets: 2, Bytes: 200, StartMonoTimeTs: 1100, EndMonoTimeTs: 1400, Epoch: epoch, Sampling: 1, OutIfIndex: 5},
				{Packets: 1, Bytes: 100, StartMonoTimeTs: 1100, EndMonoTimeTs: 1200, Epoch: epoch, Sampling: 1, OutIfIndex: 3},
				{Packets: 1, Bytes: 100, StartMonoTimeTs: 900, EndMonoTimeTs: 900, Epoch: epoch - 1, Sampling: 1},
			},
			want: &NetFlowMetrics{Packets: 3, Bytes: 300, StartMonoTimeTs: 1100, EndMonoTimeTs: 1400, Sampling: 1, OutIfIndex: 5}, wantTot: flowTotals{4, 400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := &flowMaps{epoch: epoch, lastRead: lastRead}
			var out NetFlowMetrics
			tot, ok := fm.delta(&out, tc.prev, tc.perCPU, tc.quiescent)
			if tc.want == nil {
				if ok {
					t.Fatalf("handed out %+v, want nothing", out)
				}
				return
			}
			if !ok {
				t.Fatalf("handed out nothing, want %+v", *tc.want)
			}
			if out != *tc.want {
				t.Errorf("handed out %+v, want %+v", out, *tc.want)
			}
			if tot != tc.wantTot {
				t.Errorf("totals %+v, want %+v", tot, tc.wantTot)
			}
		})
	}
}

// TestAccumulateOutIfIndex: adding up a flow's deltas keeps the egress
// interface of the latest packet; a delta without one (bytes only, or a
// flow that is not forwarded) keeps what was there.
func TestAccumulateOutIfIndex(t *testing.T) {
	var m NetFlowMetrics
	for _, d := range []NetFlowMetrics{
		{Packets: 1, Bytes: 100, StartMonoTimeTs: 10, EndMonoTimeTs: 20, OutIfIndex: 4},
		{Packets: 1, Bytes: 100, StartMonoTimeTs: 5, EndMonoTimeTs: 15, OutIfIndex: 9}, // older
		{Packets: 2, Bytes: 200, StartMonoTimeTs: 30, EndMonoTimeTs: 40, OutIfIndex: 6},
		{Bytes: 50},
		{Packets: 1, Bytes: 100, StartMonoTimeTs: 50, EndMonoTimeTs: 50},
	} {
		m.Accumulate(&d)
	}
	if m.OutIfIndex != 6 || m.Packets != 5 || m.Bytes != 550 {
		t.Errorf("accumulated %+v: want out if 6, 5 packets, 550 bytes", m)
	}
}
