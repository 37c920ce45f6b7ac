package bpf

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Both objects include c/account.h, so their settings and shared maps have
// the same names; these are the names account.h gives them.
const (
	varSampling     = NetVarSampling
	varSamplingMode = NetVarSamplingMode
	varPreciseClock = NetVarPreciseClock
	mapFlows0       = NetMapFlows0
	mapFlows1       = NetMapFlows1
	mapFlows40      = NetMapFlows40
	mapFlows41      = NetMapFlows41
	mapState        = NetMapFlowStateMap
	mapGrace        = NetMapGracePeriod
	mapDirect       = NetMapDirectFlows
	mapCounters     = NetMapGlobalCounters
	mapSampleCount  = NetMapSamplingCount
	mapFateIfaces   = NetMapFateIfaces
	mapFateBits     = NetMapFateIfaceBits
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
	for _, name := range []string{mapFlows0, mapFlows1, mapFlows40, mapFlows41} {
		spec.Maps[name].MaxEntries = uint32(cacheMaxSize)
	}
	spec.Maps[mapDirect].MaxEntries = cfg.ringBufSize
	// Only the TC programs' object has it.
	if v, ok := spec.Variables[NetVarFateMode]; ok && cfg.fate {
		if err := v.Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("set fate mode: %w", err)
		}
	}
	// Without router mode nothing reads the bitmap of watched
	// interfaces: one word, not 32 KiB.
	if m, ok := spec.Maps[mapFateBits]; ok && !cfg.fate {
		m.MaxEntries = 1
	}
	return spec, nil
}

// swapped returns s with the two maps of each pair named the other way
// round.
func (s sharedMaps) swapped() sharedMaps {
	s.flows[0], s.flows[1] = s.flows[1], s.flows[0]
	s.flows4[0], s.flows4[1] = s.flows4[1], s.flows4[0]
	return s
}

// replacements are the loaded maps new programs must share (SetSampling).
func (s sharedMaps) replacements() *ebpf.CollectionOptions {
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		mapFlows0:      s.flows[0],
		mapFlows1:      s.flows[1],
		mapFlows40:     s.flows4[0],
		mapFlows41:     s.flows4[1],
		mapState:       s.state,
		mapGrace:       s.grace,
		mapDirect:      s.direct,
		mapCounters:    s.counters,
		mapSampleCount: s.sampleCount,
	}}
	if s.fateIfaces != nil {
		opts.MapReplacements[mapFateIfaces] = s.fateIfaces
		opts.MapReplacements[mapFateBits] = s.fateIfaceBits
	}
	return opts
}

// shared returns the maps of the TC programs' objects.
func (m *NetMaps) shared() sharedMaps {
	return sharedMaps{flows: [2]*ebpf.Map{m.Flows0, m.Flows1}, flows4: [2]*ebpf.Map{m.Flows40, m.Flows41}, state: m.FlowStateMap, grace: m.GracePeriod,
		direct: m.DirectFlows, counters: m.GlobalCounters, sampleCount: m.SamplingCount, fateIfaceBits: m.FateIfaceBits, fateIfaces: m.FateIfaces}
}

// shared returns the maps of the socket filters' objects.
func (m *NetSkMaps) shared() sharedMaps {
	return sharedMaps{flows: [2]*ebpf.Map{m.Flows0, m.Flows1}, flows4: [2]*ebpf.Map{m.Flows40, m.Flows41}, state: m.FlowStateMap, grace: m.GracePeriod,
		direct: m.DirectFlows, counters: m.GlobalCounters, sampleCount: m.SamplingCount}
}
