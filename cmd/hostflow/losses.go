package main

import (
	"sync/atomic"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/metrics"
)

// collectorLosses makes one collector's options records report its own
// losses as notSentFlowTotalCount, as RFC 7011 section 4.3 asks of each
// exporting process: the records its queue refused (or still held at
// close) and those in messages its transport failed to send. Both are
// counters of this exporter since it was built, so the value never goes
// back, whatever other collectors lose or a reload removes; an exporter
// that a reload rebuilds (new settings) is a new exporting process and
// starts from 0.
type collectorLosses struct {
	// stats is set once the exporter is complete; the first templates
	// can go out before, when nothing can have been lost yet.
	stats atomic.Pointer[func() metrics.CollectorStats]
}

func (l *collectorLosses) set(stats func() metrics.CollectorStats) { l.stats.Store(&stats) }

// counters returns the options' counters provider: the daemon's shared
// ones (the metering process's) with this collector's notSentFlows.
func (l *collectorLosses) counters(shared func() exporter.OptionsCounters) func() exporter.OptionsCounters {
	return func() exporter.OptionsCounters {
		var c exporter.OptionsCounters
		if shared != nil {
			c = shared()
		}
		c.NotSentFlows = 0
		if s := l.stats.Load(); s != nil {
			st := (*s)()
			c.NotSentFlows = st.DroppedRecords + st.RecordsLost
		}
		return c
	}
}
