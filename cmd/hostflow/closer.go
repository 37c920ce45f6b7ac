package main

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// sinkCloser closes the sinks a reload removed, off the main loop, and
// all of them at shutdown. A
// collector whose peer is dead keeps sending what it has queued until its
// drain timeout (exporter.DefaultDrainTimeout, 5 s) and gives up a second
// later at most; the main loop must go on draining the kernel meanwhile,
// or the flow map and then the ring buffer fill and packets are lost.
//
// Each Close is bounded in time by its collector's drain timeout, so what
// is pending is at most the collectors removed in the last few seconds;
// pending says how many. Shutdown waits for them all (wait) before the
// kernel maps close: a closing collector still reads the kernel counters
// for its last options records.
type sinkCloser struct {
	wg      sync.WaitGroup
	pending atomic.Int64
}

// close starts closing each of sinks on a goroutine of its own and returns
// at once. A failure is logged.
func (c *sinkCloser) close(sinks sinkSet, log *slog.Logger) {
	c.closeAfter(sinks, log, nil)
}

// closeAfter is close, each Close waiting first for after to close (the
// batches the enrich stage still holds for these sinks); nil waits for
// nothing.
func (c *sinkCloser) closeAfter(sinks sinkSet, log *slog.Logger, after <-chan struct{}) {
	for _, s := range sinks {
		c.pending.Add(1)
		c.wg.Go(func() {
			defer c.pending.Add(-1)
			if after != nil {
				<-after
			}
			if err := s.sink.Close(); err != nil {
				log.Warn("close collector", "collector", s.name(), "err", err)
			} else {
				log.Debug("closed collector", "collector", s.name())
			}
		})
	}
}

// wait returns once every close started has ended.
func (c *sinkCloser) wait() { c.wg.Wait() }
