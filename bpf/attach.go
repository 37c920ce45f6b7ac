package bpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachMode says how programs are attached to the TC hooks.
type AttachMode int

const (
	// AttachAuto uses tcx where the kernel has it and clsact otherwise.
	AttachAuto AttachMode = iota
	// AttachTCX uses tcx links (Linux 6.6+). They go away with the process
	// or the interface, and never disturb other programs on the hook.
	AttachTCX
	// AttachClsact adds a clsact qdisc (only if none exists) and a
	// direct-action cls_bpf filter through netlink.
	AttachClsact
	// AttachSocket is SockFlowFetcher's: an AF_PACKET socket filter per
	// interface, no TC hook at all.
	AttachSocket
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachTCX:
		return "tcx"
	case AttachClsact:
		return "clsact"
	case AttachSocket:
		return "socket"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
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
		for _, h := range m.wantHooks(ingress, egress) {
			l, err := m.attachOne(a, m.progs.program(h, a.l2), h.ingress)
			if err != nil {
				_ = a.close()
				return nil, &AttachError{Interface: name, Index: ifindex, Hook: hookName(h.ingress), Mode: m.mode, Err: err}
			}
			h.link = l
			a.links = append(a.links, h)
		}
		// In router mode, the fates of its arrivals are counted once
		// its arrivals are.
		if ingress {
			if err := m.watchArrivals(ifindex, true); err != nil {
				_ = a.close()
				return nil, &AttachError{Interface: name, Index: ifindex, Hook: "ingress", Mode: m.mode, Err: err}
			}
		}
		return a, nil
	})
}

// wantHooks returns the hooks an interface gets for ingress and egress
// (without links): in router mode (Fate) an egress hook always, which
// counts what the host sends only when egress is asked for.
func (m *FlowFetcher) wantHooks(ingress, egress bool) []hookLink {
	var hs []hookLink
	if ingress {
		hs = append(hs, hookLink{ingress: true, local: true})
	}
	if egress || m.cfg.fate {
		hs = append(hs, hookLink{ingress: false, local: egress, fate: m.cfg.fate})
	}
	return hs
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
// kept hook goes uncounted while the direction changes. In router mode
// (Fate) the egress hook stays and gets the program that counts, or not,
// what the host sends, swapped in place; the fates of the interface's
// arrivals are counted from when its ingress hook is attached until just
// before it is detached. A hook that cannot be attached is an error that
// changes nothing.
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
	want := m.wantHooks(ingress, egress)
	find := func(in bool) int {
		return slices.IndexFunc(a.links, func(h hookLink) bool { return h.ingress == in })
	}
	hadIngress := find(true) >= 0
	var added []hookLink
	undo := func() {
		for _, h := range added {
			_ = h.link.Close()
		}
		if ingress && !hadIngress {
			_ = m.watchArrivals(ifindex, false)
		}
	}
	for _, h := range want {
		if find(h.ingress) >= 0 {
			continue
		}
		l, err := m.attachOne(a, m.progs.program(h, a.l2), h.ingress)
		if err != nil {
			undo()
			return &AttachError{Interface: a.name, Index: ifindex, Hook: hookName(h.ingress), Mode: m.mode, Err: err}
		}
		h.link = l
		added = append(added, h)
	}
	if ingress && !hadIngress {
		if err := m.watchArrivals(ifindex, true); err != nil {
			undo()
			return &AttachError{Interface: a.name, Index: ifindex, Hook: "ingress", Mode: m.mode, Err: err}
		}
	}
	// A kept hook whose program changes (router mode's egress).
	for _, h := range want {
		i := find(h.ingress)
		if i < 0 || a.links[i].local == h.local {
			continue
		}
		if err := a.links[i].link.Update(m.progs.program(h, a.l2)); err != nil {
			undo()
			return &AttachError{Interface: a.name, Index: ifindex, Hook: hookName(h.ingress), Mode: m.mode, Err: err}
		}
		a.links[i].local = h.local
	}
	var errs []error
	if hadIngress && !ingress {
		// Before the hook goes: no fate without its arrival.
		if err := m.watchArrivals(ifindex, false); err != nil {
			errs = append(errs, err)
		}
	}
	kept := added
	for _, h := range a.links {
		if slices.ContainsFunc(want, func(w hookLink) bool { return w.ingress == h.ingress }) {
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

// filterPriority and filterHandle identify hostflow's cls_bpf filters, so
// that detaching removes exactly those and nothing another TC user added.
const (
	filterPriority = 1
	filterHandle   = 0x4846 // "HF"
)

// attachTCX attaches prog to ifindex with a tcx link, after every program
// already there: hostflow observes and passes packets on (TCX_NEXT).
func attachTCX(prog *ebpf.Program, ifindex int, hook ebpf.AttachType) (link.Link, error) {
	return link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    hook,
		Anchor:    link.Tail(),
	})
}

// clsactQdisc is the clsact qdisc of ifindex.
func clsactQdisc(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
}

// clsactFilter is a cls_bpf filter hostflow added.
type clsactFilter struct {
	filter *netlink.BpfFilter
}

// attachClsact adds prog as a direct-action filter on the ingress or egress
// hook of ifindex, creating the clsact qdisc if there is none. created says
// whether this call created the qdisc.
func attachClsact(prog *ebpf.Program, ifindex int, ingress bool, name string) (f *clsactFilter, created bool, err error) {
	qdisc := clsactQdisc(ifindex)
	own := false
	if err := netlink.QdiscAdd(qdisc); err == nil {
		own = true
	} else if !errors.Is(err, unix.EEXIST) {
		return nil, false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	if ingress {
		parent = netlink.HANDLE_MIN_INGRESS
	}
	bf := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    filterHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPriority,
		},
		Fd:           prog.FD(),
		Name:         name,
		DirectAction: true,
	}
	if err := netlink.FilterAdd(bf); err != nil {
		if own {
			_ = netlink.QdiscDel(qdisc)
		}
		return nil, false, fmt.Errorf("add cls_bpf filter: %w", err)
	}
	return &clsactFilter{filter: bf}, own, nil
}

// Update replaces the filter's program in place (RTM_NEWTFILTER with
// NLM_F_REPLACE on the same handle and priority).
func (c *clsactFilter) Update(prog *ebpf.Program) error {
	nf := *c.filter
	nf.Fd = prog.FD()
	if err := netlink.FilterReplace(&nf); err != nil {
		return fmt.Errorf("replace cls_bpf filter: %w", err)
	}
	c.filter = &nf
	return nil
}

// Close removes the filter; a filter already gone with its link is no error.
func (c *clsactFilter) Close() error {
	err := netlink.FilterDel(c.filter)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete cls_bpf filter: %w", err)
	}
	return nil
}

// releaseClsact deletes the clsact qdisc of ifindex if it holds no filter.
func releaseClsact(ifindex int) error {
	lnk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil // the link is gone, and its qdisc with it
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(lnk, parent)
		if err != nil {
			return fmt.Errorf("list filters: %w", err)
		}
		if len(filters) > 0 {
			return nil // someone else uses the qdisc now: leave it
		}
	}
	qdisc := clsactQdisc(ifindex)
	if err := netlink.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}
