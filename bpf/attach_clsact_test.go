package bpf

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// clsactState is what netlink shows of a clsact qdisc and its filters.
type clsactState struct {
	qdisc   bool
	ingress []string // "name prio handle", sorted
	egress  []string
}

func readClsact(t *testing.T, h *netlink.Handle, l netlink.Link) clsactState {
	t.Helper()
	var s clsactState
	qdiscs, err := h.QdiscList(l)
	if err != nil {
		t.Fatalf("list qdiscs: %v", err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			s.qdisc = true
		}
	}
	if !s.qdisc {
		return s
	}
	for _, p := range []struct {
		parent uint32
		out    *[]string
	}{{netlink.HANDLE_MIN_INGRESS, &s.ingress}, {netlink.HANDLE_MIN_EGRESS, &s.egress}} {
		filters, err := h.FilterList(l, p.parent)
		if err != nil {
			t.Fatalf("list filters: %v", err)
		}
		for _, f := range filters {
			name := f.Type()
			if bf, ok := f.(*netlink.BpfFilter); ok {
				name = bf.Name
			}
			*p.out = append(*p.out, fmt.Sprintf("%s prio %d handle %#x", name, f.Attrs().Priority, f.Attrs().Handle))
		}
		sort.Strings(*p.out)
	}
	return s
}

func checkClsact(t *testing.T, when string, got, want clsactState) {
	t.Helper()
	if got.qdisc != want.qdisc || !slices.Equal(got.ingress, want.ingress) || !slices.Equal(got.egress, want.egress) {
		t.Errorf("%s: clsact %+v, want %+v", when, got, want)
	}
}

const (
	foreignFilterName = "foreign_noop"
	foreignPrio       = 10
)

var (
	foreignFilter    = fmt.Sprintf("%s prio %d handle %#x", foreignFilterName, foreignPrio, 1)
	hostflowIngress  = fmt.Sprintf("hostflow_ingress prio %d handle %#x", filterPriority, filterHandle)
	hostflowEgress   = fmt.Sprintf("hostflow_egress prio %d handle %#x", filterPriority, filterHandle)
	clsactForeignOut = clsactState{qdisc: true, ingress: []string{foreignFilter}, egress: []string{foreignFilter}}
)

func addForeignFilter(t *testing.T, h *netlink.Handle, ifindex int, prog *ebpf.Program, parent uint32) {
	t.Helper()
	err := h.FilterAdd(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: 1,
			Protocol: unix.ETH_P_ALL, Priority: foreignPrio},
		Fd: prog.FD(), Name: foreignFilterName, DirectAction: true,
	})
	if err != nil {
		t.Fatalf("add foreign filter: %v", err)
	}
}

// TestAttachClsactForeignQdisc: another TC user's clsact qdisc and filters
// are there first; hostflow adds its filters beside them, counts pings, and
// Detach and Close remove only hostflow's filters.
func TestAttachClsactForeignQdisc(t *testing.T) {
	e := newVethEnv(t)
	if err := e.hA.QdiscAdd(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: e.ifA,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}); err != nil {
		t.Fatalf("add foreign clsact: %v", err)
	}
	foreign := loadNoop(t)
	addForeignFilter(t, e.hA, e.ifA, foreign, netlink.HANDLE_MIN_INGRESS)
	addForeignFilter(t, e.hA, e.ifA, foreign, netlink.HANDLE_MIN_EGRESS)
	checkClsact(t, "before attach", readClsact(t, e.hA, e.linkA), clsactForeignOut)

	f, closeFn := nsFetcher(t, e.A, true, true, WithAttachMode(AttachClsact))
	attachIn(t, e.A, f, e.ifA, e.NameA)
	if f.Mode() != AttachClsact {
		t.Fatalf("mode %v, want clsact", f.Mode())
	}
	attached := clsactState{qdisc: true,
		ingress: []string{foreignFilter, hostflowIngress},
		egress:  []string{foreignFilter, hostflowEgress}}
	checkClsact(t, "after attach", readClsact(t, e.hA, e.linkA), attached)

	drain(t, f)
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), pingCount, pingPayload)
	checkPingFlows(t, e, drain(t, f), true, true)

	if err := e.A.Do(func() error { return f.Detach(e.ifA) }); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	checkClsact(t, "after Detach", readClsact(t, e.hA, e.linkA), clsactForeignOut)
	drain(t, f)
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), 1, pingPayload)
	if got := drain(t, f); len(got) != 0 {
		t.Errorf("flows after Detach: %v", got)
	}

	attachIn(t, e.A, f, e.ifA, e.NameA)
	checkClsact(t, "after re-attach", readClsact(t, e.hA, e.linkA), attached)
	if err := closeFn(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkClsact(t, "after Close", readClsact(t, e.hA, e.linkA), clsactForeignOut)
}

// TestAttachClsactOwnQdisc: hostflow creates the clsact qdisc and removes it
// again on Detach and on Close, unless another TC user has put a filter on
// it meanwhile.
func TestAttachClsactOwnQdisc(t *testing.T) {
	e := newVethEnv(t)
	none := clsactState{}
	attached := clsactState{qdisc: true, ingress: []string{hostflowIngress}, egress: []string{hostflowEgress}}
	checkClsact(t, "before attach", readClsact(t, e.hA, e.linkA), none)

	f, closeFn := nsFetcher(t, e.A, true, true, WithAttachMode(AttachClsact))
	attachIn(t, e.A, f, e.ifA, e.NameA)
	checkClsact(t, "after attach", readClsact(t, e.hA, e.linkA), attached)
	drain(t, f)
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), pingCount, pingPayload)
	checkPingFlows(t, e, drain(t, f), true, true)

	if err := e.A.Do(func() error { return f.Detach(e.ifA) }); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	checkClsact(t, "after Detach", readClsact(t, e.hA, e.linkA), none)

	attachIn(t, e.A, f, e.ifA, e.NameA)
	checkClsact(t, "after re-attach", readClsact(t, e.hA, e.linkA), attached)
	if err := closeFn(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkClsact(t, "after Close", readClsact(t, e.hA, e.linkA), none)

	// A qdisc hostflow created but someone else now uses stays.
	f2, closeFn2 := nsFetcher(t, e.A, true, true, WithAttachMode(AttachClsact))
	attachIn(t, e.A, f2, e.ifA, e.NameA)
	foreign := loadNoop(t)
	addForeignFilter(t, e.hA, e.ifA, foreign, netlink.HANDLE_MIN_EGRESS)
	if err := closeFn2(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkClsact(t, "after Close with a foreign filter", readClsact(t, e.hA, e.linkA),
		clsactState{qdisc: true, egress: []string{foreignFilter}})
}
