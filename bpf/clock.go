package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// coarseClockProbe returns the probe for bpf_ktime_get_coarse_ns (Linux
// 5.11) in programs of type t: nil if they may call it, an error wrapping
// ebpf.ErrNotSupported if the kernel lacks it.
func coarseClockProbe(t ebpf.ProgramType) func() error {
	return func() error { return features.HaveProgramHelper(t, asm.FnKtimeGetCoarseNs) }
}

// chooseClock decides which clock the programs read. The precise one if it
// was asked for (probe is not called), or if probe reports that the kernel
// lacks the coarse one: fallback is then true. The programs call only the
// clock chosen (precise_clock is a load-time constant and the verifier
// drops the other branch), so on a kernel older than 5.11 they still load.
// A probe that fails for another reason is an error.
func chooseClock(precise bool, probe func() error) (usePrecise, fallback bool, err error) {
	if precise {
		return true, false, nil
	}
	switch err := probe(); {
	case err == nil:
		return false, false, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return true, true, nil
	default:
		return false, false, fmt.Errorf("probe coarse clock: %w", err)
	}
}

// resolveClock settles c.preciseClock for programs of type t before
// anything is loaded, recording in c.clockFallback whether the kernel
// forced the precise clock.
func (c *fetcherConfig) resolveClock(t ebpf.ProgramType) error {
	probe := c.clockProbe
	if probe == nil {
		probe = coarseClockProbe(t)
	}
	var err error
	c.preciseClock, c.clockFallback, err = chooseClock(c.preciseClock, probe)
	return err
}
