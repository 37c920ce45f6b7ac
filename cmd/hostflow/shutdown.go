package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
)

// shutdown detaches first so the counts stop moving, then takes everything
// left in the map and the ring buffer, and exports it as forced end.
func (d *daemon) shutdown(direct chan bpf.Record) error {
	if err := d.notify.stopping(); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
	var errs []error
	d.stopLinks()
	<-d.linksDone
	if err := d.links.DetachAll(); err != nil {
		errs = append(errs, err)
	}
	d.drain()
	if err := d.fetcher.FlushRingBuf(); err != nil {
		errs = append(errs, fmt.Errorf("flush ring buffer: %w", err))
	} else {
		for r := range direct { // closed by readRingBuf after the flush
			d.addDirect(r)
		}
	}
	d.flushTo(d.sinks)
	d.updateActive()
	k, err := d.fetcher.ReadCounters()
	if err != nil {
		errs = append(errs, err)
	}
	d.mu.Lock()
	c := d.counts
	d.mu.Unlock()
	d.log.Info("stopped", "flows_exported", c.byReason[1:], "packets", c.packets, "bytes", c.bytes,
		"direct_records", c.direct, "kernel_map_full", k.MapFull, "kernel_ringbuf_full", k.RingBufFull,
		"kernel_not_ip", k.NotIP, "kernel_malformed", k.Malformed, "drain_errors", c.drainErrors,
		"export_errors", c.exportErrors)
	return errors.Join(errs...)
}

func (d *daemon) readRingBuf(out chan<- bpf.Record) {
	defer close(out)
	for {
		raw, err := d.fetcher.ReadRingBuf()
		if err != nil {
			if !errors.Is(err, ringbuf.ErrFlushed) && !errors.Is(err, os.ErrClosed) {
				d.log.Error("read ring buffer", "err", err)
			}
			return
		}
		r, err := bpf.DecodeRecord(raw.RawSample)
		if err != nil {
			d.log.Error("decode ring buffer record", "err", err)
			continue
		}
		out <- r
	}
}
