package main

import (
	"context"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// listenUDP is a collector on 127.0.0.1 that nobody reads: templates sent
// at build time go somewhere.
func listenUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return "ipfix+udp://" + c.LocalAddr().String()
}

// TestReloadSampling: the sampling rate the collectors' options records
// advertise changes only when the kernel's did. A reload whose new rate
// the fetcher refuses is rejected whole: the running exporters (built
// with the old rate) stay, and so does the configuration.
func TestReloadSampling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantErr bool
		want    int
	}{
		{name: "applied", want: 4},
		{name: "refused", err: errInjected, wantErr: true, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := listenUDP(t)
			f := newFakeFetcher(t)
			f.setSampling = tc.err
			d := testDaemon(t, f, "--collector", url)
			defer func() { d.sinks.Close() }()
			before := d.sinks[0]

			err := d.apply(sinkConfig(t, "--collector", url, "--sampling", "4"))
			if (err != nil) != tc.wantErr {
				t.Errorf("apply: %v, want error %v", err, tc.wantErr)
			}
			if d.cfg.Sampling != tc.want {
				t.Errorf("running sampling %d, want %d", d.cfg.Sampling, tc.want)
			}
			// The rate is built into a collector's options: same rate,
			// same exporter; a new rate, a new one.
			if rebuilt := d.sinks[0] != before; rebuilt != (tc.want != 0) {
				t.Errorf("exporter rebuilt: %v; kernel sampling now %d", rebuilt, tc.want)
			}
		})
	}
}

// TestReloadRemovesDeadCollectorAsync: removing a collector whose peer is
// gone (its Close waits for the drain timeout) does not hold the main loop:
// it drains the kernel map on its ticks while that Close is pending, and
// shutdown waits for the Close to end.
func TestReloadRemovesDeadCollectorAsync(t *testing.T) {
	f := newFakeFetcher(t)
	f.drained = make(chan struct{})
	d := testDaemon(t, f, "--poll-interval", "5ms")
	closing, release, closed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	dead := &fakeSink{onClose: func() {
		close(closing)
		select {
		case <-release:
		case <-time.After(10 * time.Second): // a guard: the test fails below
		}
		close(closed)
	}}
	d.sinks.Close()
	d.sinks = sinkSet{{key: "dead", url: "ipfix+tcp://198.18.0.1:4739", sink: dead}}
	d.args = []string{"--config", "/dev/null", "--poll-interval", "5ms"} // the reload removes it

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, hup) }()
	hup <- syscall.SIGHUP
	<-closing
	select {
	case <-f.drained:
	case <-closed:
		t.Fatal("the main loop did not tick while a removed collector was closing")
	}
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	select {
	case <-closed:
	default:
		t.Error("shutdown returned before the removed collector was closed")
	}
	if d.reloads.Success != 1 {
		t.Errorf("reloads %+v, want one success", d.reloads)
	}
}

// TestReloadRemovesDownTCPCollector is TestReloadRemovesDeadCollectorAsync
// with a real TCP collector whose peer is down and a batch queued: its
// Close keeps trying until the drain timeout. The loop drains the map
// after the reload while that Close is still pending.
func TestReloadRemovesDownTCPCollector(t *testing.T) {
	f := newFakeFetcher(t)
	f.drained = make(chan struct{})
	d := testDaemon(t, f, "--poll-interval", "5ms", "--collector", "ipfix+tcp://"+freeTCPAddr(t))
	down := d.sinks[0]
	for range 2 { // one held by the collector, waiting to connect; one queued
		if err := down.sink.Export([]exporter.Flow{{Packets: 1, Bytes: 60}}); err != nil {
			t.Fatal(err)
		}
	}
	d.args = []string{"--config", "/dev/null", "--poll-interval", "5ms"} // the reload removes it

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, hup) }()
	hup <- syscall.SIGHUP
	for {
		<-f.drained
		d.mu.Lock()
		reloaded := d.reloads.Success == 1
		d.mu.Unlock()
		if reloaded {
			break
		}
	}
	<-f.drained // a tick after the reload
	if d.closer.pending.Load() == 0 {
		t.Error("the removed collector was closed before the loop drained again")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	if n := d.closer.pending.Load(); n != 0 {
		t.Errorf("shutdown returned with %d collectors still closing", n)
	}
	if st := down.stats(); st.DroppedRecords != 2 {
		t.Errorf("removed collector that stayed down: %+v, want its 2 records counted as dropped", st)
	}
}

// TestReloadSamplingFlushesOldRate: the flows counted at the old rate
// (cached, still in the kernel map when the programs are swapped, or
// diverted to the ring buffer) are
// exported as forced end to the old collectors, which advertise the old
// rate, before the new ones take over: a collector never scales a flow
// counted 1-in-1 by the new N.
func TestReloadSamplingFlushesOldRate(t *testing.T) {
	url := listenUDP(t)
	f := newFakeFetcher(t)
	d := testDaemon(t, f, "--collector", url)
	d.sinks.Close()
	var got []exporter.Flow
	var order []string
	old := &fakeSink{onExport: func(flows []exporter.Flow) {
		order = append(order, "old sink")
		got = append(got, flows...)
	}}
	d.sinks = sinkSet{{key: "old", url: url, sink: old}}
	defer func() { d.sinks.Close() }()

	cached := bpf.NetFlowId{IfIndex: 1, TransportProtocol: 6, SrcPort: 1000, DstPort: 80}
	d.cache.Add(cached, []bpf.NetFlowMetrics{{Packets: 3, Bytes: 180, Sampling: 1}})
	inKernel := bpf.NetFlowId{IfIndex: 1, TransportProtocol: 17, SrcPort: 2000, DstPort: 53}
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{inKernel: {{Packets: 2, Bytes: 120, Sampling: 1}}}
	f.onDrain = func() { order = append(order, "drain") }
	// A packet diverted to the ring buffer, read but not yet handled by
	// the loop; the reader waits for the next record.
	diverted := bpf.NetFlowId{IfIndex: 1, TransportProtocol: 17, SrcPort: 3000, DstPort: 123}
	d.direct = make(chan bpf.Record, 1)
	d.direct <- bpf.Record{Id: diverted, Metrics: bpf.NetFlowMetrics{Packets: 1, Bytes: 90, Sampling: 1}}
	go d.readRingBuf(d.direct)

	if err := d.apply(sinkConfig(t, "--collector", url, "--sampling", "10")); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("old sink got %d flows, want the cached one, the kernel's and the diverted one: %+v", len(got), got)
	}
	for _, fl := range got {
		if fl.EndReason != exporter.EndForced {
			t.Errorf("flow %+v: end reason %v, want forced end", fl.Key, fl.EndReason)
		}
	}
	if n := d.cache.Len(); n != 0 {
		t.Errorf("%d flows counted at the old rate left for the new collectors", n)
	}
	if d.sinks[0].sink == old {
		t.Error("the old collector still exports after the sampling changed")
	}
	calls := f.Calls()
	set, drain := slices.Index(calls, "SetSampling"), slices.Index(calls, "Drain")
	if set < 0 || drain < set {
		t.Errorf("calls %v: the kernel map must be drained after the programs are swapped", calls)
	}
	if want := []string{"drain", "old sink"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// TestReloadSamplingRingBufReadAgain: a sampling change flushes the ring
// buffer reader to take what the old programs diverted, and starts a new
// one: records diverted after the reload are still read.
func TestReloadSamplingRingBufReadAgain(t *testing.T) {
	f := newFakeFetcher(t)
	f.flushSignal = make(chan struct{}, 1)
	ring := make(chan bpf.Record)
	f.readRingBuf = func() (ringbuf.Record, error) {
		select {
		case r := <-ring:
			raw := bpf.NetFlowRecordT{Id: bpf.NetFlowIdT(r.Id), Metrics: bpf.NetFlowMetrics(r.Metrics)}
			b := unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
			return ringbuf.Record{RawSample: slices.Clone(b)}, nil
		case <-f.flushSignal:
			return ringbuf.Record{}, ringbuf.ErrFlushed
		}
	}
	d := testDaemon(t, f, "--poll-interval", "1h")
	d.args = append(d.args, "--sampling", "10")

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, hup) }()
	ring <- bpf.Record{Id: bpf.NetFlowId{IfIndex: 1, SrcPort: 1}, Metrics: bpf.NetFlowMetrics{Packets: 1, Sampling: 1}}
	hup <- syscall.SIGHUP
	direct := func() uint64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.reloads.Success+d.reloads.Failure == 0 {
			return 0
		}
		return d.counts.direct
	}
	for deadline := time.Now().Add(5 * time.Second); direct() != 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case ring <- bpf.Record{Id: bpf.NetFlowId{IfIndex: 1, SrcPort: 2}, Metrics: bpf.NetFlowMetrics{Packets: 1, Sampling: 10}}:
	case <-time.After(5 * time.Second):
		t.Fatal("no ring buffer reader after the reload")
	}
	for deadline := time.Now().Add(5 * time.Second); direct() != 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	if d.reloads.Success != 1 || d.counts.direct != 2 || d.cfg.Sampling != 10 {
		t.Errorf("reloads %+v, %d direct records, sampling %d: want one reload to 10 and both records read",
			d.reloads, d.counts.direct, d.cfg.Sampling)
	}
}
