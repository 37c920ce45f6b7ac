package main

import (
	"sort"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/metrics"
)

// The daemon is the metrics.Source: scrapes read it under mu, and the
// kernel counters straight from the maps.
var _ metrics.Source = (*daemon)(nil)

func (d *daemon) Flows() metrics.FlowStats {
	d.mu.Lock()
	c := d.counts
	d.mu.Unlock()
	s := metrics.FlowStats{Packets: c.packets, Bytes: c.bytes, Active: c.active, Exported: map[string]uint64{},
		DirectRecords: c.direct, DrainErrors: c.drainErrors, ExportErrors: c.exportErrors,
		ObservedPackets: d.observedPackets.Load(), ObservedBytes: d.observedBytes.Load(),
		RingBufReaderWaits: d.readerWaits.Load(), UnmatchedFatePackets: c.unmatchedFates,
		EarlySettledArrivals: c.earlySettled}
	if e := d.enrichStats(); e != nil {
		s.EnrichDroppedRecords, s.EnrichQueued = e.dropped.Load(), len(e.jobs)
	}
	for r := exporter.EndIdleTimeout; r <= exporter.EndLackOfResources; r++ {
		s.Exported[r.String()] = c.byReason[r]
	}
	return s
}

func (d *daemon) Kernel() (metrics.KernelStats, error) {
	k, err := d.fetcher.ReadCounters()
	return metrics.KernelStats{MapFull: k.MapFull, RingBufFull: k.RingBufFull, NotIP: k.NotIP,
		Malformed: k.Malformed, NoMap: k.NoMap, SampledOut: k.SampledOut, FateMalformed: k.FateMalformed}, err
}

func (d *daemon) Collectors() []metrics.CollectorStats {
	d.mu.Lock()
	sinks := d.sinks
	d.mu.Unlock()
	var out []metrics.CollectorStats
	for _, s := range sinks {
		if s.stats == nil {
			continue
		}
		// Every counter the sink keeps, not a chosen few: a field
		// added to metrics.CollectorStats is exported at once.
		st := s.stats()
		st.URL = s.url
		out = append(out, st)
	}
	return out
}

func (d *daemon) Interfaces() []metrics.InterfaceState {
	mode := d.fetcher.Mode().String()
	states := d.links.States()
	out := make([]metrics.InterfaceState, 0, len(states))
	for _, st := range states {
		out = append(out, metrics.InterfaceState{Name: st.Name, Mode: mode, Attached: st.Attached})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

func (d *daemon) Reloads() metrics.ReloadStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reloads
}
