package bpf

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
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
}

type ifaceAttachment struct {
	name     string
	ifindex  int
	stateDir string // where a clsact qdiscs we created is recorded
	l2       bool   // the device has an Ethernet header
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
	f := &FlowFetcher{ingress: opts.Ingress, egress: opts.Egress, mode: opts.Attach}
	if err := f.init(tcKind, cfg, &f.objs); err != nil {
		return nil, err
	}
	return f, nil
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
	return h.link.Update(p.program(h.ingress, h.l2))
}

// Mode returns the attach mode in use: AttachAuto until the first attach
// has probed the kernel.
func (m *FlowFetcher) Mode() AttachMode {
	m.hooksMu.Lock()
	defer m.hooksMu.Unlock()
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
	return m.attach(ifindex, name, func() (*ifaceAttachment, error) {
		lnk, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return nil, &AttachError{Interface: name, Index: ifindex, Hook: "any", Mode: m.mode, Err: err}
		}
		a := &ifaceAttachment{name: name, ifindex: ifindex, stateDir: m.cfg.stateDir, l2: hasEthernetHeader(lnk)}
		for _, h := range []struct{ on, ingress bool }{{ingress, true}, {egress, false}} {
			if !h.on {
				continue
			}
			l, err := m.attachOne(a, m.progs.program(h.ingress, a.l2), h.ingress)
			if err != nil {
				_ = a.close()
				return nil, &AttachError{Interface: name, Index: ifindex, Hook: hookName(h.ingress), Mode: m.mode, Err: err}
			}
			a.links = append(a.links, hookLink{ingress: h.ingress, link: l})
		}
		return a, nil
	})
}

func hookName(ingress bool) string {
	if ingress {
		return "ingress"
	}
	return "egress"
}

// Hooks returns the hooks Attach uses.
func (m *FlowFetcher) Hooks() (ingress, egress bool) { return m.ingress, m.egress }

// SetHooks changes the hooks of an attached interface to ingress and
// egress: the hooks added are attached first, then the hooks removed are
// detached, and a hook kept is not touched, so that no packet through a
// kept hook goes uncounted while the direction changes. A hook that cannot
// be attached is an error that changes nothing.
func (m *FlowFetcher) SetHooks(ifindex int, ingress, egress bool) error {
	m.hooksMu.Lock()
	defer m.hooksMu.Unlock()
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
		l, err := m.attachOne(a, m.progs.program(h.ingress, a.l2), h.ingress)
		if err != nil {
			for _, h := range added {
				_ = h.link.Close()
			}
			return &AttachError{Interface: a.name, Index: ifindex, Hook: hookName(h.ingress), Mode: m.mode, Err: err}
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
func (m *FlowFetcher) attachOne(a *ifaceAttachment, prog *ebpf.Program, ingress bool) (updatableLink, error) {
	ifindex := a.ifindex
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
		// NewFetcher checked the state dir is writable; a failure
		// here only means a crash could leave this qdisc behind.
		_ = recordQdisc(a.stateDir, ifindex, a.name)
	}
	return c, nil
}

// close removes the programs, and the clsact qdisc if we created it.
func (a *ifaceAttachment) close() error {
	var errs []error
	for _, h := range a.links {
		errs = append(errs, h.link.Close())
	}
	a.links = nil
	if a.ownQdisc {
		errs = append(errs, releaseClsact(a.ifindex))
		forgetQdisc(a.stateDir, a.ifindex)
	}
	return errors.Join(errs...)
}
