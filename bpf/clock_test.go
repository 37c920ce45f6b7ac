package bpf

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
)

func TestChooseClock(t *testing.T) {
	missing := fmt.Errorf("probe: %w", ebpf.ErrNotSupported)
	for _, tc := range []struct {
		name                   string
		precise                bool
		probe                  error
		wantPrecise, wantFalls bool
		wantErr                bool
	}{
		{name: "coarse asked, kernel has it", probe: nil},
		{name: "coarse asked, kernel lacks it", probe: missing, wantPrecise: true, wantFalls: true},
		{name: "precise asked", precise: true, probe: missing, wantPrecise: true},
		{name: "probe fails", probe: syscall.EPERM, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			precise, fallback, err := chooseClock(tc.precise, func() error { called = true; return tc.probe })
			if (err != nil) != tc.wantErr || precise != tc.wantPrecise || fallback != tc.wantFalls {
				t.Errorf("chooseClock = %v, %v, %v; want precise %v fallback %v error %v",
					precise, fallback, err, tc.wantPrecise, tc.wantFalls, tc.wantErr)
			}
			if tc.precise && called {
				t.Error("probed although the precise clock was asked for")
			}
			if tc.wantErr && !errors.Is(err, tc.probe) {
				t.Errorf("error %v does not wrap %v", err, tc.probe)
			}
		})
	}
}

// TestClockFallbackLoads checks the plumbing from the probe to the loaded
// programs: a kernel without bpf_ktime_get_coarse_ns gets programs that
// read the precise clock, and both fetchers say so.
func TestClockFallbackLoads(t *testing.T) {
	requirePrivileges(t)
	missing := withClockProbe(func() error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) })
	present := withClockProbe(func() error { return nil })
	for _, tc := range []struct {
		name                   string
		opts                   []FetcherOption
		wantPrecise, wantFalls bool
	}{
		{name: "coarse clock present", opts: []FetcherOption{present}},
		{name: "coarse clock missing", opts: []FetcherOption{missing}, wantPrecise: true, wantFalls: true},
		{name: "precise asked", opts: []FetcherOption{missing, WithPreciseTimestamps(true)}, wantPrecise: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, precise, fallback bool, v *ebpf.Variable) {
				t.Helper()
				if precise != tc.wantPrecise || fallback != tc.wantFalls {
					t.Errorf("%s: PreciseClock() = %v, %v; want %v, %v", what, precise, fallback, tc.wantPrecise, tc.wantFalls)
				}
				var got uint32
				if err := v.Get(&got); err != nil {
					t.Fatalf("%s: read precise_clock: %v", what, err)
				}
				if want := map[bool]uint32{false: 0, true: 1}[tc.wantPrecise]; got != want {
					t.Errorf("%s: loaded precise_clock = %d, want %d", what, got, want)
				}
			}
			f := newTestFetcher(t, 64, tc.opts...)
			precise, fallback := f.PreciseClock()
			check("tc", precise, fallback, f.objs.PreciseClock)

			s, err := NewSockFlowFetcher(0, 64, tc.opts...)
			if err != nil {
				t.Fatalf("NewSockFlowFetcher: %v", err)
			}
			defer s.Close()
			precise, fallback = s.PreciseClock()
			check("socket", precise, fallback, s.objs.PreciseClock)
		})
	}
}
