package main

import (
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// The daemon's pipeline, one goroutine owning each stage's state:
//
//	capture   readRingBuf (capture.go): ring-buffer records go to the
//	          loop through direct, directQueue records that block when
//	          full (the kernel then counts what the ring cannot hold,
//	          hostflow_kernel_ringbuf_full_total; each wait is counted,
//	          hostflow_ringbuf_reader_waits_total). The flow maps are
//	          drained on the loop's own ticks: Drain merges each flow
//	          straight into the cache.
//	cache     loop (daemon.go): owns the cache, the configuration,
//	          attachments, control requests, reloads and the watchdog
//	          ping; cuts ended flows into batches of at most exportBatch
//	          records.
//	enrich    enrichStage (enrich.go; router mode only): enrichQueue
//	          batches; periodic batches are dropped when it is full
//	          (hostflow_enrich_dropped_records_total), flushes wait. In
//	          host mode the loop hands batches to the sinks itself.
//	collector exporter.Collector, one per collector URL: a bounded queue
//	          that drops the newest batch when full
//	          (hostflow_collector_dropped_records_total), its own
//	          goroutine encoding and sending. The JSON-lines sink (no
//	          collector) writes on the goroutine that hands it a batch.
//
// shutdown (shutdown.go) stops them in that order.

// startStages starts the capture and enrich stages; loop goroutine only.
func (d *daemon) startStages() {
	d.direct = make(chan bpf.Record, directQueue)
	go d.readRingBuf(d.direct)
	if d.enricher != nil && d.enrich == nil {
		s := newEnrichStage(d.enricher, d.send)
		d.mu.Lock() // read by /metrics scrapes
		d.enrich = s
		d.mu.Unlock()
	}
}

// stopEnrich lets the enrich stage hand every queued batch to its sinks
// and waits for it to end.
func (d *daemon) stopEnrich() {
	if d.enrich != nil {
		d.enrich.stop()
	}
}

// export hands flows that ended to the current sinks, without waiting
// for a busy enrich stage.
func (d *daemon) export(flows []exporter.Flow) {
	d.handOff(d.sinks, flows, false)
}

// handOff passes a batch from the cache owner to the next stage: the
// enrich stage in router mode (waiting for room if wait, else dropping a
// batch it has no room for), the sinks otherwise. What is handed on is
// counted as exported. flows stays the caller's.
func (d *daemon) handOff(sinks sinkSet, flows []exporter.Flow, wait bool) {
	d.out = flows
	if len(flows) == 0 {
		return
	}
	switch {
	case d.enrich == nil:
		d.send(sinks, flows)
	case wait:
		d.enrich.push(sinks, flows)
	case !d.enrich.offer(sinks, flows):
		return // counted as dropped by the stage
	}
	d.mu.Lock()
	for i := range flows {
		f := &flows[i]
		d.counts.packets += f.Packets
		d.counts.bytes += f.Bytes
		if int(f.EndReason) < len(d.counts.byReason) {
			d.counts.byReason[f.EndReason]++
		}
	}
	d.mu.Unlock()
}

// send gives flows to each sink (a collector's queue, or JSON lines);
// from the loop in host mode, from the enrich stage in router mode.
func (d *daemon) send(sinks sinkSet, flows []exporter.Flow) {
	if err := sinks.Export(flows); err != nil {
		d.mu.Lock()
		d.counts.exportErrors++
		d.mu.Unlock()
		d.log.Warn("export flows", "flows", len(flows), "err", err)
	}
}

// exportsQueued returns a channel closed once every batch handed on so
// far has reached its sinks (nil: all have, there is no queue).
func (d *daemon) exportsQueued() <-chan struct{} {
	if d.enrich == nil {
		return nil
	}
	return d.enrich.queued()
}

// enrichStats returns the enrich stage for its counters, nil in host mode
// or before the loop started it. Any goroutine.
func (d *daemon) enrichStats() *enrichStage {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.enrich
}
