package main

import (
	"context"
	"testing"

	"github.com/cilium/ebpf/ringbuf"
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
