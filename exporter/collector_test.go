package exporter

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// testFlows returns n distinct flows.
func testFlows(n int) []Flow {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	out := make([]Flow, n)
	for i := range out {
		out[i] = Flow{Key: KeyOf(key(uint16(1000 + i))), Packets: 1, Bytes: 100, Start: now, End: now, EndReason: EndIdleTimeout}
	}
	return out
}

// countingSink records what it is given.
type countingSink struct {
	mu      sync.Mutex
	batches int
	records int
	closed  bool
	delay   time.Duration
}

func (s *countingSink) Export(flows []Flow) error {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	s.records += len(flows)
	return nil
}

func (s *countingSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// blockingWriter blocks every write until released: a collector that
// never answers.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) WriteMessage([]byte) error {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return errors.New("writer released")
}

func mustCollector(t *testing.T, cfg CollectorConfig) *Collector {
	t.Helper()
	c, err := NewCollector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// returnsWithin runs f and reports whether it returned within d: a guard
// against a hang, not a measure of speed. When it reports false, f still
// runs and the caller must not read what f writes.
func returnsWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// A collector whose writer blocks forever does not block Export, drops
// and counts what its queue cannot hold, and does not hold back another
// collector.
func TestCollectorBlockedWriterDoesNotBlock(t *testing.T) {
	bw := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(bw.release) })
	enc, err := NewIPFIX(IPFIXConfig{Writer: bw})
	if err != nil {
		t.Fatal(err)
	}
	slow := mustCollector(t, CollectorConfig{Name: "slow", Sink: enc, QueueLength: 4, DrainTimeout: 20 * time.Millisecond})
	cs := &countingSink{}
	fast := mustCollector(t, CollectorConfig{Name: "fast", Sink: cs, QueueLength: 64})

	batch := testFlows(10)
	if err := slow.Export(batch); err != nil {
		t.Fatal(err)
	}
	if err := fast.Export(batch); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bw.entered: // the slow collector's goroutine is stuck now
	case <-time.After(30 * time.Second): // a guard, not a speed check
		t.Fatal("slow collector never wrote")
	}
	const batches = 50
	for i := 1; i < batches; i++ {
		// The slow writer blocks until the test ends: an Export that
		// waited for it would never return.
		var errSlow, errFast error
		if !returnsWithin(30*time.Second, func() { errSlow, errFast = slow.Export(batch), fast.Export(batch) }) {
			t.Fatalf("export %d blocks", i)
		}
		if errFast != nil {
			t.Errorf("fast export %d: %v", i, errFast)
		}
		if full := i > 4; full != errors.Is(errSlow, ErrQueueFull) {
			t.Errorf("slow export %d: %v (queue full expected: %v)", i, errSlow, full)
		}
	}
	st := slow.Stats()
	if st.Enqueued != 5 || st.Queued != 4 || st.QueuedRecords != 40 || st.DroppedBatches != batches-5 || st.DroppedRecords != 10*(batches-5) || st.SentBatches != 0 {
		t.Errorf("slow stats %+v", st)
	}
	if !waitUntil(30*time.Second, func() bool { return fast.Stats().SentRecords == 10*batches }) {
		t.Errorf("fast collector sent %+v, want %d records", fast.Stats(), 10*batches)
	}

	// Close gives up on the stuck writer (it would block until the test
	// ends) after its deadline and the second it gives the sink to notice.
	if !returnsWithin(30*time.Second, func() { err = slow.Close() }) {
		t.Fatal("close waits for the stuck writer")
	}
	if !errors.Is(err, ErrDrainTimeout) {
		t.Errorf("close: %v, want ErrDrainTimeout", err)
	}
	if err := slow.Export(batch); !errors.Is(err, ErrClosed) {
		t.Errorf("export after close: %v", err)
	}
	if err := fast.Close(); err != nil {
		t.Errorf("fast close: %v", err)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.closed || cs.batches != batches || cs.records != 10*batches {
		t.Errorf("fast sink got %d batches, %d records, closed %v", cs.batches, cs.records, cs.closed)
	}
}

// Close sends everything queued when the collector keeps up.
func TestCollectorCloseDrains(t *testing.T) {
	cs := &countingSink{delay: time.Millisecond}
	c := mustCollector(t, CollectorConfig{Name: "drain", Sink: cs, QueueLength: 16, DrainTimeout: time.Minute})
	for i := 0; i < 16; i++ {
		if err := c.Export(testFlows(i + 1)); err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	st := c.Stats()
	if st.SentBatches != 16 || st.SentRecords != 16*17/2 || st.Queued != 0 || st.QueuedRecords != 0 || st.DroppedBatches != 0 {
		t.Errorf("stats %+v", st)
	}
	if !cs.closed {
		t.Error("sink not closed")
	}
}

// bigWriterSink writes large messages to its transport until one fails.
type bigWriterSink struct {
	tr  Transport
	msg []byte
}

func (s *bigWriterSink) Export([]Flow) error {
	for i := 0; i < 4000; i++ {
		if err := s.tr.WriteMessage(s.msg); err != nil {
			return err
		}
	}
	return nil
}

func (s *bigWriterSink) Close() error { return nil }

// At the drain deadline Close closes the transport, which cuts a write
// that would otherwise run to its (long) write timeout.
func TestCollectorCloseDeadlineCutsWrite(t *testing.T) {
	srv := &msgServer{t: t, arrived: make(chan struct{}, 1), stop: make(chan struct{}), noRead: true}
	srv.listen("127.0.0.1:0")
	t.Cleanup(srv.kill)
	tr := newStream(t, StreamConfig{Address: srv.addr(), WriteTimeout: 30 * time.Second})
	c := mustCollector(t, CollectorConfig{Name: "stuck", Sink: &bigWriterSink{tr: tr, msg: testMsg(1, 65535)}, Transport: tr,
		QueueLength: 4, DrainTimeout: 100 * time.Millisecond})
	// The sink gives up once the transport is closed; on a starved
	// machine that may take longer than the second Close allows.
	c.abortWait = 20 * time.Second
	for i := 0; i < 3; i++ {
		if err := c.Export(testFlows(5)); err != nil {
			t.Fatal(err)
		}
	}
	// Close returns once the sink is done or given up on (a guard, not a
	// speed check); the error says which.
	var err error
	if !returnsWithin(25*time.Second, func() { err = c.Close() }) {
		t.Fatal("close hangs")
	}
	// Not left behind: the write was cut and the goroutine finished.
	if !errors.Is(err, ErrDrainTimeout) || strings.Contains(err.Error(), "still busy") {
		t.Errorf("close: %v, want ErrDrainTimeout with the sink done", err)
	}
	st := c.Stats()
	if st.Errors != 1 || st.DroppedBatches != 2 || st.DroppedRecords != 10 || st.Transport.Connected {
		t.Errorf("stats %+v", st)
	}
}

// ipfixSetIDs returns the set IDs of an IPFIX message in order.
func ipfixSetIDs(msg []byte) []uint16 {
	var ids []uint16
	for b := msg[16:]; len(b) >= 4; {
		n := int(binary.BigEndian.Uint16(b[2:]))
		ids = append(ids, binary.BigEndian.Uint16(b))
		if n < 4 || n > len(b) {
			break
		}
		b = b[n:]
	}
	return ids
}

// tcpIPFIX is an IPFIX encoder (templates refreshed hourly) on a stream
// transport to a test server, whose connect hook writes the templates: they
// come first on every connection.
func tcpIPFIX(t *testing.T) (*msgServer, *StreamTransport, *IPFIX) {
	t.Helper()
	srv := startServer(t, "127.0.0.1:0", nil)
	tr := newStream(t, StreamConfig{Address: srv.addr()})
	enc, err := NewIPFIX(IPFIXConfig{Writer: tr, TemplateRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetOnConnect(func() { enc.WriteTemplates() })
	return srv, tr, enc
}

// End to end: IPFIX over TCP through a Collector. The collector restarts;
// the transport reconnects and the encoder's templates come first on the
// new connection, before any data: the OnConnect hook writes them.
func TestCollectorTCPReconnectSendsTemplatesFirst(t *testing.T) {
	srv, tr, enc := tcpIPFIX(t)
	c := mustCollector(t, CollectorConfig{Name: "tcp", Sink: enc, Transport: tr, QueueLength: 8, DrainTimeout: time.Second})
	defer c.Close()

	if err := c.Export(testFlows(3)); err != nil {
		t.Fatal(err)
	}
	// The batch is two messages: the hook's templates, then the data.
	// Hang up only once both arrived: a hangup between them loses the
	// data message (TestCollectorTCPHangupBeforeDataCountsLoss).
	if !srv.waitFor(20*time.Second, func() bool { s := srv.snapshot(); return len(s) == 1 && len(s[0]) >= 2 }) {
		t.Fatalf("first connection: %d messages, want the templates and the data", srv.total())
	}
	srv.kill()
	if !waitUntil(20*time.Second, func() bool { return !tr.Stats().Connected }) {
		t.Fatal("transport did not notice the collector hang up")
	}
	// The batch waits for the collector to come back.
	if err := c.Export(testFlows(4)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	srv.restart()
	if !srv.waitFor(20*time.Second, func() bool { s := srv.snapshot(); return len(s) == 2 && len(s[1]) >= 1 }) {
		t.Fatalf("no message on the second connection: %d connections", len(srv.snapshot()))
	}
	for i, conn := range srv.snapshot() {
		ids := ipfixSetIDs(conn[0])
		if len(ids) != 1 || ids[0] != 2 {
			t.Errorf("connection %d: first message has sets %v, want the template set (2) alone", i, ids)
		}
	}
	if !waitUntil(20*time.Second, func() bool { return c.Stats().SentRecords == 7 }) {
		t.Errorf("stats %+v, want 7 records sent", c.Stats())
	}
	if st := c.Stats(); st.Reconnects != 1 || st.DroppedBatches != 0 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// hangupSink runs hangup before its first Export: a collector that hangs
// up after the Collector connected (and the hook wrote the templates) but
// before the batch's data is written.
type hangupSink struct {
	Sink
	hangup func()
	once   sync.Once
}

func (s *hangupSink) Export(flows []Flow) error {
	s.once.Do(s.hangup)
	return s.Sink.Export(flows)
}

// The collector hangs up between the templates and the data of a batch,
// and the transport noticed: the data message is lost, not held for the
// next connection. A TCP exporter cannot know which of the messages it
// wrote the collector read (bytes the kernel took are lost silently when
// the peer dies), so a batch is written once and what fails is counted:
// the message in the transport's Lost, its records in the encoder's
// RecordsLost (the transport's RecordsLost is for messages it accepted
// and lost later, which a stream transport never does). The next batch
// goes out on the new connection, templates first.
func TestCollectorTCPHangupBeforeDataCountsLoss(t *testing.T) {
	srv, tr, enc := tcpIPFIX(t)
	sink := &hangupSink{Sink: enc, hangup: func() {
		// The hook's templates arrived, as in
		// TestCollectorTCPReconnectSendsTemplatesFirst before it waited
		// for the data too.
		if !srv.waitFor(20*time.Second, func() bool { return srv.total() == 1 }) {
			t.Error("no templates on the first connection")
		}
		srv.kill()
		if !waitUntil(20*time.Second, func() bool { return !tr.Stats().Connected }) {
			t.Error("transport did not notice the collector hang up")
		}
	}}
	c := mustCollector(t, CollectorConfig{Name: "tcp", Sink: sink, Transport: tr, QueueLength: 8, DrainTimeout: time.Second})
	defer c.Close()

	if err := c.Export(testFlows(3)); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(20*time.Second, func() bool { return c.Stats().Errors == 1 }) {
		t.Fatalf("stats %+v, want the first batch failed", c.Stats())
	}
	if err := c.Export(testFlows(4)); err != nil {
		t.Fatal(err)
	}
	srv.restart()
	if !waitUntil(20*time.Second, func() bool { return c.Stats().SentRecords == 4 }) {
		t.Fatalf("stats %+v, want the second batch sent", c.Stats())
	}

	conns := srv.snapshot()
	if len(conns) != 2 || len(conns[0]) != 1 || len(conns[1]) != 2 {
		t.Fatalf("server got %d connections %v, want the templates alone, then the templates and the data", len(conns), msgCounts(conns))
	}
	gf := newGFCollector()
	for i, tc := range []struct {
		msg              []byte
		templates, flows int
	}{
		{conns[0][0], templates.NumTemplates, 0},
		{conns[1][0], templates.NumTemplates, 0},
		{conns[1][1], 0, 4},
	} {
		m, err := gf.decode(tc.msg)
		if err != nil || len(m.Templates) != tc.templates || len(m.Flows) != tc.flows {
			t.Errorf("message %d: %d templates, %d flows, %v; want %d and %d", i, len(m.Templates), len(m.Flows), err, tc.templates, tc.flows)
		}
	}

	st, es := c.Stats(), enc.Stats()
	if st.SentBatches != 1 || st.Errors != 1 || st.DroppedBatches != 0 || st.Reconnects != 1 {
		t.Errorf("collector stats %+v", st)
	}
	if ts := st.Transport; ts.Messages != 3 || ts.Lost != 1 || ts.RecordsLost != 0 {
		t.Errorf("transport stats %+v, want 3 messages, 1 lost", ts)
	}
	if es.Records != 4 || es.SendErrors != 1 || es.RecordsLost != 3 {
		t.Errorf("encoder stats %+v, want 4 records sent, 3 lost in 1 message", es)
	}
}

// msgCounts returns the number of messages of each connection.
func msgCounts(conns [][][]byte) []int {
	n := make([]int, len(conns))
	for i, c := range conns {
		n[i] = len(c)
	}
	return n
}

func TestNewCollectorConfig(t *testing.T) {
	for _, cfg := range []CollectorConfig{
		{},
		{Sink: &countingSink{}, QueueLength: -1},
		{Sink: &countingSink{}, DrainTimeout: -time.Second},
	} {
		if _, err := NewCollector(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestStreamWriteReconnectTemplatesFirst: the collector drops the
// connection and the next Export's own write reconnects, with a data
// message already built: the encoder's hook writes the templates before
// it, so every connection's first set is a template set.
func TestStreamWriteReconnectTemplatesFirst(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", nil)
	tr := newStream(t, StreamConfig{Address: srv.addr()})
	enc, err := NewIPFIX(IPFIXConfig{Writer: tr, TemplateRefresh: -1, TemplateRefreshMessages: -1})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetOnConnect(func() {
		if err := enc.WriteTemplates(); err != nil {
			t.Errorf("hook: %v", err)
		}
	})
	const drops = 2
	for i := range drops + 1 {
		if i > 0 {
			srv.kill()
			if !waitUntil(20*time.Second, func() bool { return !tr.Stats().Connected }) {
				t.Fatalf("drop %d: transport did not notice the collector hang up", i)
			}
			srv.restart()
			time.Sleep(2 * testBackoff.Max) // no attempt refused by the backoff
		}
		// No Connect first, as a Collector would: the write connects.
		if err := enc.Export(testFlows(50)); err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
		if !srv.waitFor(20*time.Second, func() bool { return len(srv.snapshot()) == i+1 && len(srv.snapshot()[i]) >= 2 }) {
			t.Fatalf("export %d: server has %d connections", i, len(srv.snapshot()))
		}
	}
	conns := srv.snapshot()
	if len(conns) != drops+1 {
		t.Fatalf("%d connections, want %d", len(conns), drops+1)
	}
	for i, msgs := range conns {
		if id := binary.BigEndian.Uint16(msgs[0][16:]); id != 2 {
			t.Errorf("connection %d starts with set %d, want a template set (2)", i, id)
		}
		m, err := newGFCollector().decode(msgs[0])
		if err != nil || len(m.Templates) != templates.NumTemplates || len(m.Flows) != 0 {
			t.Errorf("connection %d: first message %+v %v, want the templates alone", i, m, err)
		}
		// IPFIX numbers data records: the template message takes the
		// number of the data message after it.
		if a, b := binary.BigEndian.Uint32(msgs[0][8:]), binary.BigEndian.Uint32(msgs[1][8:]); a != b {
			t.Errorf("connection %d: sequence %d then %d", i, a, b)
		}
	}
}
