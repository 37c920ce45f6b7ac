// Package router adds, at export, what a host that routes did with each
// flow: hostflow in router mode counts every packet once, at ingress, and
// Enricher fills the exporter.Flow router fields from the kernel.
//
//   - EgressIfIndex, NextHop and ForwardingStatus come from the kernel FIB:
//     one RTM_GETROUTE per distinct (ingress interface, source,
//     destination) per Enrich call, with the ingress interface and source
//     address set, i.e. `ip route get DST from SRC iif IN`: the kernel
//     answers exactly what it does with such a packet, policy routing,
//     reverse-path filtering and local delivery included. The answer is
//     the route at export time: a flow whose route changed while it was
//     active is reported with the route it has when it is exported. Per
//     packet forwarding data would cost on the packet path; per flow at
//     export it costs nothing there and is exact unless the route changes
//     mid-flow. With an L4 multipath hash policy the path the kernel
//     picks for the lookup (which has no ports) can differ from the
//     flow's.
//   - SrcPrefixLen and DstPrefixLen are longest-prefix matches in an
//     in-memory copy of the main routing table (Table), kept current from
//     netlink route notifications.
//   - PostNATSrc/Dst and their ports come from conntrack (ingress flows
//     only: TC ingress sees packets before NAT), per Enrich call either
//     from one dump of the table indexed by both tuples of each entry
//     (NATIndex) or from one IPCTNL_MSG_CT_GET per flow, whichever the
//     table's size makes cheaper (ConntrackMode). The FIB lookup then uses the post-NAT destination, as the kernel routes
//     after destination NAT (DNAT, de-NAT of a masqueraded reply) and
//     before source NAT: a reply to a masqueraded connection, addressed
//     to the router, is reported forwarded to the client, not consumed.
//
// The NextHop of a connected route (no gateway) is the destination
// itself: the host the packet is handed to on the link. A flow that is
// not forwarded (dropped, consumed) has no egress interface or next hop.
// Multicast destinations are not looked up (ForwardingStatus 0).
//
// Everything happens in the network namespace of the thread that calls New:
// the netlink sockets (and the nf_conntrack_count file) are opened there
// and keep it, so Enrich may run on any thread.
package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// IANA forwardingStatus (element 89) values Enrich sets: the status in the
// two high bits, reason code 0 (unknown reason).
const (
	StatusUnknown   uint8 = 0
	StatusForwarded uint8 = 64
	StatusDropped   uint8 = 128
	StatusConsumed  uint8 = 192
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
	// NoFIB turns the egress interface, next hop and forwarding status
	// off: no route lookups.
	NoFIB bool
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

// subscription is the enricher's notification sockets: routes, and the
// link and address changes after which the kernel flushes IPv4 routes
// without a notice. They end together.
type subscription struct {
	done   chan struct{}
	once   sync.Once
	routes chan netlink.RouteUpdate
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
}

func (s *subscription) close() { s.once.Do(func() { close(s.done) }) }

// subscribe opens the notification sockets in the enricher's namespace.
func (e *Enricher) subscribe() (*subscription, error) {
	s := &subscription{
		done:   make(chan struct{}),
		routes: make(chan netlink.RouteUpdate, 4096),
		links:  make(chan netlink.LinkUpdate, 256),
		addrs:  make(chan netlink.AddrUpdate, 256),
	}
	onError := func(what string) func(error) {
		return func(err error) {
			select {
			case <-s.done: // closed by close
			default:
				e.log.Warn("router: "+what+" subscription failed; reloading the table", "err", err)
			}
		}
	}
	err := netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{
		Namespace:         &e.ns,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback:     onError("route"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: route subscribe: %w", err)
	}
	err = netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
		Namespace:     &e.ns,
		ErrorCallback: onError("link"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: link subscribe: %w", err)
	}
	err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
		Namespace:     &e.ns,
		ErrorCallback: onError("address"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: address subscribe: %w", err)
	}
	return s, nil
}

// load replaces the table with a fresh dump of the main table. Called
// after subscribing, so no change between the dump and the notifications
// is missed: a notification of a route already in the dump is idempotent.
func (e *Enricher) load() error {
	var all []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := e.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 3; try++ {
			// The table changed during the dump: dump again.
			rs, err = e.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		}
		if err != nil {
			return fmt.Errorf("router: list routes: %w", err)
		}
		for i := range rs {
			rs[i].Family = fam
		}
		all = append(all, rs...)
	}
	fresh := NewTable()
	for i := range all {
		applyRoute(fresh, unix.RTM_NEWROUTE, 0, &all[i])
	}
	e.table.swap(fresh)
	return nil
}

// watch applies route notifications until Close. A link that goes down or
// away has its IPv4 routes removed at once, and a link or address change
// after which the kernel may have flushed routes silently loads the table
// again a little later. When a subscription dies (e.g. its socket
// overflowed), it subscribes again and reloads.
func (e *Enricher) watch(sub *subscription) {
	defer e.wg.Done()
	resync := time.NewTimer(time.Hour)
	resync.Stop()
	pending := false
	later := func() {
		if !pending {
			pending = true
			resync.Reset(e.resyncDelay)
		}
	}
	for {
		var ok bool
		select {
		case <-e.done:
			sub.close()
			return
		case u, open := <-sub.routes:
			if ok = open; ok {
				e.apply(u.Type, u.NlFlags, &u.Route)
			}
		case u, open := <-sub.links:
			if ok = open; ok && e.linkGone(u) {
				later()
			}
		case u, open := <-sub.addrs:
			if ok = open; ok && !u.NewAddr && u.LinkAddress.IP.To4() != nil {
				later() // routes with this source or through a link left without IPv4
			}
		case <-resync.C:
			pending, ok = false, true
			e.mu.Lock()
			err := e.load()
			e.mu.Unlock()
			if err != nil {
				e.log.Warn("router: route table resync failed", "err", err)
				later()
			} else {
				e.resyncs.Add(1)
			}
		}
		if !ok {
			if sub = e.resubscribe(sub); sub == nil {
				return
			}
		}
	}
}

// linkGone removes the IPv4 routes through a link that went down or away,
// and reports whether there were any.
func (e *Enricher) linkGone(u netlink.LinkUpdate) bool {
	if u.Header.Type != unix.RTM_DELLINK && u.IfInfomsg.Flags&unix.IFF_UP != 0 {
		return false
	}
	return e.table.RemoveLink(int(u.IfInfomsg.Index)) > 0
}

// resubscribe replaces a dead subscription and loads the table again,
// retrying every second; nil after Close.
func (e *Enricher) resubscribe(old *subscription) *subscription {
	old.close()
	for {
		select {
		case <-e.done:
			return nil
		case <-time.After(time.Second):
		}
		sub, err := e.subscribe()
		if err == nil {
			e.mu.Lock()
			err = e.load()
			e.mu.Unlock()
			if err == nil {
				e.resyncs.Add(1)
				return sub
			}
			sub.close()
		}
		e.log.Warn("router: route table resync failed", "err", err)
	}
}

// apply applies one route add or delete of the main table to the LPM
// table.
func (e *Enricher) apply(typ, flags uint16, r *netlink.Route) {
	applyRoute(e.table, typ, flags, r)
}

func applyRoute(t *Table, typ, flags uint16, r *netlink.Route) {
	if r.Table != unix.RT_TABLE_MAIN {
		return
	}
	p, ok := routePrefix(r)
	if !ok {
		return
	}
	k := RouteKey{TOS: uint8(r.Tos), Priority: r.Priority, Gateway: ipAddr(r.Gw), LinkIdx: r.LinkIndex}
	switch {
	case typ == unix.RTM_DELROUTE:
		t.Remove(p, k)
	case flags&unix.NLM_F_REPLACE != 0:
		t.Replace(p, k)
	default:
		t.Add(p, k)
	}
}

// routePrefix is the destination prefix of r: a nil Dst is the default
// route of r's family.
func routePrefix(r *netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		switch r.Family {
		case netlink.FAMILY_V4:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		case netlink.FAMILY_V6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.Prefix{}, false
	}
	a := ipAddr(r.Dst.IP)
	ones, bits := r.Dst.Mask.Size()
	if !a.IsValid() || bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

// Enrich fills the router fields of flows, in place. Prefix lengths are
// filled for every flow; the FIB and NAT fields for ingress flows only:
// an egress flow's key is already past routing and NAT. Fields it cannot
// determine stay zero. Enrich is meant for one goroutine (the exporter's);
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
		if !e.opts.NoFIB {
			r := e.fib(fibKey{iif: k.IfIndex, src: src, dst: route})
			f.ForwardingStatus, f.EgressIfIndex, f.NextHop = r.status, r.oif, r.nextHop
		}
	}
}

// Cost model of ConntrackAuto, in units of one dumped entry (6-7 µs on
// the 2-CPU test VM, parsing included): a dump costs a fixed part (the
// kernel walks every bucket of the conntrack hash table, which all
// namespaces share: about 10 ms there) plus one unit per entry; a get
// costs about 17 µs, between two and three units (BenchmarkConntrackDump,
// BenchmarkConntrackGet).
const (
	dumpFixedUnits = 1500
	getUnits       = 3
)

// conntrackMode decides how this Enrich call reads conntrack.
func (e *Enricher) conntrackMode(flows []exporter.Flow) ConntrackMode {
	if e.opts.Conntrack != ConntrackAuto {
		return e.opts.Conntrack
	}
	n := e.ctCount.count()
	if n == 0 {
		return ConntrackOff // nothing tracked in this namespace
	}
	if n < 0 {
		return ConntrackDump // unknown size: one dump is bounded
	}
	ingress := 0
	for i := range flows {
		if flows[i].Key.Direction == bpf.DirectionIngress {
			ingress++
		}
	}
	if getUnits*ingress < dumpFixedUnits+n {
		return ConntrackGet
	}
	return ConntrackDump
}

// postNAT returns the post-NAT tuple of a packet with tuple t, from the
// dump index or, in ConntrackGet mode, from a get (cached for the call).
func (e *Enricher) postNAT(mode ConntrackMode, t Tuple) (Tuple, bool) {
	if r, ok := e.nat.Lookup(t); ok || mode != ConntrackGet {
		return r, ok
	}
	key := normalTuple(t)
	if _, miss := e.noCT[key]; miss || !hasPorts(t.Proto) {
		return Tuple{}, false
	}
	e.ctGets.Add(1)
	orig, reply, ok, err := e.ctGet.get(key)
	if err != nil {
		e.ctErrors.Add(1)
		if !e.ctWarned.Swap(true) {
			e.log.Warn("router: conntrack get failed; post-NAT fields stay empty", "err", err)
		}
	}
	if !ok {
		e.noCT[key] = struct{}{}
		return Tuple{}, false
	}
	e.nat.Add(orig, reply)
	return e.nat.Lookup(t)
}

// loadConntrack dumps conntrack for the families of the ingress flows into
// e.nat.
func (e *Enricher) loadConntrack(flows []exporter.Flow) {
	var v4, v6 bool
	for i := range flows {
		if flows[i].Key.Direction != bpf.DirectionIngress {
			continue
		}
		if flows[i].Key.IsIPv4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	n := 0
	for _, fam := range []struct {
		want bool
		f    netlink.InetFamily
	}{{v4, netlink.FAMILY_V4}, {v6, netlink.FAMILY_V6}} {
		if !fam.want {
			continue
		}
		cts, err := e.h.ConntrackTableList(netlink.ConntrackTable, fam.f)
		e.ctDumps.Add(1)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// The table changed during the dump: what was read is
			// still right, some entries may be missing.
			err = nil
		}
		if err != nil {
			e.ctErrors.Add(1)
			if !e.ctWarned.Swap(true) {
				e.log.Warn("router: conntrack dump failed; post-NAT fields stay empty", "err", err)
			}
			continue
		}
		indexFlows(e.nat, cts)
		n += len(cts)
	}
	e.ctFlows.Store(uint64(n))
}

// fib returns the kernel's forwarding decision for k, once per Enrich
// call.
func (e *Enricher) fib(k fibKey) fibResult {
	if r, ok := e.routes[k]; ok {
		return r
	}
	r := e.lookup(k)
	e.routes[k] = r
	return r
}

func (e *Enricher) lookup(k fibKey) fibResult {
	if !k.src.IsValid() || !k.dst.IsValid() || k.iif == 0 || k.iif == bpf.InterfaceUnset {
		return fibResult{}
	}
	if k.dst.IsMulticast() {
		// Multicast forwarding is the multicast routing daemon's
		// (MFC), which a unicast route get does not answer (IPv6
		// answers EMSGSIZE): not told.
		return fibResult{}
	}
	e.routeLookups.Add(1)
	rs, err := e.h.RouteGetWithOptions(net.IP(k.dst.AsSlice()), &netlink.RouteGetOptions{
		IifIndex: int(k.iif),
		SrcAddr:  net.IP(k.src.AsSlice()),
	})
	if err != nil {
		if st, ok := statusOfError(err); ok {
			return fibResult{status: st}
		}
		e.routeErrors.Add(1)
		e.log.Debug("router: route lookup failed", "iif", k.iif, "src", k.src, "dst", k.dst, "err", err)
		return fibResult{}
	}
	if len(rs) == 0 {
		e.routeErrors.Add(1)
		return fibResult{}
	}
	return resultOf(&rs[0], k.dst)
}

// resultOf turns the kernel's answer to a route get into the flow's
// forwarding fields. The next hop of a connected route (no gateway) is
// the destination itself: the host the packet is handed to on the link.
func resultOf(r *netlink.Route, dst netip.Addr) fibResult {
	switch r.Type {
	case unix.RTN_UNICAST:
		nh := ipAddr(r.Gw)
		if !nh.IsValid() || nh.IsUnspecified() {
			nh = dst
		}
		return fibResult{status: StatusForwarded, oif: uint32(r.LinkIndex), nextHop: nh}
	case unix.RTN_LOCAL, unix.RTN_BROADCAST:
		return fibResult{status: StatusConsumed}
	case unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_THROW:
		// IPv6 answers a route get on these with the route; IPv4 with
		// an error (statusOfError).
		return fibResult{status: StatusDropped}
	}
	// Multicast, NAT, anycast: not told.
	return fibResult{}
}

// statusOfError maps the errors the kernel answers a route get with for a
// packet it would drop: no route (ENETUNREACH), unreachable route
// (EHOSTUNREACH), blackhole (EINVAL), prohibit (EACCES, EPERM), and a
// source that fails reverse-path filtering (EXDEV).
func statusOfError(err error) (uint8, bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return 0, false
	}
	switch errno {
	case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EINVAL, unix.EACCES, unix.EPERM, unix.EXDEV:
		return StatusDropped, true
	}
	return 0, false
}
