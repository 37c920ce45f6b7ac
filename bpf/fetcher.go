package bpf

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cilium/ebpf"
)

// drainBatch is how many flows one batch syscall moves.
const drainBatch = 4096

// FlowFetcher loads the TC programs, attaches them to interfaces and reads
// the flows they aggregate. It is safe for concurrent use.
//
// It reads both the flows aggregated in the kernel (a per-CPU hash, read
// by Drain or LookupAndDeleteMap) and the flows the kernel forwards one
// packet at a time through the direct_flows ring buffer because the hash
// was full (ReadRingBuf).
type FlowFetcher struct {
	fetcherCore[*NetPrograms, *ifaceAttachment]
	objs    NetObjects // maps and variables; the programs are fetcherCore.progs
	ingress bool
	egress  bool
	mode    AttachMode // guarded by hooksMu
	// fate is router mode's drop counter (FetcherOptions.Fate), nil
	// without.
	fate *fateCounter
	// fateNAT: the fate programs recover pre-NAT tuples (FateNAT).
	fateNAT bool
	// watchMu serializes the changes of fate_iface_bits (setWatched).
	watchMu sync.Mutex
}

// ifaceAttachment is what a FlowFetcher put on one interface: a program
// on each hook chosen, and whether it created the clsact qdisc.
type ifaceAttachment struct {
	name     string
	ifindex  int
	stateDir string // where a clsact qdisc we created is recorded
	l2       bool   // the device has an Ethernet header
	links    []hookLink
	ownQdisc bool
}

// hookLink is one program on one TC hook; Update swaps the program in
// place, so no packet passes unseen or is seen twice.
type hookLink struct {
	ingress bool
	// local: an egress hook that counts what the host sends (egress was
	// asked for); in router mode (fate) an egress hook without it counts
	// forwarded packets only.
	local bool
	fate  bool
	link  updatableLink
}

// updatableLink is a tcx link or a cls_bpf filter.
type updatableLink interface {
	io.Closer
	Update(*ebpf.Program) error
}

// tcKind loads the TC programs.
var tcKind = kind[*NetPrograms]{
	what:     "programs",
	progType: ebpf.SchedCLS,
	spec:     LoadNet,
	newProgs: func() *NetPrograms { return new(NetPrograms) },
}

// NewFetcher loads the TC programs and maps into the kernel. Nothing is
// attached until Attach.
func NewFetcher(opts FetcherOptions) (*FlowFetcher, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	if cfg.fate {
		probe := opts.fateProbe
		if probe == nil {
			probe = ProbeFate
		}
		if err := probe(); err != nil {
			return nil, err
		}
	}
	f := &FlowFetcher{ingress: opts.Ingress, egress: opts.Egress, mode: opts.Attach}
	if cfg.fate {
		// Before the load: a module loaded meanwhile can only make the
		// programs do better than this says.
		f.fateNAT = probeFateNAT()
	}
	if err := f.init(tcKind, cfg, &f.objs); err != nil {
		if cfg.fate {
			// The router-mode programs are what differs: the
			// caller may retry without them.
			return nil, fmt.Errorf("%w: %w", ErrFateNotSupported, err)
		}
		return nil, err
	}
	if cfg.fate {
		if f.fate, err = loadFateCounter(f.objs.shared(), cfg); err != nil {
			return nil, errors.Join(err, f.fetcherCore.Close())
		}
	}
	return f, nil
}

// Fate reports whether the fetcher counts packets' fates
// (FetcherOptions.Fate).
func (m *FlowFetcher) Fate() bool { return m.fate != nil }

// FateNAT reports whether, counting fates, the fetcher keys forwarded and
// dropped packets by the addresses and ports they had on arrival when NAT
// rewrote them (from their conntrack entries). That needs conntrack's
// types in the kernel's BTF when the programs were loaded: built in, or
// the nf_conntrack module loaded then. Without, a NATed packet's fate is
// counted under its translated tuple, which matches no arrival (user
// space then reports the arrival consumed): load nf_conntrack before
// hostflow. False without Fate.
func (m *FlowFetcher) FateNAT() bool { return m.fate != nil && m.fateNAT }

// Detach removes the programs from interface ifindex; in router mode the
// fates of its arrivals are no longer counted. An interface that has gone away is no error:
// the kernel removed its hooks with it.
func (m *FlowFetcher) Detach(ifindex int) error {
	// First, so that an Attach right after the Detach is watched.
	werr := m.watchArrivals(ifindex, false)
	err := m.fetcherCore.Detach(ifindex)
	if errors.Is(err, ErrNotAttached) {
		return err
	}
	return errors.Join(err, werr)
}

// Close detaches every interface and the drop counter, and frees the
// programs and maps.
func (m *FlowFetcher) Close() error {
	err := m.fate.close()
	m.fate = nil
	return errors.Join(err, m.fetcherCore.Close())
}

// NewFlowFetcher is NewFetcher with positional arguments, the constructor's
// first shape, kept for its callers:
// sampling is FetcherOptions.Sampling, cacheMaxSize KernelMapSize, ingress
// and egress the hooks; opts set the other fields.
func NewFlowFetcher(sampling, cacheMaxSize int, ingress, egress bool, opts ...FetcherOption) (*FlowFetcher, error) {
	o := FetcherOptions{Sampling: sampling, KernelMapSize: cacheMaxSize, Ingress: ingress, Egress: egress}
	for _, opt := range opts {
		opt(&o)
	}
	return NewFetcher(o)
}

// takePrograms moves the programs out of o.
func (o *NetObjects) takePrograms() *NetPrograms {
	p := o.NetPrograms
	o.NetPrograms = NetPrograms{}
	return &p
}

// program returns the program for a hook h: ingress or egress, for
// devices with an Ethernet header or without one (l2), in router mode
// (h.fate) or not; a router-mode egress hook without h.local counts
// forwarded packets only.
func (p *NetPrograms) program(h hookLink, l2 bool) *ebpf.Program {
	switch {
	case h.ingress && l2:
		return p.IngressFlowParse
	case h.ingress:
		return p.IngressFlowParseL3
	case !h.fate && l2:
		return p.EgressFlowParse
	case !h.fate:
		return p.EgressFlowParseL3
	case !h.local && l2:
		return p.EgressFateParse
	case !h.local:
		return p.EgressFateParseL3
	case l2:
		return p.EgressRouterParse
	}
	return p.EgressRouterParseL3
}

func (a *ifaceAttachment) iface() string { return a.name }

// hooks returns the attachment's TC hooks.
func (a *ifaceAttachment) hooks() []hook[*NetPrograms] {
	hs := make([]hook[*NetPrograms], len(a.links))
	for i, h := range a.links {
		hs[i] = tcHook{h, a.l2}
	}
	return hs
}

// tcHook is a hookLink on a device with or without an Ethernet header.
type tcHook struct {
	hookLink
	l2 bool
}

func (h tcHook) update(p *NetPrograms) error {
	return h.link.Update(p.program(h.hookLink, h.l2))
}

// Mode returns the attach mode in use: AttachAuto until the first attach
// has probed the kernel.
func (m *FlowFetcher) Mode() AttachMode {
	m.hooksMu.Lock()
	defer m.hooksMu.Unlock()
	return m.mode
}
