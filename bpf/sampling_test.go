package bpf

import (
	"net/netip"
	"testing"
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

			oldIn := progID(t, f.objs.IngressFlowParse)
			if err := e.A.Do(func() error { return f.SetSampling(1 << 30) }); err != nil {
				t.Fatalf("SetSampling: %v", err)
			}
			if f.Sampling() != 1<<30 || progID(t, f.objs.IngressFlowParse) == oldIn {
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
			pingFrom(t, e.A, dst, pingCount, pingPayload)
			checkPingFlows(t, e, drain(t, f), true, true)
			if err := f.SetSampling(-1); err == nil {
				t.Error("SetSampling(-1): no error")
			}
		})
	}
}
