package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// fakeEnricher is a flowEnricher whose Enrich runs onEnrich, if set, and
// records its calls in f.
type fakeEnricher struct {
	f        *fakeFetcher
	onEnrich func([]exporter.Flow)
}

func (e *fakeEnricher) Enrich(flows []exporter.Flow) {
	e.f.call("Enrich")
	if e.onEnrich != nil {
		e.onEnrich(flows)
	}
}

func (e *fakeEnricher) Close() error { e.f.call("Enricher.Close"); return nil }

// oldFlows makes each Drain of f read one new flow, whose last packet is
// so old that the same tick's expiry ends it; it returns how many flows
// the drains read.
func oldFlows(f *fakeFetcher) *atomic.Int64 {
	var n atomic.Int64
	f.onDrain = func() {
		id := udpKey(uint16(1000+n.Add(1)), 3)
		f.mu.Lock()
		f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{id: {{Packets: 1, Bytes: 100, StartMonoTimeTs: 1, EndMonoTimeTs: 1}}}
		f.mu.Unlock()
	}
	return &n
}

// countingSink counts the records exported to it.
func countingSink(records *atomic.Int64) *collectorSink {
	return &collectorSink{key: "counting", sink: &fakeSink{onExport: func(flows []exporter.Flow) {
		records.Add(int64(len(flows)))
	}}}
}

// TestEnrichNeverBlocksDrain: router enrichment stuck (a conntrack dump
// that does not return) stops neither the drains nor the expiry of the
// loop: batches wait in the enrich queue, and once it is full they are
// dropped and counted. Released, the stage exports what it holds, and at
// shutdown every flow is either with the sinks or counted as dropped.
func TestEnrichNeverBlocksDrain(t *testing.T) {
	f := newFakeFetcher(t)
	f.drained = make(chan struct{})
	read := oldFlows(f)
	d := testDaemon(t, f, "--poll-interval", "5ms", "--idle-timeout", "1s")
	var records atomic.Int64
	d.sinks = sinkSet{countingSink(&records)}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	d.enricher = &fakeEnricher{f: f, onEnrich: func([]exporter.Flow) {
		once.Do(func() { close(entered) })
		<-release
	}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	guard := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second): // a guard, not a speed check
			close(release)
			cancel()
			t.Fatalf("%s: the loop stopped while enrichment was blocked", what)
		}
	}
	guard("first batch enriched", entered)
	// Each drain is followed by an expiry of its flow: more batches than
	// the stage can hold while its enrichment is stuck.
	for range enrichQueue + 3 {
		guard("drain", f.drained)
	}
	// The loop goes on dropping: the metric read first is at most the
	// stage's count read after.
	metric := d.Flows().EnrichDroppedRecords
	if dropped := d.enrichStats().dropped.Load(); metric == 0 || metric > dropped {
		t.Errorf("hostflow_enrich_dropped_records_total %d with the enrich queue full, stage count %d", metric, dropped)
	}
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	dropped := d.enrichStats().dropped.Load()
	if got, want := records.Load()+int64(dropped), read.Load(); got != want {
		t.Errorf("%d records exported + %d dropped, want the %d flows read", records.Load(), dropped, want)
	}
	var exported uint64
	for _, n := range d.counts.byReason {
		exported += n
	}
	if exported != uint64(records.Load()) {
		t.Errorf("%d flows counted as exported, the sinks have %d", exported, records.Load())
	}
}

// TestReloadClosesOldSinksAfterEnrich: in router mode a sampling change
// flushes the cached flows to the old collectors through the enrich
// stage; the reload closes the old collectors only once the stage has
// enriched that batch and handed it to them, however long the enrichment
// takes, so the flows are not refused by a closed collector.
func TestReloadClosesOldSinksAfterEnrich(t *testing.T) {
	url := listenUDP(t)
	f := newFakeFetcher(t)
	d := testDaemon(t, f, "--collector", url)
	d.sinks.Close()
	old := &fakeSink{
		onExport: func([]exporter.Flow) { f.call("old exported") },
		onClose:  func() { f.call("old closed") },
	}
	d.sinks = sinkSet{{key: "old", url: url, sink: old}}
	entered, release := make(chan struct{}), make(chan struct{})
	d.enricher = &fakeEnricher{f: f, onEnrich: func([]exporter.Flow) {
		close(entered)
		<-release
	}}
	d.enrich = newEnrichStage(d.enricher, d.send)
	d.cache.Add(udpKey(1000, 3), []bpf.NetFlowMetrics{{Packets: 3, Bytes: 180, Sampling: 1}})

	if err := d.apply(sinkConfig(t, "--collector", url, "--sampling", "10")); err != nil {
		t.Fatal(err)
	}
	defer func() { d.sinks.Close() }()
	<-entered
	close(release)
	d.stopEnrich()
	d.closer.wait()
	calls := f.Calls()
	exported, closed := slices.Index(calls, "old exported"), slices.Index(calls, "old closed")
	if exported < 0 || closed < exported {
		t.Errorf("calls %q: the old collector must get the flushed batch before it closes", calls)
	}
}

// TestEnrichNeverBlocksRingReader: with router enrichment stuck, the loop
// still takes the ring buffer's records, so the reader never stops on a
// full channel (the kernel would then lose what the ring cannot hold):
// more records than the channel holds all go through.
func TestEnrichNeverBlocksRingReader(t *testing.T) {
	f := newFakeFetcher(t)
	ring := make(chan bpf.Record)
	f.readRingBuf = func() (ringbuf.Record, error) {
		r, ok := <-ring
		if !ok {
			return ringbuf.Record{}, ringbuf.ErrFlushed
		}
		raw := bpf.NetFlowRecordT{Id: bpf.NetFlowIdT(r.Id), Metrics: bpf.NetFlowMetrics(r.Metrics)}
		b := unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
		return ringbuf.Record{RawSample: slices.Clone(b)}, nil
	}
	f.drained = make(chan struct{})
	d := testDaemon(t, f, "--poll-interval", "5ms", "--idle-timeout", "1s")
	d.sinks = sinkSet{countingSink(new(atomic.Int64))}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	d.enricher = &fakeEnricher{f: f, onEnrich: func([]exporter.Flow) {
		once.Do(func() { close(entered) })
		<-release
	}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	defer func() {
		close(release)
		cancel()
		close(ring)
		if err := <-done; err != nil {
			t.Errorf("loop: %v", err)
		}
	}()
	guard := time.After(30 * time.Second) // a guard, not a speed check
	send := func(i int) {
		// Distinct flows, their last packet long ago: each tick
		// expires those it took, one batch a tick.
		r := bpf.Record{Id: udpKey(uint16(i), 3), Metrics: bpf.NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: 1, EndMonoTimeTs: 1}}
		select {
		case ring <- r:
		case <-guard:
			t.Fatalf("ring buffer record %d not taken: the loop stopped while enrichment was blocked", i)
		}
	}
	wait := func(what string, ch <-chan struct{}) {
		select {
		case <-ch:
		case <-guard:
			t.Fatalf("%s: the loop stopped while enrichment was blocked", what)
		}
	}
	send(0)
	wait("first batch enriched", entered)
	// More batches than the enrich stage holds, one a round: a record,
	// taken by the loop (not still on its way from the reader, or it
	// would join the next round's batch), then two ticks, the second
	// expiring it.
	i := 1
	for ; i <= enrichQueue+3; i++ {
		send(i)
		for d.Flows().DirectRecords < uint64(i+1) {
			select {
			case <-guard:
				t.Fatalf("record %d not added: the loop stopped while enrichment was blocked", i)
			case <-time.After(time.Millisecond):
			}
		}
		wait("drain", f.drained)
		wait("drain", f.drained)
	}
	// And more records than the reader's channel holds.
	for end := i + directQueue + 1; i < end; i++ {
		send(i)
	}
	if d.enrichStats().dropped.Load() == 0 {
		t.Error("no record dropped with the enrich queue full")
	}
}

// TestRingBufReaderWaitsCounted: when the loop does not take the ring
// buffer's records as fast as they come, the reader waits and counts it
// (hostflow_ringbuf_reader_waits_total): the moments the kernel may lose
// what the ring cannot hold.
func TestRingBufReaderWaitsCounted(t *testing.T) {
	f := newFakeFetcher(t)
	records := 2
	f.readRingBuf = func() (ringbuf.Record, error) {
		if records == 0 {
			<-f.flushed
			return ringbuf.Record{}, ringbuf.ErrFlushed
		}
		records--
		raw := bpf.NetFlowRecordT{Metrics: bpf.NetFlowMetrics{Packets: 1}}
		b := unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
		return ringbuf.Record{RawSample: slices.Clone(b)}, nil
	}
	d := testDaemon(t, f)
	out := make(chan bpf.Record) // no room: a loop that is behind
	go d.readRingBuf(out)
	// Each record finds no receiver: the reader counts a wait, then
	// hands it over.
	for want := uint64(1); want <= 2; want++ {
		for deadline := time.Now().Add(10 * time.Second); d.Flows().RingBufReaderWaits < want; { // a guard
			if time.Now().After(deadline) {
				t.Fatalf("the reader waited on a full queue without counting it (record %d)", want)
			}
			time.Sleep(time.Millisecond)
		}
		<-out
	}
	if err := f.FlushRingBuf(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-out; ok {
		t.Fatal("reader did not end after the flush")
	}
	if n := d.Flows().RingBufReaderWaits; n != 2 {
		t.Errorf("%d waits counted, want one per record that found the queue full (2)", n)
	}
}
