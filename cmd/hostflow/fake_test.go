package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/ifaces"
)

// fakeFetcher is a flowSource with no kernel behind it. It records the
// calls made to it and fails the test on any use after Close, as reading
// a closed map's file descriptor would be a bug (and a data race) in the
// daemon.
type fakeFetcher struct {
	t *testing.T

	// readRingBuf replaces the default ring buffer, which blocks until
	// FlushRingBuf or Close.
	readRingBuf func() (ringbuf.Record, error)
	// setSampling is SetSampling's error.
	setSampling error
	// drained receives a value at each Drain, if not nil and not full.
	drained chan struct{}
	// onDrain, if set, runs in each Drain (it may block, as a stuck
	// kernel read would).
	onDrain func()
	// kernel are the flows the next Drain reads, as the kernel map would
	// hold them.
	kernel map[bpf.NetFlowId][]bpf.NetFlowMetrics
	// flushSignal, if not nil, receives a value at each FlushRingBuf
	// (for a readRingBuf that answers each flush once, as the real ring
	// buffer does).
	flushSignal chan struct{}
	// full and diverted are Full's and Diverted's answers (false if nil).
	full, diverted func() bool

	mu       sync.Mutex
	calls    []string
	closed   bool
	flushed  chan struct{}
	sampling int
}

func newFakeFetcher(t *testing.T) *fakeFetcher {
	return &fakeFetcher{t: t, flushed: make(chan struct{})}
}

var _ flowSource = (*fakeFetcher)(nil)

func (f *fakeFetcher) call(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		f.t.Errorf("fetcher: %s after Close", name)
	}
	f.calls = append(f.calls, name)
}

// Calls returns the names of the calls made so far, in order.
func (f *fakeFetcher) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeFetcher) Attach(int, string) error   { f.call("Attach"); return nil }
func (f *fakeFetcher) Detach(int) error           { f.call("Detach"); return nil }
func (f *fakeFetcher) Attached() map[int]string   { f.call("Attached"); return nil }
func (f *fakeFetcher) Mode() bpf.AttachMode       { f.call("Mode"); return bpf.AttachTCX }
func (f *fakeFetcher) PreciseClock() (bool, bool) { f.call("PreciseClock"); return false, false }

func (f *fakeFetcher) Drain(fn func(bpf.NetFlowId, []bpf.NetFlowMetrics)) error {
	f.call("Drain")
	if f.onDrain != nil {
		f.onDrain()
	}
	f.mu.Lock()
	kernel := f.kernel
	f.kernel = nil
	f.mu.Unlock()
	for id, m := range kernel {
		fn(id, m)
	}
	select {
	case f.drained <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeFetcher) ReadRingBuf() (ringbuf.Record, error) {
	if f.readRingBuf != nil {
		return f.readRingBuf()
	}
	<-f.flushed
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ringbuf.Record{}, fmt.Errorf("ring buffer: %w", os.ErrClosed)
	}
	return ringbuf.Record{}, ringbuf.ErrFlushed
}

func (f *fakeFetcher) Diverted(*bpf.Record) bool { return f.diverted != nil && f.diverted() }
func (f *fakeFetcher) Full() (bool, error)       { return f.full != nil && f.full(), nil }

func (f *fakeFetcher) FlushRingBuf() error {
	f.call("FlushRingBuf")
	if f.flushSignal != nil {
		select {
		case f.flushSignal <- struct{}{}:
		default:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.flushed:
	default:
		close(f.flushed)
	}
	return nil
}

func (f *fakeFetcher) TCPEnds() (uint64, error) { return 0, nil }

func (f *fakeFetcher) DoneReading() error {
	f.call("DoneReading")
	return nil
}

func (f *fakeFetcher) ReadCounters() (bpf.KernelCounters, error) {
	f.call("ReadCounters")
	return bpf.KernelCounters{}, nil
}

func (f *fakeFetcher) SetSampling(n int) error {
	f.call("SetSampling")
	if f.setSampling != nil {
		return f.setSampling
	}
	f.mu.Lock()
	f.sampling = n
	f.mu.Unlock()
	return nil
}

func (f *fakeFetcher) Close() error {
	f.call("Close")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	select {
	case <-f.flushed:
	default:
		close(f.flushed)
	}
	return nil
}

// testDaemon is a daemon on a fakeFetcher, with no link following, the
// configuration of args and its sinks built. Its polls read the fetcher
// every time: these tests step the loop by its drains
// (TestDaemonPollSkipsNeedlessReads tests the skipping).
func testDaemon(t *testing.T, f *fakeFetcher, args ...string) *daemon {
	t.Helper()
	d := &daemon{stdout: io.Discard, fetcher: f, readEveryPoll: true}
	setUpDaemon(t, d, f, args...)
	return d
}

// setUpDaemon completes d, whose stdout, fetcher (on f) and fates are
// set: the configuration of args, its sinks and cache (d.cacheConfig), no
// link following.
func setUpDaemon(t *testing.T, d *daemon, f *fakeFetcher, args ...string) {
	t.Helper()
	cfg := sinkConfig(t, args...)
	d.args = append([]string{"--config", "/dev/null"}, args...)
	d.log, d.level, d.notify, d.cfg = slog.New(slog.DiscardHandler), new(slog.LevelVar), newNotifier(), cfg
	sinks, _, _, err := buildSinks(cfg, nil, d.sinkEnv())
	if err != nil {
		t.Fatal(err)
	}
	d.sinks = sinks
	d.links = ifaces.NewManager(f, cfg.Rules(), d.log)
	d.stopLinks = func() {}
	d.linksDone = make(chan struct{})
	close(d.linksDone)
	if d.cache, err = exporter.NewCache(d.cacheConfig(cfg), exporter.SystemClock{}); err != nil {
		t.Fatal(err)
	}
}

var errInjected = errors.New("injected failure")

// fakeSink is an exporter.Sink whose Export runs onExport and Close runs
// onClose, if set.
type fakeSink struct {
	onExport func([]exporter.Flow)
	onClose  func()
}

func (s *fakeSink) Export(flows []exporter.Flow) error {
	if s.onExport != nil {
		s.onExport(flows)
	}
	return nil
}

func (s *fakeSink) Close() error {
	if s.onClose != nil {
		s.onClose()
	}
	return nil
}
