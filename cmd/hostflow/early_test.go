package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
)

// TestFullMapDrainsEarly: when the kernel map fills up between polls,
// whether a diverted record says so or the kernel's count of packets
// that found it full, the loop drains without waiting for the next poll
// (an hour away here).
func TestFullMapDrainsEarly(t *testing.T) {
	for _, tc := range []struct {
		name           string
		record, counts bool
	}{{"diverted-record", true, false}, {"map-full-count", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFetcher(t)
			var once atomic.Bool
			first := func() bool { return once.CompareAndSwap(false, true) }
			if tc.record {
				f.diverted = first
				var sent atomic.Bool
				f.readRingBuf = func() (ringbuf.Record, error) {
					if sent.CompareAndSwap(false, true) {
						return ringbuf.Record{RawSample: make([]byte, unsafe.Sizeof(bpf.NetFlowRecordT{}))}, nil
					}
					<-f.flushed
					return ringbuf.Record{}, ringbuf.ErrFlushed
				}
			}
			if tc.counts {
				f.full = first
			}
			f.drained = make(chan struct{}, 1)
			d := testDaemon(t, f, "--poll-interval", "1h")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.loop(ctx, nil) }()
			select {
			case <-f.drained:
			case <-time.After(10 * time.Second):
				t.Errorf("no drain within 10 s of the map filling up, with polls an hour apart; calls %v", f.Calls())
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("loop: %v", err)
			}
		})
	}
}
