package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
)

// SockFlowFetcher is the --capture socket fallback of FlowFetcher, for
// hosts where the TC hooks cannot be used. It attaches a socket filter
// (c/sock.c) to one AF_PACKET socket per interface instead of TC programs;
// the filter shares the parser, the maps and the accounting with the TC
// programs, so the flows it produces are the same NetFlowId and
// NetFlowMetrics, drained the same way. It is safe for concurrent use.
//
// The filter returns 0 for every packet, so the socket never receives
// anything: a packet socket runs its filter on every packet it is handed
// and only then decides, by the returned length, whether to queue a copy.
// The program thus sees all traffic while nothing is copied to user space.
//
// What differs from TC: egress packets are seen after the qdiscs (what the
// interface really sends, not what TC egress was handed), and the kernel
// clones every outgoing skb for the tap, which costs more than a TC hook.
type SockFlowFetcher struct {
	objs NetSkObjects
	*flowMaps
	cfg     fetcherConfig
	maxSize int

	mu       sync.Mutex // guards objs.NetSkPrograms, sampling and attached
	sampling int
	attached map[int]*sockAttachment
}

// NewSockFlowFetcher loads the socket filters and the maps into the kernel.
// sampling is N of 1-in-N sampling (0 or 1: every packet); cacheMaxSize is
// how many flows the kernel aggregates between two drains before it diverts
// packets to the ring buffer. Of the options, WithSamplingAlgorithm and
// WithRingBufSize apply; WithAttachMode has no meaning here and is ignored.
// A packet socket sees both directions, so there is no ingress/egress
// choice.
func NewSockFlowFetcher(sampling, cacheMaxSize int, opts ...FetcherOption) (*SockFlowFetcher, error) {
	cfg := fetcherConfig{mode: AttachAuto, ringBufSize: DefaultRingBufSize}
	for _, o := range opts {
		o(&cfg)
	}
	if sampling < 0 {
		return nil, fmt.Errorf("sampling %d: must be 0 or more", sampling)
	}
	if cacheMaxSize <= 0 {
		return nil, fmt.Errorf("cache max size %d: must be positive", cacheMaxSize)
	}
	if err := cfg.resolveClock(ebpf.SocketFilter); err != nil {
		return nil, err
	}
	spec, err := netSkSpec(sampling, cacheMaxSize, cfg)
	if err != nil {
		return nil, err
	}
	f := &SockFlowFetcher{
		cfg:      cfg,
		maxSize:  cacheMaxSize,
		sampling: sampling,
		attached: make(map[int]*sockAttachment),
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load socket programs: %w", err)
	}
	f.flowMaps, err = newFlowMaps(f.objs.NetSkMaps.shared(), cacheMaxSize, cfg)
	if err != nil {
		_ = f.objs.Close()
		return nil, err
	}
	return f, nil
}

// netSkSpec returns the socket filters' collection spec with the load-time
// settings applied.
func netSkSpec(sampling, cacheMaxSize int, cfg fetcherConfig) (*ebpf.CollectionSpec, error) {
	spec, err := LoadNetSk()
	if err != nil {
		return nil, err
	}
	return configure(spec, sampling, cacheMaxSize, cfg)
}

// program returns the filter for a device with an Ethernet header or
// without one.
func (p *NetSkPrograms) program(l2 bool) *ebpf.Program {
	if l2 {
		return p.SockFlowParse
	}
	return p.SockFlowParseL3
}

// Mode returns AttachSocket: the interface the daemon reports attach
// state through is the same for both fetchers.
func (m *SockFlowFetcher) Mode() AttachMode { return AttachSocket }

// PreciseClock reports whether the filters stamp flows with the precise
// clock, and whether that is a fallback: the coarse one was asked for but
// the kernel lacks it (Linux < 5.11).
func (m *SockFlowFetcher) PreciseClock() (precise, fallback bool) {
	return m.cfg.preciseClock, m.cfg.clockFallback
}

// Sampling returns N of the 1-in-N sampling in force.
func (m *SockFlowFetcher) Sampling() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sampling
}

// SetSampling changes the sampling rate while attached: new filters are
// loaded on the same maps and put on every socket with SO_ATTACH_BPF,
// which replaces a socket's filter in one pointer swap, so no packet is
// missed or counted twice.
//
// If a socket refuses the new filter, the sockets already updated get the
// old one back and the error is returned: every socket samples at the rate
// Sampling reports. As with FlowFetcher.SetSampling, the new filters count
// into the spare maps: the next Drain hands out only what the old filters
// counted, after waiting for those still running.
func (m *SockFlowFetcher) SetSampling(sampling int) error {
	if sampling < 0 {
		return fmt.Errorf("sampling %d: must be 0 or more", sampling)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if sampling == m.sampling {
		return nil
	}
	spec, err := netSkSpec(sampling, m.maxSize, m.cfg)
	if err != nil {
		return err
	}
	// The new filters count into the spare maps (flowMaps.swapToSpare).
	maps, err := m.spareReplacements()
	if err != nil {
		return err
	}
	var progs NetSkPrograms
	err = spec.LoadAndAssign(&progs, maps)
	if err != nil {
		return fmt.Errorf("load socket programs for sampling %d: %w", sampling, err)
	}
	err = m.swapToSpare(func() error {
		var updated []*sockAttachment
		for _, a := range m.attached {
			if err := setSockFilter(a, progs.program(a.l2)); err != nil {
				errs := []error{fmt.Errorf("update %s: %w", a.name, err)}
				for _, u := range updated {
					if err := setSockFilter(u, m.objs.NetSkPrograms.program(u.l2)); err != nil {
						errs = append(errs, fmt.Errorf("restore the old filter on %s: %w", u.name, err))
					}
				}
				return errors.Join(errs...)
			}
			updated = append(updated, a)
		}
		return nil
	})
	if err != nil {
		_ = progs.Close()
		return err
	}
	old := m.objs.NetSkPrograms
	m.objs.NetSkPrograms = progs
	m.sampling = sampling
	return old.Close()
}

// setSockFilter is sockAttachment.setFilter; tests replace it to make a
// socket refuse a filter.
var setSockFilter = (*sockAttachment).setFilter

// Attached returns the indexes and names of the interfaces with a socket.
func (m *SockFlowFetcher) Attached() map[int]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]string, len(m.attached))
	for i, a := range m.attached {
		out[i] = a.name
	}
	return out
}

// Close closes every socket and frees the programs and maps.
func (m *SockFlowFetcher) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, a := range m.attached {
		errs = append(errs, a.close())
	}
	m.attached = map[int]*sockAttachment{}
	errs = append(errs, m.flowMaps.close(), m.objs.Close())
	return errors.Join(errs...)
}
