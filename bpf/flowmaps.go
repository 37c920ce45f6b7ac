package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// flowMaps is the user-space side of the maps every hostflow program
// writes: the swapped pair of aggregation maps behind aggregated_flows, the
// direct_flows ring buffer and global_counters. FlowFetcher and
// SockFlowFetcher embed it, so both read their maps with the same methods.
type flowMaps struct {
	mu       sync.Mutex // serialises drains
	outer    *ebpf.Map  // aggregated_flows, owned by the loaded objects
	counters *ebpf.Map  // global_counters, owned by the loaded objects
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

// LookupAndDeleteMap takes every flow the kernel aggregated since the last
// call, with one value per possible CPU.
//
// Unlike the seed's version, no increment can be lost (see Drain), and it
// returns an error instead of logging it: a failed drain must be counted
// by the caller.
func (fm *flowMaps) LookupAndDeleteMap() (map[NetFlowId][]NetFlowMetrics, error) {
	out := make(map[NetFlowId][]NetFlowMetrics)
	err := fm.Drain(func(id NetFlowId, perCPU []NetFlowMetrics) {
		out[id] = append([]NetFlowMetrics(nil), perCPU...)
	})
	return out, err
}

// ReadRingBuf blocks until the kernel diverts a packet through direct_flows
// and returns its raw record; decode it with DecodeRecord. It returns
// ringbuf.ErrClosed (wrapped in os.ErrClosed) after Close.
func (fm *flowMaps) ReadRingBuf() (ringbuf.Record, error) {
	return fm.rb.Read()
}

// FlushRingBuf makes ReadRingBuf return every record already in
// direct_flows and then ringbuf.ErrFlushed, instead of blocking. Call it
// after detaching, so that the last diverted packets are read before exit.
func (fm *flowMaps) FlushRingBuf() error {
	return fm.rb.Flush()
}

// Drain is LookupAndDeleteMap without the intermediate map. It installs the
// spare (empty) aggregation map, then empties the one it replaced, calling fn once per flow with its per-CPU values (valid only
// during the call). The kernel returns from the update only after every
// program that could still hold the old map has finished, so nothing writes
// to it while it is read and deleted: no increment is lost.
func (fm *flowMaps) Drain(fn func(NetFlowId, []NetFlowMetrics)) error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
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

// ReadCounters reads the kernel counters, summed over CPUs.
func (fm *flowMaps) ReadCounters() (KernelCounters, error) {
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

// Both objects include c/account.h, so their settings and shared maps have
// the same names; these are the names account.h gives them.
const (
	varSampling     = NetVarSampling
	varSamplingMode = NetVarSamplingMode
	varPreciseClock = NetVarPreciseClock
	mapAggregated   = NetMapAggregatedFlows
	mapDirect       = NetMapDirectFlows
	mapCounters     = NetMapGlobalCounters
	mapSampleCount  = NetMapSamplingCount
)

// configure applies the load-time settings to a spec loaded by LoadNet or
// LoadNetSk: sampling rate and algorithm (volatile consts), aggregation map
// and ring buffer sizes.
func configure(spec *ebpf.CollectionSpec, sampling, cacheMaxSize int, cfg fetcherConfig) (*ebpf.CollectionSpec, error) {
	if err := spec.Variables[varSampling].Set(uint32(sampling)); err != nil {
		return nil, fmt.Errorf("set sampling: %w", err)
	}
	if err := spec.Variables[varSamplingMode].Set(uint32(cfg.algorithm)); err != nil {
		return nil, fmt.Errorf("set sampling algorithm: %w", err)
	}
	precise := uint32(0)
	if cfg.preciseClock {
		precise = 1
	}
	if err := spec.Variables[varPreciseClock].Set(precise); err != nil {
		return nil, fmt.Errorf("set clock: %w", err)
	}
	spec.Maps[mapAggregated].InnerMap.MaxEntries = uint32(cacheMaxSize)
	spec.Maps[mapDirect].MaxEntries = cfg.ringBufSize
	return spec, nil
}

// replacements are the loaded maps new programs must share (SetSampling):
// the same aggregation slot, ring buffer, counters and sampling counter.
func replacements(aggregated, direct, counters, sampleCount *ebpf.Map) *ebpf.CollectionOptions {
	return &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		mapAggregated:  aggregated,
		mapDirect:      direct,
		mapCounters:    counters,
		mapSampleCount: sampleCount,
	}}
}
