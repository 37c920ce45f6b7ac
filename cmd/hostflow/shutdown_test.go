package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// TestRingBufReadErrorNoSpin: when the ring buffer reader stops on an
// unexpected error, the main loop goes on draining the map on its ticks
// without taking anything from the closed channel (it used to receive
// zero records from it in a busy loop), and the error is counted.
func TestRingBufReadErrorNoSpin(t *testing.T) {
	f := newFakeFetcher(t)
	readerFailed := make(chan struct{})
	f.readRingBuf = func() (ringbuf.Record, error) {
		close(readerFailed)
		return ringbuf.Record{}, errInjected
	}
	f.drained = make(chan struct{})
	d := testDaemon(t, f, "--poll-interval", "5ms")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	<-readerFailed
	// Ticks after the reader stopped: the loop kept working, and had
	// every chance to spin on the closed channel in between.
	for range 5 {
		<-f.drained
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	c := d.counts
	if c.direct != 0 {
		t.Errorf("%d direct records taken from a reader that read none", c.direct)
	}
	if c.drainErrors != 1 {
		t.Errorf("drain errors = %d, want the ring buffer read error counted once", c.drainErrors)
	}
}

// TestRingBufDecodeErrorCounted: a ring buffer record too short to decode
// stands for a packet that is lost; the loss is counted, and the reader goes
// on with the next record.
func TestRingBufDecodeErrorCounted(t *testing.T) {
	f := newFakeFetcher(t)
	reads := 0
	twice := make(chan struct{})
	f.readRingBuf = func() (ringbuf.Record, error) {
		reads++
		switch reads {
		case 1:
			return ringbuf.Record{RawSample: []byte{1, 2, 3}}, nil
		case 2:
			close(twice)
		}
		return ringbuf.Record{}, ringbuf.ErrFlushed
	}
	d := testDaemon(t, f, "--poll-interval", "5ms")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	<-twice
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	d.mu.Lock()
	c := d.counts
	d.mu.Unlock()
	if c.drainErrors != 1 || c.direct != 0 {
		t.Errorf("drain errors %d, direct records %d: want the undecodable record counted once as lost", c.drainErrors, c.direct)
	}
}

// TestShutdownOrder: shutdown detaches, drains the map and the ring
// buffer, flushes the cache, lets the enrich stage (router mode) enrich
// the flushed flows and hand them on, drains the collectors (those of the
// running configuration and one a reload removed, still closing), and
// only then closes the enricher and the kernel maps: a collector's last
// options records read the kernel counters. The fake fetcher fails the
// test on any call after its Close.
func TestShutdownOrder(t *testing.T) {
	f := newFakeFetcher(t)
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{udpKey(1000, 3): {{Packets: 1, Bytes: 100, StartMonoTimeTs: 1, EndMonoTimeTs: 1}}}
	d := testDaemon(t, f)
	d.enricher = &fakeEnricher{f: f}
	counters := d.sinkEnv().counters
	removedMayEnd := make(chan struct{})
	removed := &fakeSink{onClose: func() {
		select {
		case <-removedMayEnd:
		case <-time.After(10 * time.Second): // a guard: the order check fails
		}
		counters() // its last options record
		f.call("removed collector drained")
	}}
	running := &fakeSink{onExport: func([]exporter.Flow) { f.call("exported") }, onClose: func() {
		close(removedMayEnd)
		counters()
		f.call("collector drained")
	}}
	d.closer.close(sinkSet{{key: "removed", sink: removed}}, d.log)
	d.sinks = append(d.sinks, &collectorSink{key: "running", sink: running})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.loop(ctx, nil); err != nil {
		t.Fatalf("loop: %v", err)
	}
	calls := f.Calls()
	var at []int
	for _, step := range []string{"Drain", "FlushRingBuf", "DoneReading", "Enrich", "exported", "collector drained",
		"removed collector drained", "Enricher.Close", "Close"} {
		i := slices.Index(calls, step)
		if i < 0 {
			t.Fatalf("shutdown: no %q in %q", step, calls)
		}
		at = append(at, i)
	}
	if !slices.IsSorted(at) || at[len(at)-1] != len(calls)-1 {
		t.Errorf("shutdown order %q: want drain, ring buffer flush, done reading (before the final export's buffers), enrich, export, collectors drained, then the enricher and the maps closed last", calls)
	}
}
