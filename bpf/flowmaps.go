package bpf

// flowMaps is meant to be shared by FlowFetcher and SockFlowFetcher: both
// load the maps of c/account.h and read them the same way. It lives in a
// sock_* file only because fetcher.go had an owner when it was written;
// FlowFetcher switching to it (and the file becoming flowmaps.go) is a
// mechanical change.

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// flowMaps is the user-space side of the maps every hostflow program
// writes: the swapped pair of aggregation maps behind aggregated_flows, the
// direct_flows ring buffer and global_counters. It is not safe for
// concurrent use: its owner serialises drain and close.
type flowMaps struct {
	outer    *ebpf.Map // aggregated_flows, owned by the loaded objects
	counters *ebpf.Map // global_counters, owned by the loaded objects
	inner    [2]*ebpf.Map
	active   int // inner[active] is in the kernel's slot
	ncpu     int
	rb       *ringbuf.Reader
	keys     []NetFlowId
	values   []NetFlowMetrics
}

// newFlowMaps creates the two aggregation maps from innerSpec, installs the
// first one in outer and opens a reader on the ring buffer. outer, ring and
// counters stay owned by the caller.
func newFlowMaps(outer, ring, counters *ebpf.Map, innerSpec *ebpf.MapSpec) (*flowMaps, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("possible CPUs: %w", err)
	}
	fm := &flowMaps{
		outer:    outer,
		counters: counters,
		ncpu:     ncpu,
		keys:     make([]NetFlowId, drainBatch),
		values:   make([]NetFlowMetrics, drainBatch*ncpu),
	}
	for i := range fm.inner {
		m, err := ebpf.NewMap(innerSpec)
		if err != nil {
			fm.close()
			return nil, fmt.Errorf("create aggregation map: %w", err)
		}
		fm.inner[i] = m
	}
	if err := outer.Put(uint32(0), fm.inner[0]); err != nil {
		fm.close()
		return nil, fmt.Errorf("install aggregation map: %w", err)
	}
	fm.rb, err = ringbuf.NewReader(ring)
	if err != nil {
		fm.close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return fm, nil
}

// drain installs the spare (empty) aggregation map, then empties the one
// it replaced, calling fn once per flow with its per-CPU values (valid only
// during the call). The kernel returns from the update only after every
// program that could still hold the old map has finished, so nothing writes
// to it while it is read and deleted: no increment is lost.
func (fm *flowMaps) drain(fn func(NetFlowId, []NetFlowMetrics)) error {
	old, next := fm.inner[fm.active], fm.inner[1-fm.active]
	if err := fm.outer.Put(uint32(0), next); err != nil {
		return fmt.Errorf("swap aggregation map: %w", err)
	}
	fm.active = 1 - fm.active

	var cursor ebpf.MapBatchCursor
	for {
		n, err := old.BatchLookupAndDelete(&cursor, fm.keys, fm.values, nil)
		for i := 0; i < n; i++ {
			fn(fm.keys[i], fm.values[i*fm.ncpu:(i+1)*fm.ncpu])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("drain aggregation map: %w", err)
		}
	}
}

// readCounters sums global_counters over CPUs.
func (fm *flowMaps) readCounters() (KernelCounters, error) {
	var c KernelCounters
	fields := []*uint64{
		NetCounterKeyCOUNTER_MAP_FULL:     &c.MapFull,
		NetCounterKeyCOUNTER_RINGBUF_FULL: &c.RingBufFull,
		NetCounterKeyCOUNTER_NOT_IP:       &c.NotIP,
		NetCounterKeyCOUNTER_MALFORMED:    &c.Malformed,
		NetCounterKeyCOUNTER_NO_MAP:       &c.NoMap,
		NetCounterKeyCOUNTER_SAMPLED_OUT:  &c.SampledOut,
	}
	var perCPU []uint64
	for k, dst := range fields {
		if err := fm.counters.Lookup(uint32(k), &perCPU); err != nil {
			return c, fmt.Errorf("read counter %d: %w", k, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}

// close closes the ring buffer reader and the aggregation maps it created.
// It may be called on a partly built flowMaps.
func (fm *flowMaps) close() error {
	var errs []error
	if fm.rb != nil {
		errs = append(errs, fm.rb.Close())
	}
	for _, m := range fm.inner {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
