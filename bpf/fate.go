package bpf

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrFateNotSupported is returned (wrapped) by NewFetcher with
// FetcherOptions.Fate when the kernel cannot count packets' fates: it
// lacks the bpf_cast_to_kern_ctx kfunc (Linux 6.3) or a kfree_skb
// tracepoint with a drop reason (5.17), or refuses the router-mode
// programs. Router mode then falls back to a fetcher without Fate (a
// fetcher that fails that way too has another problem).
var ErrFateNotSupported = errors.New("packet fate counting not supported by this kernel")

// IANA forwardingStatus codes (RFC 7270) the kernel programs count with.
const (
	// FateArrival is 0: the ordinary count of a packet as it arrived (or,
	// at egress, as the host sent it), whatever became of it.
	FateArrival = 0
	// FateForwarded: counted at TC egress, keyed as it arrived.
	FateForwarded = 64
	// FateDropUnknown .. FateDropBadOutIf: dropped, keyed as it arrived.
	FateDropUnknown      = 128
	FateDropACLDeny      = 129
	FateDropACLDrop      = 130
	FateDropUnroutable   = 131
	FateDropAdjacency    = 132
	FateDropFragDF       = 133
	FateDropBadChecksum  = 134
	FateDropBadLength    = 135
	FateDropBadHeaderLen = 136
	FateDropBadTTL       = 137
	FateDropPolicer      = 138
	FateDropQueue        = 139
	FateDropRPF          = 140
	FateDropForUs        = 141
	FateDropBadOutIf     = 142
)

// Flags of a fate_reasons value beside its code (c/fate.c).
const (
	// fateTTLCheck: the code becomes FateDropBadTTL when the packet's TTL
	// or hop limit is 0 or 1.
	fateTTLCheck = 0x100
	// fateOnlyOnArrival: counted only while the packet is still on the
	// interface it arrived by (the reason can also come from a driver
	// after TC egress).
	fateOnlyOnArrival = 0x200
	// fateReasons is the size of the fate_reasons array.
	fateReasons = 512
)

// fateReasonValue maps the name of a kernel drop reason (enum
// skb_drop_reason, without its SKB_DROP_REASON_ prefix) to its value in
// fate_reasons: a forwardingStatus code with flags, or 0 for a drop that
// is no fate of a counted arrival (see c/fate.h): before hostflow's TC
// ingress program saw the packet, or after its TC egress program counted
// it forwarded.
func fateReasonValue(name string) uint32 {
	switch name {
	case "NOT_DROPPED_YET", "CONSUMED", "MAX":
		return 0
	// Before TC ingress (hostflow's program runs last on the hook).
	case "XDP", "CPU_BACKLOG", "TC_INGRESS":
		return 0
	// After TC egress: the egress qdisc and the device.
	case "QDISC_DROP", "QDISC_OVERLIMIT", "QDISC_CONGESTED", "CAKE_FLOOD",
		"FQ_BAND_LIMIT", "FQ_HORIZON_LIMIT", "FQ_FLOW_LIMIT", "DUALPI2_STEP_DROP",
		"FULL_RING", "DEV_READY", "SKB_GSO_SEG", "TAP_TXFILTER":
		return 0
	// Anywhere, drivers after TC egress included.
	case "NOT_SPECIFIED", "NOMEM":
		return FateDropUnknown | fateOnlyOnArrival
	case "NETFILTER_DROP":
		return FateDropACLDrop
	case "XFRM_POLICY", "SECURITY_HOOK", "BPF_CGROUP_EGRESS", "BPF_CGROUP_INGRESS":
		return FateDropACLDeny
	case "IP_NOROUTE", "IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS",
		"IP_INVALID_DEST", "IPV6_NOROUTE", "IPV6DISABLED", "NO_TX_TARGET":
		return FateDropUnroutable
	case "IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE":
		return FateDropRPF
	case "IP_CSUM", "TCP_CSUM", "UDP_CSUM", "ICMP_CSUM", "SKB_CSUM":
		return FateDropBadChecksum
	case "PKT_TOO_SMALL":
		return FateDropBadLength
	// ip_forward and ip6_forward drop a packet whose TTL (hop limit)
	// would expire with IP_INHDR; the receive path uses it for bad
	// headers.
	case "IP_INHDR":
		return FateDropBadHeaderLen | fateTTLCheck
	case "HDR_TRUNC", "IPV6_BAD_EXTHDR":
		return FateDropBadHeaderLen
	case "PKT_TOO_BIG":
		return FateDropFragDF
	case "TC_EGRESS":
		return FateDropPolicer
	case "NO_SOCKET", "IP_NOPROTO", "PROTO_MEM", "TCP_MINTTL":
		return FateDropForUs
	// A frame addressed to another host's link-layer address: an arrival
	// the router dropped, neither for it nor to be forwarded.
	case "OTHERHOST":
		return FateDropUnknown
	}
	switch {
	case strings.HasPrefix(name, "NEIGH_"):
		return FateDropAdjacency
	case strings.HasPrefix(name, "SOCKET_"), strings.HasPrefix(name, "TCP_"):
		return FateDropForUs
	}
	return FateDropUnknown
}

// fateReasonTable returns fate_reasons for the drop reasons of a kernel's
// BTF: every index FateDropUnknown, but for the enum skb_drop_reason
// values below fateReasons, mapped by name.
func fateReasonTable(spec *btf.Spec) ([]uint32, error) {
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil, fmt.Errorf("enum skb_drop_reason: %w", err)
	}
	table := make([]uint32, fateReasons)
	for i := range table {
		table[i] = FateDropUnknown
	}
	for _, v := range e.Values {
		name, ok := strings.CutPrefix(v.Name, "SKB_DROP_REASON_")
		if !ok {
			name = strings.TrimPrefix(v.Name, "SKB_")
		}
		if v.Value < fateReasons {
			table[v.Value] = fateReasonValue(name)
		}
	}
	return table, nil
}

// ProbeFate reports whether the kernel can count packets' fates (see
// FetcherOptions.Fate): nil, or an error wrapping ErrFateNotSupported.
func ProbeFate() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("%w: kernel BTF: %v", ErrFateNotSupported, err)
	}
	return probeFate(spec)
}

func probeFate(spec *btf.Spec) error {
	var fn *btf.Func
	if err := spec.TypeByName("bpf_cast_to_kern_ctx", &fn); err != nil {
		return fmt.Errorf("%w: kfunc bpf_cast_to_kern_ctx: %v", ErrFateNotSupported, err)
	}
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return fmt.Errorf("%w: enum skb_drop_reason: %v", ErrFateNotSupported, err)
	}
	// The tracepoint's arguments: the skb, the location, the reason.
	var tp *btf.Typedef
	if err := spec.TypeByName("btf_trace_kfree_skb", &tp); err != nil {
		return fmt.Errorf("%w: kfree_skb tracepoint: %v", ErrFateNotSupported, err)
	}
	var proto *btf.FuncProto
	if ptr, ok := tp.Type.(*btf.Pointer); ok {
		proto, _ = ptr.Target.(*btf.FuncProto)
	}
	// The first parameter is the tracepoint's context.
	if proto == nil || len(proto.Params) < 4 {
		return fmt.Errorf("%w: kfree_skb tracepoint has no drop reason", ErrFateNotSupported)
	}
	return nil
}

// probeFateNAT reports whether the fate programs about to be loaded can
// recover the tuples packets had before NAT (c/fate.h): cilium/ebpf
// relocates them against vmlinux's BTF and that of the modules loaded
// now, so conntrack (nf_conntrack) must be built in or loaded.
func probeFateNAT() bool {
	c := btf.NewCache()
	kernel, err := c.Kernel()
	if err != nil {
		return false
	}
	var modules []*btf.Spec
	if !hasType(kernel, "nf_conn") {
		names, _ := c.Modules()
		for _, name := range names {
			if spec, err := c.Module(name); err == nil {
				modules = append(modules, spec)
			}
		}
	}
	return fateNATTypes(kernel, modules)
}

// fateNATTypes reports whether kernel (vmlinux's BTF) and modules (loaded
// modules' BTF) have what the fate programs read a packet's conntrack
// entry with: sk_buff's _nfct, only there with conntrack configured, and
// struct nf_conn, in vmlinux or in the nf_conntrack module's BTF.
func fateNATTypes(kernel *btf.Spec, modules []*btf.Spec) bool {
	var skb *btf.Struct
	if err := kernel.TypeByName("sk_buff", &skb); err != nil || !hasMember(skb, "_nfct") {
		return false
	}
	if hasType(kernel, "nf_conn") {
		return true
	}
	return slices.ContainsFunc(modules, func(s *btf.Spec) bool { return hasType(s, "nf_conn") })
}

// hasType reports whether spec has a struct named name.
func hasType(spec *btf.Spec, name string) bool {
	var s *btf.Struct
	return spec.TypeByName(name, &s) == nil
}

// hasMember reports whether s has a member named name, also inside an
// anonymous struct or union member.
func hasMember(t btf.Type, name string) bool {
	var members []btf.Member
	switch c := t.(type) {
	case *btf.Struct:
		members = c.Members
	case *btf.Union:
		members = c.Members
	}
	for _, m := range members {
		if m.Name == name || m.Name == "" && hasMember(m.Type, name) {
			return true
		}
	}
	return false
}

// fateCounter is router mode's drop counter: c/fate.c loaded on the TC
// programs' maps and attached to the kfree_skb tracepoint.
type fateCounter struct {
	objs NetFateObjects
	link link.Link
}

// threadNetns returns the inode number of the calling thread's network
// namespace.
func threadNetns() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("netns of this thread: %w", err)
	}
	return uint32(st.Ino), nil
}

// loadFateCounter loads the drop counter on maps (the TC programs' maps,
// cfg their settings), for drops in the network namespace of the calling
// thread, and attaches it.
func loadFateCounter(maps sharedMaps, cfg fetcherConfig) (*fateCounter, error) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("%w: kernel BTF: %v", ErrFateNotSupported, err)
	}
	table, err := fateReasonTable(kernel)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFateNotSupported, err)
	}
	inum, err := threadNetns()
	if err != nil {
		return nil, err
	}
	spec, err := LoadNetFate()
	if err != nil {
		return nil, err
	}
	// Drops are counted unsampled: sampling 0.
	if spec, err = configure(spec, 0, cfg.mapSize, cfg); err != nil {
		return nil, err
	}
	if err := spec.Variables[NetFateVarNetnsInum].Set(inum); err != nil {
		return nil, fmt.Errorf("set netns: %w", err)
	}
	fc := new(fateCounter)
	if err := spec.LoadAndAssign(&fc.objs, maps.replacements()); err != nil {
		// A kernel the probe let through may still refuse it.
		return nil, fmt.Errorf("%w: load drop counter: %w", ErrFateNotSupported, err)
	}
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := fc.objs.FateReasons.BatchUpdate(keys, table, nil); err != nil {
		return nil, errors.Join(fmt.Errorf("fill drop reasons: %w", err), fc.objs.Close())
	}
	fc.link, err = link.AttachTracing(link.TracingOptions{Program: fc.objs.FateKfreeSkb})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("%w: attach drop counter: %w", ErrFateNotSupported, err), fc.objs.Close())
	}
	return fc, nil
}

// watchArrivals puts ifindex in fate_ifaces (on) or takes it out (c/fate.h):
// in router mode, the fates (forwarded, dropped) of the packets that
// arrived on an interface are counted only while its arrivals are, that
// is while it has hostflow's ingress hook. Without Fate it does nothing.
func (m *FlowFetcher) watchArrivals(ifindex int, on bool) error {
	if m.fate == nil {
		return nil
	}
	what := "watch"
	if !on {
		what = "forget"
	}
	if err := m.setWatched(uint32(ifindex), on); err != nil {
		return fmt.Errorf("fates: %s arrivals of ifindex %d: %w", what, ifindex, err)
	}
	return nil
}

// fateIfaceBits is FATE_IFACE_BITS (c/fate.h): the ifindexes below it are
// bits of fate_iface_bits, the others keys of fate_ifaces.
const fateIfaceBits = 4096 * 64

// setWatched sets or clears ifindex in fate_iface_bits or fate_ifaces.
// A bit changes in a read-modify-write of its word: watchMu keeps two
// changes from losing one; the programs read a word in one load and see
// each bit as it was or as it becomes.
func (m *FlowFetcher) setWatched(ifindex uint32, on bool) error {
	if ifindex >= fateIfaceBits {
		if on {
			return m.objs.FateIfaces.Put(ifindex, uint8(1))
		}
		if err := m.objs.FateIfaces.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	}
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	w, bit := ifindex/64, uint64(1)<<(ifindex%64)
	var bits uint64
	if err := m.objs.FateIfaceBits.Lookup(w, &bits); err != nil {
		return err
	}
	if on {
		bits |= bit
	} else {
		bits &^= bit
	}
	return m.objs.FateIfaceBits.Put(w, bits)
}

// watched reports whether the arrivals of ifindex have their fates
// counted.
func (m *FlowFetcher) watched(ifindex uint32) (bool, error) {
	if ifindex >= fateIfaceBits {
		var v uint8
		err := m.objs.FateIfaces.Lookup(ifindex, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	var bits uint64
	if err := m.objs.FateIfaceBits.Lookup(ifindex/64, &bits); err != nil {
		return false, err
	}
	return bits&(1<<(ifindex%64)) != 0, nil
}

// close detaches and frees the drop counter.
func (fc *fateCounter) close() error {
	if fc == nil {
		return nil
	}
	return errors.Join(fc.link.Close(), fc.objs.Close())
}
