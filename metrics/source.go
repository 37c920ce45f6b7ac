// Package metrics exposes hostflow's own counters to Prometheus. Every value
// is read from a Source when /metrics is scraped: nothing polls in the
// background.
package metrics

import "time"

// Source is what the daemon reports. Its methods are called at scrape time,
// concurrently with the daemon, and must be safe for that.
type Source interface {
	Flows() FlowStats
	Kernel() (KernelStats, error)
	Collectors() []CollectorStats
	Interfaces() []InterfaceState
	Reloads() ReloadStats
}

// FlowStats count what the flow cache exported.
type FlowStats struct {
	// Packets and Bytes sum the exported flow records.
	Packets, Bytes uint64
	// ObservedPackets and ObservedBytes sum what the kernel counted, as
	// the polls read it (and the ring buffer): they grow within a poll
	// interval plus the TCP end grace of the traffic (a poll skips the
	// read while no record could leave), before any flow ends.
	ObservedPackets, ObservedBytes uint64
	// Active is the number of flows in the cache.
	Active int
	// Exported counts flow records by end reason (label value).
	Exported map[string]uint64
	// DirectRecords counts packets read one by one from the ring buffer.
	DirectRecords uint64
	// DrainErrors and ExportErrors count failed kernel reads (flow map or
	// ring buffer) and exports.
	DrainErrors, ExportErrors uint64
	// RingBufReaderWaits counts the times the ring-buffer reader found its
	// queue to the cache full and waited: the kernel then counts what the
	// ring buffer cannot hold (KernelStats.RingBufFull).
	RingBufReaderWaits uint64
	// EnrichDroppedRecords were refused by the router mode's full enrich
	// queue (lost); EnrichQueued batches wait in it now.
	EnrichDroppedRecords uint64
	EnrichQueued         int
	// UnmatchedFatePackets are router mode's packets whose fate was
	// counted with no arrival left to match it: read later than the
	// cache's hold after their arrival, which was then exported as
	// consumed too, or whose arrival was not counted.
	UnmatchedFatePackets uint64
	// EarlySettledArrivals are router mode's arrival keys settled
	// before the hold to keep the fate bookkeeping within max_flows.
	EarlySettledArrivals uint64
}

// KernelStats are the eBPF programs' counters.
type KernelStats struct {
	MapFull, RingBufFull, NotIP, Malformed, NoMap, SampledOut uint64
	// FateMalformed: router mode's forwarded or dropped packets whose fate
	// could not be counted (headers unreadable): only their arrival is.
	FateMalformed uint64
}

// CollectorStats are one collector's exporter counters.
type CollectorStats struct {
	URL                     string
	Messages, Records       uint64
	SendErrors, RecordsLost uint64
	// DroppedRecords were refused by the collector's full queue;
	// Reconnects count new TCP/TLS connections after the first.
	DroppedRecords, Reconnects uint64
	// Unreachable counts ICMP errors (port unreachable) a UDP socket
	// reported for earlier datagrams; they cost no message.
	Unreachable uint64
	// Stalls counts the batches queued without waiting for the
	// collector to hand back a batch buffer: it stalled, or the waits of
	// the second took their budget (exporter.CollectorStats
	// ExportWaitTimeouts).
	Stalls uint64
	// Connected: the transport is up now (a UDP socket until it is
	// closed); QueuedRecords wait in the collector's queue now.
	Connected     bool
	QueuedRecords int
}

// InterfaceState is whether the programs are on a selected interface.
type InterfaceState struct {
	Name     string
	Mode     string // tcx or clsact
	Attached bool
}

// ReloadStats count SIGHUP reloads.
type ReloadStats struct {
	Success, Failure uint64
	LastSuccess      time.Time
}

// BuildInfo labels hostflow_build_info.
type BuildInfo struct {
	Version, GoVersion string
}
