package main

import (
	"errors"
	"fmt"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// shutdown stops hostflow in the one order that loses no flow and reads
// no closed map:
//
//  1. detach: stop following links and detach every program, so the
//     counts stop moving;
//  2. final drain: the flow map, then the ring buffer up to its flush;
//     then the memory only reading needs goes (DoneReading);
//  3. flush the cache: every flow left goes to the next stage as forced
//     end;
//  4. enrich (router mode): the enrich stage enriches every batch it
//     holds, hands it to its sinks and ends;
//  5. drain the collectors: each sends what it has queued (up to its
//     drain timeout, all in parallel) and closes, and those a reload
//     removed finish closing;
//  6. close the maps, once nothing reads them: the collectors' options
//     records and /metrics scrapes read the kernel counters; and the
//     enricher, once its stage has ended.
//
// Steps 4 to 6 are release, which also runs (deferred by runDaemon) when
// the start fails half-way. The stages are described in pipeline.go.
func (d *daemon) shutdown(direct chan bpf.Record) error {
	if err := d.notify.stopping(); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
	var errs []error
	// No more control commands: the loop stops answering.
	d.stopControl()
	// 1. Detach.
	d.stopLinks()
	<-d.linksDone
	if err := d.links.DetachAll(); err != nil {
		errs = append(errs, err)
	}
	// 2. Final drain.
	d.drain()
	if err := d.fetcher.FlushRingBuf(); err != nil {
		errs = append(errs, fmt.Errorf("flush ring buffer: %w", err))
	} else {
		for r := range direct { // closed by readRingBuf after the flush
			d.addDirect(r)
		}
	}
	// Nothing reads the flows again: give back the totals of live
	// reads and the ring buffer's mapping before the final export
	// adds its buffers.
	if err := d.fetcher.DoneReading(); err != nil {
		errs = append(errs, err)
	}
	// 3. Flush the cache, in batches; every arrival settles.
	d.flushLast(d.sinks)
	d.updateActive()
	// Detached: the kernel counters are final.
	k, err := d.fetcher.ReadCounters()
	if err != nil {
		errs = append(errs, err)
	}
	// 4, 5 and 6.
	d.release()

	d.mu.Lock()
	c := d.counts
	d.mu.Unlock()
	d.log.Info("stopped", "flows_idle", c.byReason[exporter.EndIdleTimeout],
		"flows_active", c.byReason[exporter.EndActiveTimeout], "flows_end", c.byReason[exporter.EndOfFlowDetected],
		"flows_forced", c.byReason[exporter.EndForced], "flows_lack", c.byReason[exporter.EndLackOfResources],
		"packets", c.packets, "bytes", c.bytes,
		"direct_records", c.direct, "kernel_map_full", k.MapFull, "kernel_ringbuf_full", k.RingBufFull,
		"kernel_not_ip", k.NotIP, "kernel_malformed", k.Malformed, "drain_errors", c.drainErrors,
		"export_errors", c.exportErrors)
	return errors.Join(errs...)
}

// release is steps 4 to 6 of shutdown: it lets the enrich stage finish,
// drains and closes the collectors, then closes what reads the kernel maps
// (/metrics), the router enricher, then the maps, and releases the state
// directory. It is safe
// on a daemon only half started, and does its work once.
func (d *daemon) release() {
	d.released.Do(func() {
		d.stopControl()
		if d.stopLinks != nil { // stopped already after a shutdown
			d.stopLinks()
			<-d.linksDone
		}
		// 4. Enrich what the stage holds; it hands it to the sinks.
		d.stopEnrich()
		// 5. Drain the collectors, all at once: a dead one takes its
		// drain timeout, and the others need not wait behind it.
		d.closer.close(d.sinks, d.log)
		d.closer.wait()
		// 6. Close the maps, after their readers.
		if d.srv != nil {
			if err := d.srv.Close(); err != nil {
				d.log.Warn("stop metrics server", "err", err)
			}
		}
		if d.enricher != nil {
			if err := d.enricher.Close(); err != nil {
				d.log.Warn("close router enricher", "err", err)
			}
		}
		if d.fetcher != nil {
			if err := d.fetcher.Close(); err != nil {
				d.log.Warn("close eBPF objects", "err", err)
			}
		}
		if d.unlock != nil {
			d.unlock()
		}
	})
}
