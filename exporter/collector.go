package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a Collector.
const (
	// DefaultQueueLength is in batches. The capture exports one batch per
	// poll interval (1 s by default) while fewer than 4096 flows end in
	// one, and batches of at most 4096 records otherwise (the daemon's
	// exportBatch), so 64 batches hold about a minute of flows: a
	// collector restart or a short outage loses nothing, and the memory
	// held for a dead collector stays bounded (64 x 4096 records).
	DefaultQueueLength = 64
	// DefaultDrainTimeout bounds how long Close keeps sending what is
	// queued. Shutdown should not hang on a dead collector, but a live one
	// should get the flows forced out at shutdown.
	DefaultDrainTimeout = 5 * time.Second

	// DefaultExportWait bounds how long Export waits for the goroutine
	// to hand back a batch buffer before it makes a new one
	// (CollectorConfig.ExportWait). Encoding and sending a full batch of
	// 4096 records takes about a millisecond, so a healthy collector
	// answers far sooner; a stalled one costs the capture loop this much
	// once per stall.
	DefaultExportWait = 50 * time.Millisecond
	// DefaultExportWaitBudget bounds how long Export waits for buffers in
	// all, per second (CollectorConfig.ExportWaitBudget): a collector
	// slower than the flows end, whose every wait succeeds, may slow the
	// capture loop by a tenth at most; beyond, its queue takes the
	// batches, as without pacing.
	DefaultExportWaitBudget = 100 * time.Millisecond

	// closeAbortWait is how long Close waits, after the drain deadline
	// and the transport is closed, for the sink to give up.
	closeAbortWait = time.Second
	// maxRecycledBatch caps the batch buffers kept for reuse, so one huge
	// batch (the flush at shutdown) is not held on to.
	maxRecycledBatch = 8192
	// inFlightBatches is how many batch buffers a collector that keeps
	// up holds at once: the one its goroutine sends and the one queued
	// behind it, so the goroutine never waits for the next batch. It is
	// also how many it keeps for reuse.
	inFlightBatches = 2
)

var (
	// ErrQueueFull is wrapped by the error of an Export whose batch was
	// dropped because the collector's queue was full.
	ErrQueueFull = errors.New("collector queue full")
	// ErrDrainTimeout is wrapped by the error of a Close that could not
	// send everything queued before its deadline.
	ErrDrainTimeout = errors.New("collector drain timed out")
)

// CollectorConfig configures a Collector.
type CollectorConfig struct {
	// Name identifies the collector in logs and errors, e.g.
	// "tls://collector.example:4740".
	Name string
	// Sink is the encoder, writing to Transport. Required. Its Export
	// runs only on the Collector's goroutine; Close closes it.
	Sink Sink
	// Transport is what Sink writes to. Optional: if set, the Collector
	// waits for it to connect before each batch (so an OnConnect hook
	// runs before the batch is encoded), reports its counters and closes
	// it, after Sink, at Close.
	Transport Transport
	// QueueLength is how many batches wait at most. Default
	// DefaultQueueLength.
	QueueLength int
	// DrainTimeout bounds Close. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// ExportWait bounds how long Export waits for a batch buffer to
	// come back from the goroutine when two are in flight already.
	// Default DefaultExportWait.
	ExportWait time.Duration
	// ExportWaitBudget bounds how long Exports wait for buffers in all,
	// per second. Default DefaultExportWaitBudget.
	ExportWaitBudget time.Duration
	// Logger reports drops. Default: discard.
	Logger *slog.Logger
}

// CollectorStats are a Collector's counters since it was created.
type CollectorStats struct {
	// Queued and QueuedRecords are the batches and flow records waiting
	// now.
	Queued        int
	QueuedRecords int
	// Enqueued counts the batches accepted by Export.
	Enqueued uint64
	// DroppedBatches and DroppedRecords count what was never handed to
	// the sink: refused by a full queue, or still queued at the Close
	// deadline.
	DroppedBatches uint64
	DroppedRecords uint64
	// SentBatches and SentRecords count batches the sink exported without
	// error.
	SentBatches uint64
	SentRecords uint64
	// ExportWaitTimeouts counts the Exports that made a new batch
	// buffer instead of reusing one the goroutine hands back: after
	// waiting ExportWait in vain (the goroutine was stalled), or because
	// this second's ExportWaitBudget was spent (it is slower than the
	// flows end).
	ExportWaitTimeouts uint64
	// Errors counts batches the sink failed to export, wholly or in
	// part, and failed flushes of a batching transport; the records lost
	// are in the sink's own counters, the messages in the transport's.
	Errors uint64
	// Reconnects is Transport.Reconnects.
	Reconnects uint64
	// Transport is the transport's counters, zero without one.
	Transport TransportStats
}

// Collector sends flows to one collector from a goroutine of its own, so a
// slow or dead collector never blocks the capture or the other collectors.
// It implements Sink.
//
// Between Export and that goroutine is a bounded queue of batches. When it
// is full, Export drops the new batch and counts it: drop newest. Keeping
// the oldest means that after a collector outage shorter than the queue,
// the flows arrive complete and in order (records carry their own times,
// so late is fine); dropping the oldest instead would trade those complete
// minutes for the latest ones, and make every drop a gap in the middle of
// what the collector already has. While a stream transport is down, the
// goroutine waits for it to reconnect with the oldest batch in hand, so
// the queue fills and the newest are dropped. A connection lost while a
// batch is being written is another matter: the batch is written once,
// since TCP does not tell which messages the collector read, and its
// messages not sent are lost and counted (Errors here, the messages in the
// transport's Lost, their records in the sink's RecordsLost).
//
// Export copies each batch into a buffer of the Collector's, which the
// goroutine hands back once the batch is sent. A burst of batches (the
// flush at shutdown or at a reload, thousands of flows ending at one
// poll) would otherwise fill the queue with copies faster than the
// goroutine encodes them, and memory would grow by a batch of copies per
// batch queued, up to the whole queue. So while two buffers are out
// (inFlightBatches: one being sent, one queued), Export waits for one to
// come back, at most ExportWait, and at most ExportWaitBudget in all per
// second: a collector that keeps up paces the burst and holds two buffers,
// and one slower than the flows end (each wait succeeds, but they add up)
// slows the caller by a tenth of its time at most, by default; beyond, the
// queue takes the batches and drops the newest when full, as without
// pacing (the waits given up are counted in ExportWaitTimeouts). A wait that times out means the goroutine
// is stalled or slow (a dead TCP collector, a blocked write): Export then
// makes a new buffer and queues as before, and does not wait again until
// the goroutine has sent everything queued, so a stall costs the caller
// one ExportWait, and a full queue none (the newest batch is dropped at
// once). The copies of a stalled collector are bounded by the queue
// length, as before; at most inFlightBatches buffers are kept for reuse.
type Collector struct {
	name  string
	sink  Sink
	tr    Transport
	drain time.Duration
	// abortWait is closeAbortWait; tests of a starved machine lengthen it.
	abortWait time.Duration
	wait      time.Duration
	// budget is ExportWaitBudget; waitMu guards the waits of the current
	// second: they began at windowStart and took waited in all.
	budget      time.Duration
	waitMu      sync.Mutex
	windowStart time.Time
	waited      time.Duration
	log         *slog.Logger

	// mu makes Export's send and Close's close of queue exclusive.
	mu     sync.RWMutex
	closed bool
	queue  chan []Flow
	free   chan []Flow // batch buffers to reuse, at most inFlightBatches
	// buffers counts the batch buffers made and not let go: queued,
	// being sent, or in free.
	buffers atomic.Int64
	// stalled is set when a wait for a buffer timed out, and cleared
	// when the goroutine has sent everything queued.
	stalled atomic.Bool

	// ctx is cancelled at the drain deadline: the goroutine stops
	// waiting for a connection and drops what is left.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	dropping                                 atomic.Bool
	queued, queuedRecords                    atomic.Int64
	enqueued, droppedBatches, droppedRecords atomic.Uint64
	sentBatches, sentRecords, errs           atomic.Uint64
	waitTimeouts                             atomic.Uint64
}

var _ Sink = (*Collector)(nil)

// NewCollector starts a Collector.
func NewCollector(cfg CollectorConfig) (*Collector, error) {
	if cfg.Sink == nil {
		return nil, errors.New("collector config: no sink")
	}
	if cfg.QueueLength == 0 {
		cfg.QueueLength = DefaultQueueLength
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.ExportWait == 0 {
		cfg.ExportWait = DefaultExportWait
	}
	if cfg.ExportWaitBudget == 0 {
		cfg.ExportWaitBudget = DefaultExportWaitBudget
	}
	if cfg.QueueLength < 0 || cfg.DrainTimeout < 0 || cfg.ExportWait < 0 || cfg.ExportWaitBudget < 0 {
		return nil, fmt.Errorf("collector config: negative queue length %d, drain timeout %v, export wait %v or export wait budget %v",
			cfg.QueueLength, cfg.DrainTimeout, cfg.ExportWait, cfg.ExportWaitBudget)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Collector{
		name:      cfg.Name,
		sink:      cfg.Sink,
		tr:        cfg.Transport,
		drain:     cfg.DrainTimeout,
		abortWait: closeAbortWait,
		wait:      cfg.ExportWait,
		budget:    cfg.ExportWaitBudget,
		log:       cfg.Logger.With("collector", cfg.Name),
		queue:     make(chan []Flow, cfg.QueueLength),
		free:      make(chan []Flow, inFlightBatches),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// Name returns the collector's name.
func (c *Collector) Name() string { return c.name }

// Export queues a copy of flows. If the queue is full the batch is
// dropped at once, counted, and the error wraps ErrQueueFull. Otherwise,
// if two batches are in flight already, it first waits up to ExportWait
// for the goroutine to hand a buffer back (see Collector).
func (c *Collector) Export(flows []Flow) error {
	if len(flows) == 0 {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		c.countDropped(len(flows))
		return fmt.Errorf("collector %s export: %w", c.name, ErrClosed)
	}
	if len(c.queue) == cap(c.queue) {
		// Full already: spare the copy.
		return c.refuse(len(flows))
	}
	b := c.buffer()
	b = append(b[:0], flows...)
	c.queued.Add(1)
	c.queuedRecords.Add(int64(len(b)))
	select {
	case c.queue <- b:
		c.enqueued.Add(1)
		if c.dropping.CompareAndSwap(true, false) {
			c.log.Info("collector queue has room again", "dropped_records_total", c.droppedRecords.Load())
		}
		return nil
	default:
		c.queued.Add(-1)
		c.queuedRecords.Add(-int64(len(b)))
		c.recycle(b)
		return c.refuse(len(flows))
	}
}

func (c *Collector) refuse(n int) error {
	c.countDropped(n)
	if c.dropping.CompareAndSwap(false, true) {
		// Log the change of state, not every drop.
		c.log.Warn("collector queue full; dropping new flows until it drains")
	}
	return fmt.Errorf("collector %s export: %w: %d records dropped", c.name, ErrQueueFull, n)
}

func (c *Collector) countDropped(n int) {
	c.droppedBatches.Add(1)
	c.droppedRecords.Add(uint64(n))
}

// buffer returns a batch buffer: one handed back, or, while fewer than
// inFlightBatches are out, a new one. When that many are out it waits up
// to ExportWait for one to come back, unless the last wait timed out and
// the goroutine has not caught up with the queue since.
func (c *Collector) buffer() []Flow {
	select {
	case b := <-c.free:
		return b
	default:
	}
	if c.buffers.Load() >= inFlightBatches && !c.stalled.Load() {
		if wait := c.waitAllowed(); wait > 0 {
			start := time.Now()
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case b := <-c.free:
				c.spend(time.Since(start))
				return b
			case <-t.C:
				c.spend(wait)
				c.waitTimeouts.Add(1)
				if wait == c.wait {
					c.stalled.Store(true)
					c.log.Debug("collector stalled; queueing without waiting until it sends", "waited", c.wait)
				}
			}
		} else {
			c.waitTimeouts.Add(1)
		}
	}
	c.buffers.Add(1)
	return nil
}

// waitAllowed is how long Export may wait for a buffer now: ExportWait,
// or what is left of this second's ExportWaitBudget if less.
func (c *Collector) waitAllowed() time.Duration {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	if now := time.Now(); now.Sub(c.windowStart) >= time.Second {
		c.windowStart, c.waited = now, 0
	}
	return min(c.wait, c.budget-c.waited)
}

// spend counts d against this second's ExportWaitBudget.
func (c *Collector) spend(d time.Duration) {
	c.waitMu.Lock()
	c.waited += d
	c.waitMu.Unlock()
}

// recycle keeps a batch buffer for reuse, or lets it go if it is too big
// or inFlightBatches are kept already.
func (c *Collector) recycle(b []Flow) {
	if cap(b) <= maxRecycledBatch {
		clear(b) // the keys are small, but do not pin anything
		select {
		case c.free <- b[:0]:
			return
		default:
		}
	}
	c.buffers.Add(-1)
}

// run sends the queued batches until Close closes the queue.
func (c *Collector) run() {
	defer close(c.done)
	for b := range c.queue {
		c.queued.Add(-1)
		c.queuedRecords.Add(-int64(len(b)))
		c.send(b)
		c.recycle(b)
		if len(c.queue) == 0 {
			c.stalled.Store(false) // caught up: Export may wait again
			c.flush()
		}
	}
}

// flush sends what a batching transport holds back. It runs when the
// queue is empty: batches queued behind this one go out together, a lone
// one at once.
func (c *Collector) flush() {
	f, ok := c.tr.(Flusher)
	if !ok {
		return
	}
	if err := f.Flush(); err != nil {
		c.errs.Add(1)
		c.log.Debug("collector flush failed", "err", err)
	}
}

func (c *Collector) send(b []Flow) {
	if c.ctx.Err() != nil {
		c.countDropped(len(b))
		return
	}
	if c.tr != nil {
		if err := c.tr.Connect(c.ctx); err != nil {
			// Only at the drain deadline, or if the transport was
			// closed under us.
			c.countDropped(len(b))
			return
		}
	}
	if err := c.sink.Export(b); err != nil {
		// The sink logs its failures; here they are only counted.
		c.errs.Add(1)
		c.log.Debug("collector export failed", "records", len(b), "err", err)
		return
	}
	c.sentBatches.Add(1)
	c.sentRecords.Add(uint64(len(b)))
}

// Stats returns the counters. It is safe to call from any goroutine.
func (c *Collector) Stats() CollectorStats {
	s := CollectorStats{
		Queued:             int(c.queued.Load()),
		QueuedRecords:      int(c.queuedRecords.Load()),
		Enqueued:           c.enqueued.Load(),
		DroppedBatches:     c.droppedBatches.Load(),
		DroppedRecords:     c.droppedRecords.Load(),
		SentBatches:        c.sentBatches.Load(),
		SentRecords:        c.sentRecords.Load(),
		Errors:             c.errs.Load(),
		ExportWaitTimeouts: c.waitTimeouts.Load(),
	}
	if c.tr != nil {
		s.Transport = c.tr.Stats()
		s.Reconnects = s.Transport.Reconnects
	}
	return s
}

// Close stops accepting flows, sends what is queued for up to the drain
// timeout, then closes the sink and the transport. At the deadline it
// gives up: it stops waiting for a connection, closes the transport to cut
// a write short, counts what is left as dropped and returns an error
// wrapping ErrDrainTimeout. If the sink is still busy a second later (a
// writer that ignores the close), Close returns without closing the sink,
// which would race with its Export, and leaves its goroutine behind.
func (c *Collector) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.queue)
	c.mu.Unlock()

	var errs []error
	timer := time.NewTimer(c.drain)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
		before := c.droppedRecords.Load()
		c.cancel()
		if c.tr != nil {
			errs = append(errs, c.tr.Close())
		}
		select {
		case <-c.done:
			errs = append(errs, fmt.Errorf("collector %s close: %w after %v: %d records dropped",
				c.name, ErrDrainTimeout, c.drain, c.droppedRecords.Load()-before))
		case <-time.After(c.abortWait):
			c.log.Error("collector sink still busy after close; leaving it behind")
			errs = append(errs, fmt.Errorf("collector %s close: %w after %v: sink still busy", c.name, ErrDrainTimeout, c.drain))
			return errors.Join(errs...)
		}
	}
	c.cancel()
	errs = append(errs, c.sink.Close())
	if c.tr != nil {
		errs = append(errs, c.tr.Close())
	}
	return errors.Join(errs...)
}
