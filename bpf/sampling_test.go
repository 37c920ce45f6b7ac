package bpf

import (
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSetSamplingSwapsProgramsInPlace changes the sampling rate of attached
// hooks in both attach modes. A rate of 2^30 counts (almost surely) nothing,
// 0 counts everything again; the maps and what they already hold survive
// every swap.
func TestSetSamplingSwapsProgramsInPlace(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newVethEnv(t)
			f, _ := nsFetcher(t, e.A, true, true, WithAttachMode(mode))
			attachIn(t, e.A, f, e.ifA, e.NameA)
			dst := netip.MustParseAddr(e.AddrB)

			drain(t, f)
			pingFrom(t, e.A, dst, pingCount, pingPayload)
			// Not drained: these counts must survive the swap.

			oldIn := progID(t, f.progs.IngressFlowParse)
			if err := e.A.Do(func() error { return f.SetSampling(1 << 30) }); err != nil {
				t.Fatalf("SetSampling: %v", err)
			}
			if f.Sampling() != 1<<30 || progID(t, f.progs.IngressFlowParse) == oldIn {
				t.Fatalf("sampling %d, programs not replaced", f.Sampling())
			}
			before := counters(t, f).SampledOut
			pingFrom(t, e.A, dst, pingCount, pingPayload)
			if got := counters(t, f).SampledOut - before; got != 2*pingCount {
				t.Errorf("sampled out %d packets, want %d (requests and replies)", got, 2*pingCount)
			}
			checkPingFlows(t, e, drain(t, f), true, true)

			if err := e.A.Do(func() error { return f.SetSampling(0) }); err != nil {
				t.Fatalf("SetSampling(0): %v", err)
			}
			// The drain after a change hands out what the old
			// programs counted (here, almost surely nothing).
			drain(t, f)
			pingFrom(t, e.A, dst, pingCount, pingPayload)
			checkPingFlows(t, e, drain(t, f), true, true)
			if err := f.SetSampling(-1); err == nil {
				t.Error("SetSampling(-1): no error")
			}
		})
	}
}

// TestSamplingAlgorithms runs frames through the programs with 1-in-4
// sampling: count-based keeps exactly every 4th packet and records the rate
// in the flow; random keeps about a quarter.
func TestSamplingAlgorithms(t *testing.T) {
	requirePrivileges(t)
	frame := ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: protoUDP}.build(udp(1, 2, bytesN(10))))
	for _, tc := range []struct {
		alg      SamplingAlgorithm
		runs     int
		min, max uint64 // kept packets
	}{
		{SamplingCount, 400, 100, 100},
		// Binomial(4000, 1/4): mean 1000, sd 27; ±8 sd never fails by chance.
		{SamplingRandom, 4000, 780, 1220},
	} {
		f, err := NewFlowFetcher(4, 16, true, true, WithSamplingAlgorithm(tc.alg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		// Count-based sampling counts per CPU: run on one CPU only.
		runtime.LockOSThread()
		var old, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			t.Fatal(err)
		}
		one.Set(0)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		for range tc.runs {
			runFrame(t, f.progs.IngressFlowParse, frame, nil)
		}
		_ = unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
		flows := drain(t, f)
		if len(flows) != 1 {
			t.Fatalf("alg %d: %d flows", tc.alg, len(flows))
		}
		for _, m := range flows {
			c := counters(t, f)
			if m.Packets < tc.min || m.Packets > tc.max || m.Packets+c.SampledOut != uint64(tc.runs) || m.Sampling != 4 {
				t.Errorf("alg %d: kept %d (want %d..%d), sampled out %d, rate %d", tc.alg, m.Packets, tc.min, tc.max, c.SampledOut, m.Sampling)
			}
		}
	}
}

// TestClocks: the coarse clock (default) and the precise one both stamp
// flows on CLOCK_MONOTONIC; the precise stamps fall inside the run.
func TestClocks(t *testing.T) {
	requirePrivileges(t)
	frame := ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: protoUDP}.build(udp(1, 2, nil)))
	for _, precise := range []bool{false, true} {
		f, err := NewFlowFetcher(0, 16, true, true, WithPreciseTimestamps(precise))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		lo, before := monoCoarse(t), monoNow(t)
		runFrame(t, f.progs.IngressFlowParse, frame, nil)
		after := monoNow(t)
		for _, m := range drain(t, f) {
			if precise && (m.StartMonoTimeTs < before || m.EndMonoTimeTs > after) {
				t.Errorf("precise: %d outside [%d, %d]", m.StartMonoTimeTs, before, after)
			}
			if !precise && (m.StartMonoTimeTs < lo || m.StartMonoTimeTs > after) {
				t.Errorf("coarse: %d outside [%d, %d]", m.StartMonoTimeTs, lo, after)
			}
		}
	}
}
