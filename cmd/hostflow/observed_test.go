package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// deltaSource is a flowSource whose every Drain hands out the next of its
// deltas, one flow each, as per-CPU values.
type deltaSource struct {
	flowSource
	deltas [][]bpf.NetFlowMetrics
}

// TCPEnds: no TCP connection closes here.
func (f *deltaSource) TCPEnds() (uint64, error) { return 0, nil }

func (s *deltaSource) Drain(fn func(bpf.NetFlowId, []bpf.NetFlowMetrics)) error {
	if len(s.deltas) > 0 {
		fn(bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 1, DstPort: 2}, s.deltas[0])
		s.deltas = s.deltas[1:]
	}
	return nil
}

// The observed totals sum every drain's deltas (all CPUs) and every
// ring-buffer record as soon as they are read, while the exported totals
// stay 0 until a flow ends.
func TestDaemonObservedCounts(t *testing.T) {
	cache, err := exporter.NewCache(exporter.CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: 16}, exporter.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	src := &deltaSource{deltas: [][]bpf.NetFlowMetrics{
		{{Packets: 3, Bytes: 300, StartMonoTimeTs: 1, EndMonoTimeTs: 2}, {Packets: 2, Bytes: 150, StartMonoTimeTs: 1, EndMonoTimeTs: 2}},
		{{Packets: 4, Bytes: 400, StartMonoTimeTs: 3, EndMonoTimeTs: 4}},
	}}
	d := &daemon{log: slog.New(slog.DiscardHandler), cache: cache, fetcher: src, sinks: sinkSet{{sink: &batchSink{}}}}
	d.drain()
	if f := d.Flows(); f.ObservedPackets != 5 || f.ObservedBytes != 450 || f.Packets != 0 {
		t.Errorf("after one drain: observed %d packets %d bytes, exported %d packets; want 5, 450, 0", f.ObservedPackets, f.ObservedBytes, f.Packets)
	}
	d.drain()
	d.addDirect(bpf.Record{Id: bpf.NetFlowId{EthProtocol: 0x86dd, TransportProtocol: 6},
		Metrics: bpf.NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: 5, EndMonoTimeTs: 5}})
	if f := d.Flows(); f.ObservedPackets != 10 || f.ObservedBytes != 910 || f.Packets != 0 {
		t.Errorf("after two drains and a ring record: observed %d packets %d bytes, exported %d packets; want 10, 910, 0", f.ObservedPackets, f.ObservedBytes, f.Packets)
	}
	// Exporting what was observed leaves the observed totals as they are.
	d.flushTo(d.sinks)
	if f := d.Flows(); f.ObservedPackets != 10 || f.Packets != 10 || f.Bytes != 910 {
		t.Errorf("after the flush: observed %d, exported %d packets %d bytes; want 10, 10, 910", f.ObservedPackets, f.Packets, f.Bytes)
	}
}
