package main

import (
	"sync"
	"sync/atomic"

	"github.com/hostflow/hostflow/exporter"
)

// enrichQueue is how many batches (of up to exportBatch records, about
// 1 MiB each) wait for the enrich stage.
const enrichQueue = 8

// flowEnricher fills the router fields of flow records: router.Enricher.
// Enrich may take long (route lookups, a conntrack dump over netlink); it
// runs on the enrich stage's goroutine only.
type flowEnricher interface {
	Enrich(flows []exporter.Flow)
	Close() error
}

// enrichJob is one batch on its way to the sinks it was meant for.
type enrichJob struct {
	flows []exporter.Flow // owned by the stage until exported
	sinks sinkSet
	done  chan struct{} // closed once the sinks have the batch
}

// enrichStage is the router mode's stage between the cache owner (the
// loop) and the collectors: its goroutine owns the enricher, adds the
// router fields to each batch and hands it to the batch's sinks (the
// collectors' own bounded queues). Its queue holds enrichQueue batches;
// the loop never waits for a slow enrichment on the periodic path:
//
//   - expired flows and those pushed out of a full cache (offer): a full
//     queue refuses the batch, and its records are counted in dropped
//     (hostflow_enrich_dropped_records_total) and lost, as a collector's
//     full queue does;
//   - flushes (shutdown, a reload that replaces the cache or the
//     sampling rate, the expire command: push) wait for room, as they
//     must lose nothing and happen once.
//
// Draining the kernel and reading the ring buffer go on meanwhile, so a
// slow netlink answer costs at most enriched records, counted, never
// kernel ring-buffer loss.
type enrichStage struct {
	enricher flowEnricher
	send     func(sinkSet, []exporter.Flow) // to the sinks, counted
	jobs     chan enrichJob
	free     chan []exporter.Flow // batch buffers the stage is done with
	ended    chan struct{}        // closed when the goroutine returns
	stopOnce sync.Once

	// last is the done channel of the last batch queued: closed once
	// every batch queued so far is with its sinks. Loop goroutine only.
	last chan struct{}

	dropped atomic.Uint64 // records refused by the full queue
}

// newEnrichStage starts the stage's goroutine.
func newEnrichStage(e flowEnricher, send func(sinkSet, []exporter.Flow)) *enrichStage {
	s := &enrichStage{enricher: e, send: send, jobs: make(chan enrichJob, enrichQueue),
		free: make(chan []exporter.Flow, enrichQueue+1), ended: make(chan struct{})}
	s.last = make(chan struct{})
	close(s.last)
	go s.run()
	return s
}

func (s *enrichStage) run() {
	defer close(s.ended)
	for j := range s.jobs {
		s.enricher.Enrich(j.flows)
		s.send(j.sinks, j.flows)
		close(j.done)
		select {
		case s.free <- j.flows[:0]:
		default:
		}
	}
}

// job copies flows into a buffer of the stage: the loop reuses its own.
func (s *enrichStage) job(sinks sinkSet, flows []exporter.Flow) enrichJob {
	var b []exporter.Flow
	select {
	case b = <-s.free:
	default:
	}
	return enrichJob{flows: append(b, flows...), sinks: sinks, done: make(chan struct{})}
}

// offer queues flows for sinks if there is room, and otherwise counts
// them as dropped. It never waits. It reports whether they were queued.
func (s *enrichStage) offer(sinks sinkSet, flows []exporter.Flow) bool {
	if len(s.jobs) == cap(s.jobs) { // full already: spare the copy
		s.dropped.Add(uint64(len(flows)))
		return false
	}
	j := s.job(sinks, flows)
	select {
	case s.jobs <- j:
		s.last = j.done
		return true
	default: // only the loop sends: not reached, but never wait
		s.dropped.Add(uint64(len(flows)))
		return false
	}
}

// push queues flows for sinks, waiting for room.
func (s *enrichStage) push(sinks sinkSet, flows []exporter.Flow) {
	j := s.job(sinks, flows)
	s.jobs <- j
	s.last = j.done
}

// queued returns a channel closed once every batch queued so far has
// reached its sinks: a reload closes the sinks it removed after that.
func (s *enrichStage) queued() <-chan struct{} { return s.last }

// stop lets the stage export what is queued and waits for it to end.
// The enricher stays open (release closes it). Safe to call more than once; loop goroutine (or
// release, once the loop is gone) only.
func (s *enrichStage) stop() {
	s.stopOnce.Do(func() {
		close(s.jobs)
		<-s.ended
	})
}
