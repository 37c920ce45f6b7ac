package main

import (
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// exportBatch is the most flow records the daemon holds at once on their
// way to the sinks: the cache hands them over in batches of this size
// (ExpireBatches, FlushBatches, TakePending), so memory does not grow with
// the number of flows that end together (a whole cache at shutdown, a
// flood of new flows pushing out old ones between two polls). 4096
// records are about 1 MiB; a poll interval with fewer ended flows is one
// batch, as before.
const exportBatch = 4096

// batchBuf returns the daemon's reusable batch, empty.
func (d *daemon) batchBuf() []exporter.Flow {
	if cap(d.out) < exportBatch {
		d.out = make([]exporter.Flow, 0, exportBatch)
	}
	return d.out[:0]
}

// expire exports the flows that ended, batch by batch.
func (d *daemon) expire() {
	d.cache.ExpireBatches(d.batchBuf(), d.export)
}

// flushTo exports every cached flow as forced end to sinks, batch by
// batch, and returns how many records that was, while the kernel keeps
// counting (a reload, the expire command): in router mode with fates, the
// arrivals whose fates may still come stay in the cache's bookkeeping
// (exporter.Cache.ForceBatches). It waits for room in the enrich stage's
// queue: a flush loses nothing.
func (d *daemon) flushTo(sinks sinkSet) int {
	return d.flushWith(d.cache.ForceBatches, sinks)
}

// flushLast is flushTo for the final flush, once the programs are
// detached: every arrival settles (exporter.Cache.FlushBatches).
func (d *daemon) flushLast(sinks sinkSet) int {
	return d.flushWith(d.cache.FlushBatches, sinks)
}

func (d *daemon) flushWith(flush func([]exporter.Flow, func([]exporter.Flow)), sinks sinkSet) int {
	n := 0
	flush(d.batchBuf(), func(b []exporter.Flow) {
		n += len(b)
		d.handOff(sinks, b, true)
	})
	return n
}

// addFlow merges one drained flow into the cache and exports the flows
// it pushed out once they fill a batch.
func (d *daemon) addFlow(id bpf.NetFlowId, perCPU []bpf.NetFlowMetrics) {
	var packets, bytes uint64
	for i := range perCPU {
		packets += perCPU[i].Packets
		bytes += perCPU[i].Bytes
	}
	if id.Fate == exporter.FateArrival {
		d.observe(packets, bytes)
	}
	d.cache.Add(id, perCPU)
	d.exportPushedOut()
}

// observe adds what a drain or a ring-buffer record handed out to the
// observed totals (hostflow_observed_*_total). Each drain hands out what
// is new since the previous one, so the sums are exact: they are what the
// kernel counted up to the last poll, whether or not a flow has ended.
// Only arrivals (fate 0) are observed: in router mode with fates the
// kernel counts a forwarded or dropped packet a second time, with its
// fate, and the records of all fates add up to the arrivals.
func (d *daemon) observe(packets, bytes uint64) {
	d.observedPackets.Add(packets)
	d.observedBytes.Add(bytes)
}

// exportPushedOut exports the records of flows pushed out of a full cache
// (lack of resources) once there is a batch of them, instead of letting
// them wait for the next poll: a flood of new flows would otherwise pile
// up a record per new flow until then.
func (d *daemon) exportPushedOut() {
	if d.cache.Pending() >= exportBatch {
		d.export(d.cache.TakePending(d.batchBuf()))
	}
}
