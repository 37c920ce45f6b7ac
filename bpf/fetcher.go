package bpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// DefaultRingBufSize is the size of direct_flows in bytes: room for about
// 43,000 diverted packets between two reads.
const DefaultRingBufSize = 1 << 22

// drainBatch is how many flows one batch syscall moves.
const drainBatch = 4096

// FetcherOption changes how NewFlowFetcher loads and attaches.
type FetcherOption func(*fetcherConfig)

type fetcherConfig struct {
	mode         AttachMode
	ringBufSize  uint32
	algorithm    SamplingAlgorithm
	stateDir     string
	preciseClock bool
	// clockProbe reports whether the coarse clock exists (nil: the
	// kernel's feature probe); clockFallback records that it did not.
	clockProbe    func() error
	clockFallback bool
}

// WithPreciseTimestamps makes the programs stamp flows with the precise
// monotonic clock instead of the coarse one (the last timer tick: 4 ms on
// a 250 Hz kernel). The precise clock costs about a third of the program's
// time per packet on a KVM guest; flow start and end to the tick are what
// most collectors and routers offer.
//
// The coarse clock (bpf_ktime_get_coarse_ns) needs Linux 5.11: on an older
// kernel the programs use the precise one even when this is off, and
// PreciseClock reports that fallback.
func WithPreciseTimestamps(on bool) FetcherOption {
	return func(c *fetcherConfig) { c.preciseClock = on }
}

// SamplingAlgorithm says how 1-in-N sampling picks packets.
type SamplingAlgorithm = NetSamplingAlgorithm

const (
	// SamplingRandom picks each packet with probability 1/N.
	SamplingRandom = NetSamplingAlgorithmSAMPLING_RANDOM
	// SamplingCount picks every Nth packet on each CPU.
	SamplingCount = NetSamplingAlgorithmSAMPLING_COUNT
)

// WithSamplingAlgorithm chooses random (default) or count-based sampling.
func WithSamplingAlgorithm(a SamplingAlgorithm) FetcherOption {
	return func(c *fetcherConfig) { c.algorithm = a }
}

// WithAttachMode forces tcx or clsact instead of probing.
func WithAttachMode(m AttachMode) FetcherOption {
	return func(c *fetcherConfig) { c.mode = m }
}

// WithRingBufSize sets the size of direct_flows (a power of two, at least a
// page).
func WithRingBufSize(n uint32) FetcherOption {
	return func(c *fetcherConfig) { c.ringBufSize = n }
}

// FlowFetcher loads the TC programs, attaches them to interfaces and reads
// the flows they aggregate. It is safe for concurrent use.
//
// It reads both the flows aggregated in the kernel (a per-CPU hash, read
// by Drain or LookupAndDeleteMap) and the flows the kernel forwards one packet at a
// time through the direct_flows ring buffer because the hash was full
// (ReadRingBuf).
type FlowFetcher struct {
	objs NetObjects
	*flowMaps
	ingress bool
	egress  bool
	mode    AttachMode
	cfg     fetcherConfig
	maxSize int

	mu       sync.Mutex // guards attached, objs.NetPrograms and sampling
	sampling int

	attached map[int]*ifaceAttachment
}

type ifaceAttachment struct {
	name     string
	l2       bool // the device has an Ethernet header
	links    []hookLink
	ownQdisc bool
}

// hookLink is one program on one TC hook; Update swaps the program in
// place, so no packet passes unseen or is seen twice.
type hookLink struct {
	ingress bool
	link    updatableLink
}

// updatableLink is a tcx link or a cls_bpf filter.
type updatableLink interface {
	io.Closer
	Update(*ebpf.Program) error
}

// NewFlowFetcher loads the programs and maps into the kernel. sampling is N
// of 1-in-N random packet sampling (0 or 1: every packet); cacheMaxSize is
// how many flows each kernel map holds (one for IPv4, one for IPv6, and a
// spare of each) before packets of new flows are diverted to the ring
// buffer (a map is switched for the empty
// one when 7/8 full or 60 s old); ingress and egress choose the hooks.
//
// The seed's signature is kept; options (attach mode, ring size) come after
// it, so existing callers compile unchanged.
func NewFlowFetcher(sampling, cacheMaxSize int, ingress, egress bool, opts ...FetcherOption) (*FlowFetcher, error) {
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
	if !ingress && !egress {
		return nil, errors.New("neither ingress nor egress: nothing to capture")
	}
	if err := cfg.resolveClock(ebpf.SchedCLS); err != nil {
		return nil, err
	}
	if cfg.stateDir != "" {
		if err := os.MkdirAll(cfg.stateDir, 0o755); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	spec, err := netSpec(sampling, cacheMaxSize, cfg)
	if err != nil {
		return nil, err
	}

	f := &FlowFetcher{
		ingress:  ingress,
		egress:   egress,
		mode:     cfg.mode,
		cfg:      cfg,
		maxSize:  cacheMaxSize,
		sampling: sampling,
		attached: make(map[int]*ifaceAttachment),
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load programs: %w", err)
	}
	f.flowMaps, err = newFlowMaps(f.objs.NetMaps.shared(), cacheMaxSize, cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// netSpec returns the collection spec with the load-time settings applied.
func netSpec(sampling, cacheMaxSize int, cfg fetcherConfig) (*ebpf.CollectionSpec, error) {
	spec, err := LoadNet()
	if err != nil {
		return nil, err
	}
	return configure(spec, sampling, cacheMaxSize, cfg)
}

// program returns the program for a hook: ingress or egress, for devices
// with an Ethernet header or without one.
func (p *NetPrograms) program(ingress, l2 bool) *ebpf.Program {
	switch {
	case ingress && l2:
		return p.IngressFlowParse
	case ingress:
		return p.IngressFlowParseL3
	case l2:
		return p.EgressFlowParse
	}
	return p.EgressFlowParseL3
}

// PreciseClock reports whether the programs stamp flows with the precise
// clock, and whether that is a fallback: the coarse one was asked for but
// the kernel lacks it (Linux < 5.11).
func (m *FlowFetcher) PreciseClock() (precise, fallback bool) {
	return m.cfg.preciseClock, m.cfg.clockFallback
}

// Sampling returns N of the 1-in-N sampling in force.
func (m *FlowFetcher) Sampling() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sampling
}

// SetSampling changes the sampling rate while attached. Sampling is a
// load-time constant of the programs (the verifier prunes the sampling
// branch when it is off), so new programs are loaded on the same maps and
// swapped into every hook in place: no flow is lost and no packet is
// counted twice.
//
// If a hook refuses the new program, the hooks already updated get the old
// one back and the error is returned: every hook samples at the rate
// Sampling reports. The new programs count into the spare map of each
// pair, so that a flow's counts at the two rates never mix: the next Drain
// waits for the old programs still running and hands out only what they
// counted (at the old rate); the Drain after it, the new programs' counts.
func (m *FlowFetcher) SetSampling(sampling int) error {
	if sampling < 0 {
		return fmt.Errorf("sampling %d: must be 0 or more", sampling)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if sampling == m.sampling {
		return nil
	}
	spec, err := netSpec(sampling, m.maxSize, m.cfg)
	if err != nil {
		return err
	}
	// The new programs count into the spare maps (flowMaps.swapToSpare).
	maps, err := m.spareReplacements()
	if err != nil {
		return err
	}
	var progs NetPrograms
	err = spec.LoadAndAssign(&progs, maps)
	if err != nil {
		return fmt.Errorf("load programs for sampling %d: %w", sampling, err)
	}
	if err := m.swapToSpare(func() error { return m.swapPrograms(&progs) }); err != nil {
		_ = progs.Close()
		return err
	}
	old := m.objs.NetPrograms
	m.objs.NetPrograms = progs
	m.sampling = sampling
	return old.Close()
}

// swapPrograms puts progs on every hook. On an error, the hooks already
// updated get the running programs back.
func (m *FlowFetcher) swapPrograms(progs *NetPrograms) error {
	type done struct {
		a *ifaceAttachment
		h hookLink
	}
	var updated []done
	for _, a := range m.attached {
		for _, h := range a.links {
			err := h.link.Update(progs.program(h.ingress, a.l2))
			if err == nil {
				updated = append(updated, done{a, h})
				continue
			}
			errs := []error{fmt.Errorf("update %s: %w", a.name, err)}
			for _, u := range updated {
				if err := u.h.link.Update(m.objs.program(u.h.ingress, u.a.l2)); err != nil {
					errs = append(errs, fmt.Errorf("restore the old program on %s: %w", u.a.name, err))
				}
			}
			return errors.Join(errs...)
		}
	}
	return nil
}

// Mode returns the attach mode in use: AttachAuto until the first attach
// has probed the kernel.
func (m *FlowFetcher) Mode() AttachMode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

// Attach puts the programs on the TC hooks of interface ifindex (name is for
// messages and filter names). Devices without an Ethernet header (tun,
// wireguard, IP tunnels) get the programs that parse from the IP header.
func (m *FlowFetcher) Attach(ifindex int, name string) error {
	return m.AttachHooks(ifindex, name, m.ingress, m.egress)
}

// AttachHooks is Attach on the chosen hooks of this interface only, e.g.
// ingress alone on a router's uplinks and both hooks on its host-facing
// side.
func (m *FlowFetcher) AttachHooks(ifindex int, name string, ingress, egress bool) error {
	if !ingress && !egress {
		return fmt.Errorf("%s (ifindex %d): neither ingress nor egress", name, ifindex)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.attached[ifindex]; ok {
		return fmt.Errorf("%s (ifindex %d): %w", name, ifindex, ErrAlreadyAttached)
	}
	lnk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return &AttachError{Interface: name, Index: ifindex, Hook: "any", Mode: m.mode, Err: err}
	}
	a := &ifaceAttachment{name: name, l2: hasEthernetHeader(lnk)}
	for _, h := range []struct{ on, ingress bool }{{ingress, true}, {egress, false}} {
		if !h.on {
			continue
		}
		l, err := m.attachOne(a, m.objs.program(h.ingress, a.l2), ifindex, h.ingress)
		if err != nil {
			hook := "egress"
			if h.ingress {
				hook = "ingress"
			}
			_ = a.close(ifindex, m.cfg.stateDir)
			return &AttachError{Interface: name, Index: ifindex, Hook: hook, Mode: m.mode, Err: err}
		}
		a.links = append(a.links, hookLink{ingress: h.ingress, link: l})
	}
	m.attached[ifindex] = a
	return nil
}

// Hooks returns the hooks Attach uses.
func (m *FlowFetcher) Hooks() (ingress, egress bool) { return m.ingress, m.egress }

// SetHooks changes the hooks of an attached interface to ingress and
// egress: the hooks added are attached first, then the hooks removed are
// detached, and a hook kept is not touched, so that no packet through a
// kept hook goes uncounted while the direction changes. A hook that cannot
// be attached is an error that changes nothing.
func (m *FlowFetcher) SetHooks(ifindex int, ingress, egress bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.attached[ifindex]
	if !ok {
		return fmt.Errorf("ifindex %d: %w", ifindex, ErrNotAttached)
	}
	if !ingress && !egress {
		return fmt.Errorf("%s (ifindex %d): neither ingress nor egress", a.name, ifindex)
	}
	has := func(in bool) bool {
		return slices.ContainsFunc(a.links, func(h hookLink) bool { return h.ingress == in })
	}
	var added []hookLink
	for _, h := range []struct{ on, ingress bool }{{ingress, true}, {egress, false}} {
		if !h.on || has(h.ingress) {
			continue
		}
		l, err := m.attachOne(a, m.objs.program(h.ingress, a.l2), ifindex, h.ingress)
		if err != nil {
			for _, h := range added {
				_ = h.link.Close()
			}
			hook := "egress"
			if h.ingress {
				hook = "ingress"
			}
			return &AttachError{Interface: a.name, Index: ifindex, Hook: hook, Mode: m.mode, Err: err}
		}
		added = append(added, hookLink{ingress: h.ingress, link: l})
	}
	var errs []error
	kept := added
	for _, h := range a.links {
		if (h.ingress && ingress) || (!h.ingress && egress) {
			kept = append(kept, h)
			continue
		}
		if err := h.link.Close(); err != nil {
			kept = append(kept, h) // still there: Detach tries again
			errs = append(errs, err)
		}
	}
	a.links = kept
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach %s: %w", a.name, err)
	}
	return nil
}

// hasEthernetHeader reports whether TC programs on l see an Ethernet
// header: Ethernet-like devices and loopback do; tun, wireguard and IP
// tunnels (ARPHRD_NONE, _TUNNEL, _SIT, _IPGRE, ...) start at the IP header.
func hasEthernetHeader(l netlink.Link) bool {
	switch l.Attrs().EncapType {
	case "ether", "loopback":
		return true
	}
	return false
}

// attachOne attaches one program, probing for tcx on first use: a kernel
// without tcx answers ErrNotSupported, and clsact is used from then on.
func (m *FlowFetcher) attachOne(a *ifaceAttachment, prog *ebpf.Program, ifindex int, ingress bool) (updatableLink, error) {
	hook := ebpf.AttachTCXEgress
	if ingress {
		hook = ebpf.AttachTCXIngress
	}
	if m.mode == AttachAuto || m.mode == AttachTCX {
		l, err := attachTCX(prog, ifindex, hook)
		if err == nil {
			m.mode = AttachTCX
			return l, nil
		}
		if m.mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, err
		}
		m.mode = AttachClsact
	}
	name := "hostflow_egress"
	if ingress {
		name = "hostflow_ingress"
	}
	c, created, err := attachClsact(prog, ifindex, ingress, name)
	if err != nil {
		return nil, err
	}
	if created {
		a.ownQdisc = true
		// NewFlowFetcher checked the state dir is writable; a failure
		// here only means a crash could leave this qdisc behind.
		_ = recordQdisc(m.cfg.stateDir, ifindex, a.name)
	}
	return c, nil
}

func (a *ifaceAttachment) close(ifindex int, stateDir string) error {
	var errs []error
	for _, h := range a.links {
		errs = append(errs, h.link.Close())
	}
	a.links = nil
	if a.ownQdisc {
		errs = append(errs, releaseClsact(ifindex))
		forgetQdisc(stateDir, ifindex)
	}
	return errors.Join(errs...)
}

// Detach removes the programs from interface ifindex. A link that has gone
// away is no error: the kernel removed the hooks with it.
func (m *FlowFetcher) Detach(ifindex int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.attached[ifindex]
	if !ok {
		return fmt.Errorf("ifindex %d: %w", ifindex, ErrNotAttached)
	}
	delete(m.attached, ifindex)
	m.detached.Store(true)
	if err := a.close(ifindex, m.cfg.stateDir); err != nil {
		return fmt.Errorf("detach %s: %w", a.name, err)
	}
	return nil
}

// Attached returns the indexes of the interfaces the programs are on.
func (m *FlowFetcher) Attached() map[int]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]string, len(m.attached))
	for i, a := range m.attached {
		out[i] = a.name
	}
	return out
}

// DecodeRecord decodes a direct_flows record.
func DecodeRecord(raw []byte) (Record, error) {
	var r NetFlowRecordT
	if len(raw) < int(unsafe.Sizeof(r)) {
		return Record{}, fmt.Errorf("decode record: %d bytes, want %d", len(raw), unsafe.Sizeof(r))
	}
	r = *(*NetFlowRecordT)(unsafe.Pointer(&raw[0]))
	return Record{Id: NetFlowId(r.Id), Metrics: NetFlowMetrics(r.Metrics)}, nil
}

// Close detaches every interface and frees the programs and maps.
func (m *FlowFetcher) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i, a := range m.attached {
		errs = append(errs, a.close(i, m.cfg.stateDir))
	}
	m.attached = map[int]*ifaceAttachment{}
	if m.flowMaps != nil {
		errs = append(errs, m.flowMaps.close())
	}
	errs = append(errs, m.objs.Close())
	return errors.Join(errs...)
}
