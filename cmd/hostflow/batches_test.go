package main

import (
	"log/slog"
	"runtime/debug"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// floodSource is a flowSource whose Drain hands out n new one-packet flows.
type floodSource struct {
	flowSource
	n int
}

// TCPEnds: no TCP connection closes here.
func (f *floodSource) TCPEnds() (uint64, error) { return 0, nil }

func (f *floodSource) Drain(fn func(bpf.NetFlowId, []bpf.NetFlowMetrics)) error {
	m := []bpf.NetFlowMetrics{{Packets: 1, Bytes: 46, StartMonoTimeTs: 1, EndMonoTimeTs: 1}}
	for i := range f.n {
		id := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: uint16(i), DstPort: uint16(i >> 16)}
		fn(id, m)
	}
	return nil
}

// batchSink records the size of every batch.
type batchSink struct{ sizes []int }

func (s *batchSink) Export(flows []exporter.Flow) error {
	s.sizes = append(s.sizes, len(flows))
	return nil
}
func (s *batchSink) Close() error { return nil }

// A drain of more new flows than the cache holds exports the flows it
// pushes out during the drain, a batch at a time, instead of keeping a
// record per new flow until the next expiry; the expiry and the flush
// export in batches too.
func TestDaemonExportsInBatches(t *testing.T) {
	const maxFlows, flood = 100, 5*exportBatch + 10
	cache, err := exporter.NewCache(exporter.CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: maxFlows}, exporter.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	sink := &batchSink{}
	d := &daemon{log: slog.New(slog.DiscardHandler), cache: cache, fetcher: &floodSource{n: flood},
		sinks: sinkSet{{sink: sink}}}
	d.drain()
	if got, want := len(sink.sizes), (flood-maxFlows)/exportBatch; got != want {
		t.Errorf("%d batches exported during the drain, want %d", got, want)
	}
	if p := cache.Pending(); p >= exportBatch {
		t.Errorf("%d records pending after the drain, want fewer than %d", p, exportBatch)
	}
	d.expire()
	d.flushTo(d.sinks)
	total := 0
	for _, n := range sink.sizes {
		if n > exportBatch {
			t.Errorf("batch of %d records, max %d", n, exportBatch)
		}
		total += n
	}
	if total != flood || d.counts.packets != flood {
		t.Errorf("exported %d records, %d packets; want %d", total, d.counts.packets, flood)
	}
}

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, defaultGCPercent)
	}
	tuneGC(func(string) string { return "300" })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=300 set: GC percent changed to %d", got)
	}
}
