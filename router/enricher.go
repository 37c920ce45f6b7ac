// Package router adds, at export, what a host that routes did with each
// flow. In router mode hostflow counts every packet once as it arrives (TC
// ingress) and, when the kernel supports it (Linux 6.3 and later: see the
// bpf package), once more with its fate: forwarded (seen leaving at TC
// egress, with the interface it left on) or dropped (the kfree_skb
// tracepoint, with the kernel's drop reason as an IANA forwardingStatus
// code). The exporter.Cache exports one record per fate, and derives the
// consumed packets (arrived, neither forwarded nor dropped). Enricher then
// fills the exporter.Flow router fields:
//
//   - With kernel fates (Options.Fates), ForwardingStatus and
//     EgressIfIndex are the kernel's: what happened to the packets. The
//     kernel FIB is asked only for what the fate leaves open: the next hop
//     of a forwarded record, kept only if the route's egress interface is
//     the one the kernel saw the packets leave on (else the route changed,
//     or policy or multipath routing took another path: the next hop is
//     left unknown); and what a consumed record (packets without a fate)
//     was: addressed to the host (195, consumed "for us"), forwarded out
//     of an interface hostflow does not watch, which no program sees them
//     leave (reported 64 with the route's egress interface and next hop),
//     or neither (192, consumed, reason unknown). Dropped records have no
//     egress interface or next hop. Records of fate 0 (arrivals the cache
//     could not match with fates: VLAN-tagged ones, see
//     exporter.CacheConfig.Fates) get the fallback's status below.
//   - Without them (an older kernel, packet sampling: the fallback),
//     EgressIfIndex, NextHop and ForwardingStatus come from the FIB at
//     export time, for every ingress record: 64 forwarded, 128 dropped (reason unknown) or 192
//     consumed. The answer is the route at export time, not the packets'
//     fate: packets a firewall dropped, or whose TTL ran out, are reported
//     forwarded, and a flow whose route changed while it was active is
//     reported with the route it has when it is exported.
//
// The FIB lookup is one RTM_GETROUTE per distinct (ingress interface,
// source, destination) per Enrich call, with the ingress interface and
// source address set, i.e. `ip route get DST from SRC iif IN`: the kernel
// answers what it does with such a packet, policy routing, reverse-path
// filtering and local delivery included. With an L4 multipath hash policy
// the path the kernel picks for the lookup (which has no ports) can differ
// from the flow's.
//
//   - SrcPrefixLen and DstPrefixLen are longest-prefix matches in an
//     in-memory copy of the main routing table (Table), kept current from
//     netlink route notifications.
//   - PostNATSrc/Dst and their ports come from conntrack (ingress flows
//     only: records are keyed by the packets as they arrived, before NAT),
//     per Enrich call either from one dump of the table indexed by both
//     tuples of each entry (NATIndex) or from one IPCTNL_MSG_CT_GET per
//     flow, whichever the table's size makes cheaper (ConntrackMode). The
//     FIB lookup then uses the post-NAT destination, as the kernel routes
//     after destination NAT (DNAT, de-NAT of a masqueraded reply) and
//     before source NAT: a reply to a masqueraded connection, addressed
//     to the router, is forwarded to the client, not consumed.
//
// The NextHop of a connected route (no gateway) is the destination
// itself: the host the packet is handed to on the link. Multicast
// destinations are not looked up (no next hop; in the fallback,
// ForwardingStatus 0).
//
// Everything happens in the network namespace of the thread that calls New:
// the netlink sockets (and the nf_conntrack_count file) are opened there
// and keep it, so Enrich may run on any thread.
package router

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// IANA forwardingStatus (element 89, RFC 7270) values Enrich sets: the
// status in the two high bits, a reason code in the six low ones (0:
// unknown reason).
const (
	StatusUnknown   uint8 = 0
	StatusForwarded uint8 = 64
	StatusDropped   uint8 = 128
	StatusConsumed  uint8 = 192
	// StatusConsumedForUs is consumed, reason "terminate for us": a
	// consumed record whose destination the FIB says is local.
	StatusConsumedForUs uint8 = 195
)

// ConntrackMode says how Enrich reads conntrack for the post-NAT fields.
type ConntrackMode uint8

const (
	// ConntrackAuto picks, per Enrich call, the cheaper of ConntrackDump
	// and ConntrackGet from the number of flows and of conntrack entries
	// (nf_conntrack_count), and skips conntrack when it is empty.
	ConntrackAuto ConntrackMode = iota
	// ConntrackDump reads the whole table once per Enrich call: its cost
	// grows with the table (see BenchmarkConntrackDump).
	ConntrackDump
	// ConntrackGet asks for each flow's entry (IPCTNL_MSG_CT_GET): its
	// cost grows with the flows. ICMP flows get no post-NAT fields this
	// way (the kernel needs the echo id, which flows do not keep).
	ConntrackGet
	// ConntrackOff leaves the post-NAT fields empty.
	ConntrackOff
)

func (m ConntrackMode) String() string {
	switch m {
	case ConntrackAuto:
		return "auto"
	case ConntrackDump:
		return "dump"
	case ConntrackGet:
		return "get"
	case ConntrackOff:
		return "off"
	}
	return "unknown"
}

// Options configure an Enricher. The zero value enables everything.
type Options struct {
	// Conntrack selects how post-NAT fields are looked up.
	Conntrack ConntrackMode
	// NoFIB turns the route lookups off: no next hop, no 195, and in
	// the fallback no egress interface or forwarding status.
	NoFIB bool
	// Fates says the records carry the kernel's fates
	// (exporter.FlowKey.Fate, exporter.CacheConfig.Fates): their
	// forwarding status and egress interface are kept, and the FIB only
	// adds the next hop and tells what consumed records were (195 for
	// us, 64 forwarded out of an unwatched interface). False is the
	// fallback: the FIB at export time decides the status of ingress
	// records; with fates it still does for records of fate 0.
	Fates bool
	// Log receives warnings (a failing conntrack dump, a lost route
	// subscription); nil discards them.
	Log *slog.Logger
}

// Stats are an Enricher's counters since New.
type Stats struct {
	Enriched        uint64 // flows passed to Enrich
	RouteLookups    uint64 // RTM_GETROUTE requests (after the per-call cache)
	RouteErrors     uint64 // lookups that failed for another reason than a drop
	ConntrackDumps  uint64
	ConntrackGets   uint64 // IPCTNL_MSG_CT_GET requests
	ConntrackErrors uint64
	ConntrackFlows  uint64 // entries read by the last dump
	// RouteResyncs are full reloads of the route table: after a lost
	// subscription, and after a link went down or away or lost an IPv4
	// address (the kernel flushes IPv4 routes then without a notice).
	RouteResyncs uint64
}

// Enricher fills the router fields of exported flows. Create it with New in
// the network namespace to observe, Close it when done.
type Enricher struct {
	opts  Options
	log   *slog.Logger
	h     *netlink.Handle
	ns    netns.NsHandle
	table *Table

	ctGet   *ctGetter  // nil if ConntrackDump or ConntrackOff
	ctCount *ctCounter // nil if the count cannot be read

	mu sync.Mutex // serializes Enrich: it uses h and the scratch maps

	// Per-call scratch, reused.
	routes map[fibKey]fibResult
	nat    NATIndex
	noCT   map[Tuple]struct{} // tuples ConntrackGet found no entry for

	// resyncDelay is how long after a link or address event the table
	// is loaded again: the kernel flushes after it notifies, and events
	// that come together cost one dump.
	resyncDelay time.Duration

	done     chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.Once
	ctWarned atomic.Bool

	enriched, routeLookups, routeErrors, ctDumps, ctGets, ctErrors, ctFlows, resyncs atomic.Uint64
}

type fibKey struct {
	iif      uint32
	src, dst netip.Addr
}

type fibResult struct {
	status  uint8
	oif     uint32
	nextHop netip.Addr
}

// New returns an Enricher of the calling thread's network namespace: it
// opens its netlink sockets there, loads the main routing table and
// subscribes to its changes.
func New(opts Options) (*Enricher, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("router: current netns: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("router: netlink: %w", err)
	}
	if err := h.SetSocketTimeout(5 * time.Second); err != nil {
		h.Close()
		ns.Close()
		return nil, fmt.Errorf("router: netlink timeout: %w", err)
	}
	e := &Enricher{
		opts: opts, log: log, h: h, ns: ns, table: NewTable(),
		routes: map[fibKey]fibResult{}, nat: NATIndex{}, noCT: map[Tuple]struct{}{},
		resyncDelay: time.Second, done: make(chan struct{}),
	}
	if opts.Conntrack == ConntrackAuto || opts.Conntrack == ConntrackGet {
		if e.ctGet, err = newCTGetter(ns); err != nil {
			h.Close()
			ns.Close()
			return nil, fmt.Errorf("router: conntrack socket: %w", err)
		}
	}
	if opts.Conntrack == ConntrackAuto {
		e.ctCount = newCTCounter()
	}
	sub, err := e.subscribe()
	if err != nil {
		e.Close()
		return nil, err
	}
	if err := e.load(); err != nil {
		sub.close()
		e.Close()
		return nil, err
	}
	e.wg.Add(1)
	go e.watch(sub)
	return e, nil
}

// Close stops the route watcher and closes the sockets.
func (e *Enricher) Close() error {
	e.closeMu.Do(func() {
		close(e.done)
		e.wg.Wait()
		e.mu.Lock()
		e.h.Close()
		if e.ctGet != nil {
			e.ctGet.close()
		}
		e.ctCount.close()
		e.mu.Unlock()
		e.ns.Close()
	})
	return nil
}

// Table returns the enricher's copy of the main routing table.
func (e *Enricher) Table() *Table { return e.table }

// Stats returns the counters; safe to call concurrently with Enrich.
func (e *Enricher) Stats() Stats {
	return Stats{
		Enriched:        e.enriched.Load(),
		RouteLookups:    e.routeLookups.Load(),
		RouteErrors:     e.routeErrors.Load(),
		ConntrackDumps:  e.ctDumps.Load(),
		ConntrackGets:   e.ctGets.Load(),
		ConntrackErrors: e.ctErrors.Load(),
		ConntrackFlows:  e.ctFlows.Load(),
		RouteResyncs:    e.resyncs.Load(),
	}
}

// Enrich fills the router fields of flows, in place. Prefix lengths are
// filled for every flow; the FIB and NAT fields for ingress flows only
// (see the package doc): an egress flow's key is already past routing and
// NAT. Fields it cannot determine stay zero. Enrich is meant for one goroutine (the exporter's);
// concurrent calls are serialized.
func (e *Enricher) Enrich(flows []exporter.Flow) {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.routes)
	clear(e.nat)
	clear(e.noCT)
	e.enriched.Add(uint64(len(flows)))
	mode := e.conntrackMode(flows)
	if mode == ConntrackDump {
		e.loadConntrack(flows)
	}
	for i := range flows {
		f := &flows[i]
		k := &f.Key
		src, dst := k.Src, k.Dst
		if l, ok := e.table.Lookup(src); ok {
			f.SrcPrefixLen = uint8(l)
		}
		if l, ok := e.table.Lookup(dst); ok {
			f.DstPrefixLen = uint8(l)
		}
		if k.Direction != bpf.DirectionIngress {
			continue
		}
		route := dst
		if mode != ConntrackOff {
			if t, ok := e.postNAT(mode, Tuple{Proto: k.Proto, Src: src, Dst: dst, SrcPort: k.SrcPort, DstPort: k.DstPort}); ok {
				f.PostNATSrc, f.PostNATDst = t.Src, t.Dst
				if hasPorts(k.Proto) {
					f.PostNATSrcPort, f.PostNATDstPort = t.SrcPort, t.DstPort
				}
				// The kernel routes a packet after destination NAT
				// (DNAT, or the de-NAT of a masqueraded reply, both in
				// PREROUTING) and before source NAT (POSTROUTING).
				route = t.Dst
			}
		}
		if e.opts.NoFIB {
			continue
		}
		fk := fibKey{iif: k.IfIndex, src: src, dst: route}
		if !e.opts.Fates || k.Fate == exporter.FateArrival {
			r := e.fib(fk)
			f.ForwardingStatus, f.EgressIfIndex, f.NextHop = r.status, r.oif, r.nextHop
			continue
		}
		e.completeFate(f, fk)
	}
}

// completeFate adds to a record with a kernel fate what the FIB knows of
// it: the next hop of forwarded packets if the route leaves by the
// interface they left on, and what derived consumed packets were. Those
// are the packets no fate was counted for: delivered locally (195 when
// the FIB says the destination is local), or forwarded out of an
// interface hostflow does not watch, where no program counts them
// leaving: when the FIB says the destination is forwarded, the record is
// reported forwarded (64) with the route's egress interface and next
// hop, the best knowledge there is. Otherwise it stays consumed (192).
// Dropped records are not looked up.
func (e *Enricher) completeFate(f *exporter.Flow, k fibKey) {
	switch f.Key.Fate {
	case exporter.FateForwarded:
		if r := e.fib(k); r.status == StatusForwarded && r.oif != 0 && r.oif == f.EgressIfIndex {
			f.NextHop = r.nextHop
		}
	case exporter.FateConsumed:
		switch r := e.fib(k); r.status {
		case StatusConsumed:
			f.ForwardingStatus = StatusConsumedForUs
		case StatusForwarded:
			f.ForwardingStatus, f.EgressIfIndex, f.NextHop = StatusForwarded, r.oif, r.nextHop
		}
	}
}
