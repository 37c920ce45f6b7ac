package bpf

import (
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestSetSamplingSwitchesMaps: after a sampling change, the old programs
// (still running on some CPU until a grace period) and the new ones count
// into different maps, so that counts at two rates never share a delta
// record. The drain after the change hands out only the old programs'
// packets, at the old rate (the daemon sends them to the old sinks); the
// next one the new programs'. Both program kinds are checked.
func TestSetSamplingSwitchesMaps(t *testing.T) {
	requirePrivileges(t)
	// Count-based sampling counts per CPU: run on one CPU only, so that
	// exactly every 2nd packet is kept at 1:2.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)

	for _, kind := range []struct {
		name string
		// setup returns the fetcher, its running program (it changes
		// with SetSampling), how to run a program over the flow, and
		// SetSampling.
		setup func(t *testing.T) (withMaps, func() *ebpf.Program, func(*ebpf.Program), func(int) error)
	}{
		{"tc", func(t *testing.T) (withMaps, func() *ebpf.Program, func(*ebpf.Program), func(int) error) {
			f := newTestFetcher(t, 64, WithSamplingAlgorithm(SamplingCount))
			frame := udpFlow(7, 20).frame()
			return f, func() *ebpf.Program { return f.progs.IngressFlowParse },
				func(p *ebpf.Program) { runFrame(t, p, frame, nil) }, f.SetSampling
		}},
		{"socket", func(t *testing.T) (withMaps, func() *ebpf.Program, func(*ebpf.Program), func(int) error) {
			f := newTestSockFetcher(t, 64, WithSamplingAlgorithm(SamplingCount))
			frame := sockTestFrame(dummyHost, udpFlow(7, 20).frame())
			return f, func() *ebpf.Program { return f.progs.SockFlowParse },
				func(p *ebpf.Program) { runSock(t, p, frame) }, f.SetSampling
		}},
	} {
		t.Run(kind.name, func(t *testing.T) {
			f, prog, run, setSampling := kind.setup(t)
			const size = 20 + 8 + 20
			for _, mode := range drainModes {
				drain := func() map[NetFlowId]NetFlowMetrics {
					if mode.full {
						f.maps().full.Store(true)
					}
					return drain(t, f)
				}
				run(prog())
				checkOnly(t, mode.name+": before", drain(), 1, size, 0)
				// The running program, as one still running on
				// another CPU after the swap.
				oldProg, err := prog().Clone()
				if err != nil {
					t.Fatal(err)
				}
				if err := setSampling(2); err != nil {
					t.Fatalf("SetSampling: %v", err)
				}
				for range 4 {
					run(prog()) // 2 kept, at 1:2
				}
				for range 5 {
					run(oldProg)
				}
				oldProg.Close()
				checkOnly(t, mode.name+": drain after the change", drain(), 5, size, 0)
				checkOnly(t, mode.name+": next drain", drain(), 2, size, 2)
				if err := setSampling(0); err != nil {
					t.Fatalf("SetSampling(0): %v", err)
				}
				checkOnly(t, mode.name+": drain after the change back", drain(), 0, size, 0)
			}
		})
	}
}

// checkOnly checks that flows holds udpFlow 7 alone with packets packets
// of size bytes at rate sampling, or nothing when packets is 0.
func checkOnly(t *testing.T, what string, flows map[NetFlowId]NetFlowMetrics, packets, size uint64, sampling uint32) {
	t.Helper()
	if packets == 0 {
		if len(flows) != 0 {
			t.Errorf("%s: %v, want nothing", what, flows)
		}
		return
	}
	if len(flows) != 1 {
		t.Fatalf("%s: %d flows, want 1: %v", what, len(flows), flows)
	}
	for id, m := range flows {
		if id.SrcPort != 7 || m.Packets != packets || m.Bytes != packets*size || m.Sampling != sampling {
			t.Errorf("%s: %v: %d packets, %d bytes at 1:%d; want %d, %d at 1:%d", what, id, m.Packets, m.Bytes, m.Sampling, packets, packets*size, sampling)
		}
	}
}
