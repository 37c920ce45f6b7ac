package bpf

// Kernel cost of hostflow's TC program, measured against a no-op TC program
// on the same hook with the kernel's own BPF run-time statistics
// (BPF_ENABLE_STATS, i.e. kernel.bpf_stats_enabled): both programs are
// attached with tcx to the ingress of the receiving end of a veth pair in
// test namespaces, the same frames cross that hook once each, and
// run_time_ns / run_cnt of each program gives its cost per packet.
//
// The no-op's figure is mostly the price of the measurement itself (two
// clock reads per run) plus the call; hostflow minus no-op is what parsing
// and counting add to every packet.
//
//	go test -run TestKernelCost -v ./bpf/
//	go test -run XXX -bench BenchmarkKernelCost -benchtime 300000x ./bpf/

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/bpf/internal/noop"
	"github.com/hostflow/hostflow/internal/testutil"
)

// costScenario is one traffic pattern: packets cycle over flows distinct
// UDP source ports.
type costScenario struct {
	name  string
	flows int
}

var costScenarios = []costScenario{
	{"1flow", 1},
	{"65536flows", 65536},
}

// costResult is what one measurement found.
type costResult struct {
	packets        int
	hfRuns, nopRun uint64
	hfNs, nopNs    float64 // ns per run
}

func (r costResult) ratio() float64 { return r.hfNs / r.nopNs }

// costEnv is a veth pair with hostflow's ingress program and the no-op
// program both on the tcx ingress hook of the receiving end (hfb0), and a
// packet socket on the sending end (hfa0).
type costEnv struct {
	pair    *testutil.VethPair
	fetcher *FlowFetcher
	noop    *ebpf.Program
	fd      int           // AF_PACKET socket bound to hfa0 in A
	rx      func() uint64 // hfb0's rx_packets
}

// enableBPFStats turns the kernel's BPF run-time statistics on for the
// test's duration with a BPF_ENABLE_STATS descriptor. The kernel counts such
// descriptors, so other processes measuring at the same time are not
// disturbed, and kernel.bpf_stats_enabled is never written.
func enableBPFStats(tb testing.TB) {
	tb.Helper()
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		testutil.SkipOrFail(tb, "enable BPF run-time stats: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("disable BPF stats: %v", err)
		}
	})
}

func newCostEnv(tb testing.TB) *costEnv {
	tb.Helper()
	requirePrivileges(tb)
	pair := testutil.NewVethPair(tb)
	e := &costEnv{pair: pair, fd: -1}

	ifA, _ := costLink(tb, pair.A, pair.NameA)
	ifB, rx := costLink(tb, pair.B, pair.NameB)
	e.rx = rx

	// The no-op goes first on the hook, hostflow after it (tcx tail).
	var objs noop.NoopObjects
	if err := noop.LoadNoopObjects(&objs, nil); err != nil {
		tb.Fatalf("load no-op program: %v", err)
	}
	tb.Cleanup(func() { objs.Close() })
	e.noop = objs.Noop
	var nl link.Link
	if err := pair.B.Do(func() (err error) {
		nl, err = link.AttachTCX(link.TCXOptions{Interface: ifB, Program: objs.Noop, Attach: ebpf.AttachTCXIngress, Anchor: link.Tail()})
		return err
	}); err != nil {
		tb.Fatalf("attach no-op to %s ingress: %v", pair.NameB, err)
	}
	tb.Cleanup(func() { nl.Close() })

	f, err := NewFlowFetcher(0, 1<<17, true, false, WithAttachMode(AttachTCX))
	if err != nil {
		tb.Fatalf("NewFlowFetcher: %v", err)
	}
	tb.Cleanup(func() {
		if err := pair.B.Do(f.Close); err != nil {
			tb.Errorf("close fetcher: %v", err)
		}
	})
	if err := pair.B.Do(func() error { return f.Attach(ifB, pair.NameB) }); err != nil {
		tb.Fatalf("attach hostflow to %s: %v", pair.NameB, err)
	}
	e.fetcher = f

	if err := pair.A.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		e.fd = fd
		// Straight to the driver, as trafgen does: the sender's qdisc
		// is not part of what is measured.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifA})
	}); err != nil {
		tb.Fatalf("packet socket on %s: %v", pair.NameA, err)
	}
	tb.Cleanup(func() { unix.Close(e.fd) })
	return e
}

// costLink returns the index of link name in ns and a reader of its
// rx_packets counter.
func costLink(tb testing.TB, ns *testutil.Netns, name string) (int, func() uint64) {
	tb.Helper()
	h, err := ns.Handle()
	if err != nil {
		tb.Fatalf("open %s: %v", ns.Name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		tb.Fatalf("netlink in %s: %v", ns.Name, err)
	}
	tb.Cleanup(nh.Close)
	l, err := nh.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s in %s: %v", name, ns.Name, err)
	}
	return l.Attrs().Index, func() uint64 {
		l, err := nh.LinkByName(name)
		if err != nil || l.Attrs().Statistics == nil {
			tb.Fatalf("counters of %s in %s: %v", name, ns.Name, err)
		}
		return l.Attrs().Statistics.RxPackets
	}
}

// costFrame is a 60-byte Ethernet/IPv4/UDP frame 198.18.0.1:sport ->
// 198.18.0.2:9 addressed to a MAC that is not the receiver's, so that the
// receiver drops it right after the TC hook (PACKET_OTHERHOST) and the
// sender is the bottleneck, not the receiving stack.
func costFrame(sport uint16) []byte {
	f := make([]byte, 60)
	copy(f[0:6], net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02})
	copy(f[6:12], net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 46)
	copy(ip[12:16], []byte{198, 18, 0, 1})
	copy(ip[16:20], []byte{198, 18, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(f[34:], sport)
	binary.BigEndian.PutUint16(f[36:], 9)
	binary.BigEndian.PutUint16(f[38:], 26)
	return f
}

func progStats(tb testing.TB, p *ebpf.Program) (runs uint64, rt time.Duration) {
	tb.Helper()
	s, err := p.Stats()
	if err != nil {
		tb.Fatalf("stats of %v: %v", p, err)
	}
	return s.RunCount, s.Runtime
}

// measure sends packets frames cycling over sc.flows flows, draining the
// aggregation map every second as the daemon does, and returns both
// programs' cost over exactly those packets.
func (e *costEnv) measure(tb testing.TB, sc costScenario, packets int) costResult {
	tb.Helper()
	frames := make([][]byte, sc.flows)
	for i := range frames {
		frames[i] = costFrame(uint16(1024 + i))
	}
	hfProg := e.fetcher.progs.IngressFlowParse

	// Start from an empty map, as after a daemon's drain.
	if err := e.fetcher.Drain(func(NetFlowId, []NetFlowMetrics) {}); err != nil {
		tb.Fatalf("drain: %v", err)
	}
	rx0 := e.rx()
	hfRuns0, hfRT0 := progStats(tb, hfProg)
	nopRuns0, nopRT0 := progStats(tb, e.noop)
	c0, err := e.fetcher.ReadCounters()
	if err != nil {
		tb.Fatalf("ReadCounters: %v", err)
	}

	stopDrain := drainEverySecond(func() error { return e.fetcher.Drain(func(NetFlowId, []NetFlowMetrics) {}) })
	deadline := time.Now().Add(60 * time.Second)
	start := time.Now()
	for i := 0; i < packets; i++ {
		fr := frames[i%len(frames)]
		for {
			_, err := unix.Write(e.fd, fr)
			if err == nil {
				break
			}
			if err != unix.ENOBUFS && err != unix.EAGAIN && err != unix.EINTR {
				stopDrain()
				tb.Fatalf("send frame %d: %v", i, err)
			}
			if time.Now().After(deadline) {
				stopDrain()
				tb.Fatalf("send frame %d: %v for 60s", i, err)
			}
		}
	}
	elapsed := time.Since(start)
	// hfb0 counts a frame when the veth puts it on the receiver's
	// backlog (a full backlog drops it before counting); wait until both
	// programs have seen every frame counted (bounded).
	var hfRuns, nopRuns, rx uint64
	var hfRT, nopRT time.Duration
	for wait := time.Now().Add(5 * time.Second); ; {
		rx = e.rx() - rx0
		hfRuns, hfRT = progStats(tb, hfProg)
		nopRuns, nopRT = progStats(tb, e.noop)
		if (hfRuns-hfRuns0 >= rx && nopRuns-nopRuns0 >= rx) || time.Now().After(wait) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stopDrain(); err != nil {
		tb.Fatalf("drain: %v", err)
	}
	c1, err := e.fetcher.ReadCounters()
	if err != nil {
		tb.Fatalf("ReadCounters: %v", err)
	}

	r := costResult{packets: packets, hfRuns: hfRuns - hfRuns0, nopRun: nopRuns - nopRuns0}
	if r.hfRuns != r.nopRun {
		tb.Errorf("%s: hostflow ran %d times, the no-op %d: they must see the same packets", sc.name, r.hfRuns, r.nopRun)
	}
	// Nothing but these frames crosses hfb0 (IPv6 is off).
	if r.hfRuns != rx {
		tb.Errorf("%s: hostflow ran %d times, hfb0 received %d frames (%d sent)", sc.name, r.hfRuns, rx, packets)
	}
	if r.hfRuns == 0 || r.nopRun == 0 {
		tb.Fatalf("%s: no run recorded (hostflow %d, no-op %d): are BPF stats on?", sc.name, r.hfRuns, r.nopRun)
	}
	if d := c1.RingBufFull - c0.RingBufFull; d != 0 {
		tb.Errorf("%s: %d packets lost to a full ring buffer", sc.name, d)
	}
	r.hfNs = float64(hfRT-hfRT0) / float64(r.hfRuns)
	r.nopNs = float64(nopRT-nopRT0) / float64(r.nopRun)
	tb.Logf("%s: %d frames sent in %v (%.0f pps from one Go sender), %d received, hook ran %d times; map_full %d; hostflow %.1f ns/pkt, no-op %.1f ns/pkt, ratio %.2fx, hostflow adds %.1f ns/pkt",
		sc.name, packets, elapsed.Round(time.Millisecond), float64(packets)/elapsed.Seconds(), rx, r.hfRuns,
		c1.MapFull-c0.MapFull, r.hfNs, r.nopNs, r.ratio(), r.hfNs-r.nopNs)
	return r
}

// TestKernelCost reports hostflow's ns/packet against a no-op TC program on
// the same hook. The 1.5x target is reported, never asserted: the figures
// depend on the machine and its load. It asserts that both programs ran on
// exactly the same packets and that none was lost to the ring buffer.
func TestKernelCost(t *testing.T) {
	requirePrivileges(t)
	e := newCostEnv(t)
	enableBPFStats(t)
	packets := 100_000
	if testing.Short() {
		packets = 10_000
	}
	for _, sc := range costScenarios {
		r := e.measure(t, sc, packets)
		verdict := "within"
		if r.ratio() > 1.5 {
			verdict = "above"
		}
		t.Logf("KERNEL-COST scenario=%s packets=%d hostflow_ns_per_pkt=%.1f noop_ns_per_pkt=%.1f ratio=%.2f (%s the 1.5x target)",
			sc.name, r.hfRuns, r.hfNs, r.nopNs, r.ratio(), verdict)
	}

	// A second view without the statistics' own clock reads:
	// BPF_PROG_TEST_RUN timing one frame repeatedly (one flow, linear
	// skb, no device). The kernel reports whole nanoseconds per run.
	var tr [2]time.Duration
	for i, p := range []*ebpf.Program{e.fetcher.progs.IngressFlowParse, e.noop} {
		_, d, err := p.Benchmark(costFrame(1024), 100_000, nil)
		if err != nil {
			t.Fatalf("BPF_PROG_TEST_RUN %v: %v", p, err)
		}
		tr[i] = d
	}
	t.Logf("KERNEL-COST test-run (BPF_PROG_TEST_RUN, 100000 repeats, 1 flow): hostflow %d ns/run, no-op %d ns/run",
		tr[0].Nanoseconds(), tr[1].Nanoseconds())
}

// BenchmarkKernelCost sends b.N frames per scenario and reports the kernel
// run time per packet of hostflow and of the no-op, and their ratio. Use
// -benchtime Nx: the namespaces are set up once per b.N round.
func BenchmarkKernelCost(b *testing.B) {
	requirePrivileges(b)
	for _, sc := range costScenarios {
		b.Run(sc.name, func(b *testing.B) {
			e := newCostEnv(b)
			enableBPFStats(b)
			b.ResetTimer()
			r := e.measure(b, sc, max(b.N, 1000))
			b.StopTimer()
			b.ReportMetric(r.hfNs, "hostflow-ns/pkt")
			b.ReportMetric(r.nopNs, "noop-ns/pkt")
			b.ReportMetric(r.ratio(), "ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// drainEverySecond calls drain once a second, as the daemon polls, until
// the returned stop is called; stop returns the first drain error. Safe to
// call more than once.
func drainEverySecond(drain func() error) (stop func() error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var drainErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := drain(); err != nil && drainErr == nil {
					drainErr = err
				}
			}
		}
	}()
	var once sync.Once
	return func() error {
		once.Do(func() { close(done); wg.Wait() })
		return drainErr
	}
}
