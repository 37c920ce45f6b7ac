package bpf

import (
	"errors"
	"fmt"

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
