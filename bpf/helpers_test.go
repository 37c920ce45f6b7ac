package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/internal/testutil"
)

// requirePrivileges skips the test when the process cannot load BPF
// programs, and fails it instead under CI=true.
func requirePrivileges(t testing.TB) {
	t.Helper()
	testutil.RequireBPF(t)
}

// newTestFetcher loads a fetcher that is closed when the test ends.
func newTestFetcher(t testing.TB, cacheMaxSize int, opts ...FetcherOption) *FlowFetcher {
	t.Helper()
	requirePrivileges(t)
	f, err := NewFlowFetcher(0, cacheMaxSize, true, true, opts...)
	if err != nil {
		t.Fatalf("NewFlowFetcher: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

// skbCtx is struct __sk_buff up to and including gso_segs, for the context
// of BPF_PROG_TEST_RUN. The kernel accepts a shorter context and only a few
// fields (mark, priority, ifindex, cb, tstamp, wire_len, gso_segs, ...).
type skbCtx [168]byte

const skbGSOSegsOff = 164

func ctxWithGSOSegs(segs uint32) *skbCtx {
	var c skbCtx
	binary.NativeEndian.PutUint32(c[skbGSOSegsOff:], segs)
	return &c
}

// tcActUnspec is TC_ACT_UNSPEC (-1) as BPF_PROG_TEST_RUN returns it.
const tcActUnspec = 0xffffffff

// runFrame runs prog once over frame with BPF_PROG_TEST_RUN. Repeat stays 1:
// cilium/ebpf restarts a whole Repeat>1 run after EINTR (the Go runtime's
// preemption signals), which would count some packets twice.
func runFrame(t testing.TB, prog *ebpf.Program, frame []byte, ctx *skbCtx) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: frame, Repeat: 1}
	if ctx != nil {
		opts.Context = ctx
	}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("run %s on %d-byte frame: %v", prog, len(frame), err)
	}
	if ret != tcActUnspec {
		t.Fatalf("run %s: returned %#x, want TC_ACT_UNSPEC: the probe must never change a packet's fate", prog, ret)
	}
}

// sumMetrics folds per-CPU values the way user space does.
func sumMetrics(perCPU []NetFlowMetrics) NetFlowMetrics {
	var m NetFlowMetrics
	for i := range perCPU {
		m.Accumulate(&perCPU[i])
	}
	return m
}

// withMaps is either fetcher: both embed flowMaps.
type withMaps interface{ maps() *flowMaps }

// maps lets test helpers take either fetcher (test-only method).
func (fm *flowMaps) maps() *flowMaps { return fm }

// drain takes what every flow counted since the last drain.
func drain(t testing.TB, fetcher withMaps) map[NetFlowId]NetFlowMetrics {
	t.Helper()
	f := fetcher.maps()
	flows, err := f.LookupAndDeleteMap()
	if err != nil {
		t.Fatalf("LookupAndDeleteMap: %v", err)
	}
	out := make(map[NetFlowId]NetFlowMetrics, len(flows))
	for id, m := range flows {
		if len(m) != 1 {
			t.Fatalf("flow %v: %d values, want 1", id, len(m))
		}
		out[id] = m[0]
	}
	return out
}

func counters(t testing.TB, f withMaps) KernelCounters {
	t.Helper()
	c, err := f.maps().ReadCounters()
	if err != nil {
		t.Fatalf("ReadCounters: %v", err)
	}
	return c
}

func monoNow(t testing.TB) uint64 { return clockNow(t, unix.CLOCK_MONOTONIC) }

// monoCoarse reads CLOCK_MONOTONIC_COARSE, the programs' default clock: a
// lower bound for a timestamp they take later, whichever clock they use.
func monoCoarse(t testing.TB) uint64 { return clockNow(t, unix.CLOCK_MONOTONIC_COARSE) }

func clockNow(t testing.TB, clock int32) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		t.Fatalf("clock_gettime: %v", err)
	}
	return uint64(ts.Nano())
}

// ipKey returns an address as the kernel stores it: IPv4 as ::ffff:a.b.c.d.
func ipKey(s string) [16]uint8 {
	return [16]uint8(IPAddrFrom(netip.MustParseAddr(s)))
}
