package exporter

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// bufferSink records the batches it is given and the distinct buffers
// they came in; it takes delay over each, and first waits for gate if
// set.
type bufferSink struct {
	delay   time.Duration
	gate    chan struct{} // nil: no wait
	entered chan struct{} // closed at the first Export

	once    sync.Once
	mu      sync.Mutex
	buffers map[*Flow]bool
	firsts  []FlowKey // the first key of each batch, in order
	records int
}

func newBufferSink(delay time.Duration, gate chan struct{}) *bufferSink {
	return &bufferSink{delay: delay, gate: gate, entered: make(chan struct{}), buffers: map[*Flow]bool{}}
}

func (s *bufferSink) Export(flows []Flow) error {
	s.once.Do(func() { close(s.entered) })
	if s.gate != nil {
		<-s.gate
	}
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buffers[&flows[0]] = true
	s.firsts = append(s.firsts, flows[0].Key)
	s.records += len(flows)
	return nil
}

func (s *bufferSink) Close() error { return nil }

// exportAll exports batches one after the other, as the daemon's flush
// does, and returns each Export's error. It fails the test if they do not
// all return within a minute: an Export that waits for a buffer that never
// comes back.
func exportAll(t *testing.T, c *Collector, batches [][]Flow) []error {
	t.Helper()
	done := make(chan []error, 1)
	go func() {
		errs := make([]error, len(batches))
		for i, b := range batches {
			errs[i] = c.Export(b)
		}
		done <- errs
	}()
	select {
	case errs := <-done:
		return errs
	case <-time.After(time.Minute):
		t.Fatal("exports did not return within a minute")
		return nil
	}
}

// maxBurstBuffers is the most batch buffers a collector that keeps up may
// hold: one being sent, one queued.
const maxBurstBuffers = 2

// burst returns n batches of size distinct flows each, batch i starting
// with the flow i*size.
func burst(n, size int) [][]Flow {
	all := testFlows(n * size)
	out := make([][]Flow, n)
	for i := range out {
		out[i] = all[i*size : (i+1)*size]
	}
	return out
}

// A burst of batches (the flush at shutdown) to a collector slower than
// the loop that flushes: every batch arrives, in order, and the collector
// never holds more than two batch buffers (one being sent, one queued)
// instead of a copy per batch queued.
func TestCollectorBurstBoundsBuffers(t *testing.T) {
	const batches, size = 32, 100
	s := newBufferSink(time.Millisecond, nil)
	// A wait that cannot time out here: a sink that keeps up always
	// hands a buffer back.
	c := mustCollector(t, CollectorConfig{Name: "slow", Sink: s, QueueLength: 64, ExportWait: time.Hour, ExportWaitBudget: time.Hour})
	in := burst(batches, size)
	for i, err := range exportAll(t, c, in) {
		if err != nil {
			t.Errorf("export %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.SentBatches != batches || st.SentRecords != batches*size || st.DroppedBatches != 0 || st.ExportWaitTimeouts != 0 {
		t.Errorf("stats %+v", st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buffers) > maxBurstBuffers {
		t.Errorf("the burst used %d batch buffers, want at most %d", len(s.buffers), maxBurstBuffers)
	}
	if len(s.firsts) != batches {
		t.Fatalf("sink got %d batches, want %d", len(s.firsts), batches)
	}
	for i, k := range s.firsts {
		if want := in[i][0].Key; k != want {
			t.Errorf("batch %d starts with %v, want %v", i, k, want)
		}
	}
}

// A stalled collector (its sink blocked): Export waits for a buffer once,
// up to ExportWait, then queues without waiting until the queue is full
// and drops the newest from then on, counted, at once. Once the sink
// catches up, nothing queued was lost.
func TestCollectorStalledDropsNewestWaitsOnce(t *testing.T) {
	const queue, batches, size = 4, 20, 10
	gate := make(chan struct{})
	s := newBufferSink(0, gate)
	c := mustCollector(t, CollectorConfig{Name: "stalled", Sink: s, QueueLength: queue, ExportWait: 10 * time.Millisecond, DrainTimeout: time.Minute})
	in := burst(batches, size)
	if err := c.Export(in[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.entered: // the goroutine holds the first batch, stuck
	case <-time.After(10 * time.Second):
		t.Fatal("sink never called")
	}
	errs := exportAll(t, c, in[1:])
	for i, err := range errs {
		// Batches 1 to 4 fill the queue, the others find it full.
		if full := i+1 > queue; full != errors.Is(err, ErrQueueFull) || (!full && err != nil) {
			t.Errorf("export %d: %v (queue full expected: %v)", i+1, err, full)
		}
	}
	st := c.Stats()
	const dropped = batches - queue - 1
	if st.ExportWaitTimeouts != 1 || st.Enqueued != queue+1 || st.Queued != queue ||
		st.DroppedBatches != dropped || st.DroppedRecords != dropped*size {
		t.Errorf("stats %+v, want 1 wait timed out, %d enqueued, %d dropped", st, queue+1, dropped)
	}

	close(gate)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st = c.Stats()
	if st.SentBatches != queue+1 || st.SentRecords != (queue+1)*size || st.DroppedBatches != dropped || st.ExportWaitTimeouts != 1 {
		t.Errorf("after close: stats %+v", st)
	}
}

// Once a stalled collector has sent everything queued, Export waits for
// buffers again: the next burst holds two.
func TestCollectorWaitsAgainAfterCatchingUp(t *testing.T) {
	const size = 10
	gate := make(chan struct{})
	s := newBufferSink(0, gate)
	c := mustCollector(t, CollectorConfig{Name: "recovers", Sink: s, QueueLength: 8, ExportWait: 10 * time.Millisecond})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	t.Cleanup(func() { c.Close() })
	t.Cleanup(release) // runs first
	in := burst(4, size)
	if err := c.Export(in[0]); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	for i, err := range exportAll(t, c, in[1:]) {
		if err != nil {
			t.Errorf("export %d: %v", i+1, err)
		}
	}
	if st := c.Stats(); st.ExportWaitTimeouts != 1 {
		t.Fatalf("stats %+v, want 1 wait timed out", st)
	}
	release()
	if !waitUntil(10*time.Second, func() bool { return c.Stats().SentBatches == 4 }) {
		t.Fatalf("stats %+v, want 4 batches sent", c.Stats())
	}

	// The collector keeps up now: a long wait always ends with a buffer.
	c.wait = time.Hour
	s.mu.Lock()
	clear(s.buffers)
	s.mu.Unlock()
	s.delay = time.Millisecond
	for i, err := range exportAll(t, c, burst(32, size)) {
		if err != nil {
			t.Errorf("burst export %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := c.Stats(); st.SentBatches != 36 || st.ExportWaitTimeouts != 1 {
		t.Errorf("stats %+v, want 36 batches sent, 1 wait timed out", st)
	}
	if len(s.buffers) > maxBurstBuffers {
		t.Errorf("the burst used %d batch buffers, want at most %d", len(s.buffers), maxBurstBuffers)
	}
}

// A collector slower than the flows end, but never stalled long enough for
// one wait to time out, paces the caller (the capture loop) for at most
// ExportWaitBudget of each second: then Export queues without waiting,
// counted in ExportWaitTimeouts, and the queue takes the rest, as it did
// without pacing. Nothing is lost.
func TestCollectorSlowSinkWaitBudget(t *testing.T) {
	const batches, size = 40, 10
	s := newBufferSink(30*time.Millisecond, nil)
	c := mustCollector(t, CollectorConfig{Name: "slow", Sink: s, QueueLength: 64, ExportWait: time.Second,
		ExportWaitBudget: 60 * time.Millisecond, DrainTimeout: time.Minute})
	for i, err := range exportAll(t, c, burst(batches, size)) {
		if err != nil {
			t.Errorf("export %d: %v", i, err)
		}
	}
	mid := c.Stats()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if mid.ExportWaitTimeouts == 0 {
		t.Errorf("no Export gave up waiting for a 30 ms-a-batch sink: the caller was paced for all %d batches", batches)
	}
	if st.SentBatches != batches || st.DroppedBatches != 0 {
		t.Errorf("stats %+v: want every batch sent", st)
	}
}
