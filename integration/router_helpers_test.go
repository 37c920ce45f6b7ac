package integration

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/router"
)

// Router mode: client ⇄ router ⇄ server, hostflow's programs on the
// router's two interfaces at ingress only, a drain → Cache → Enricher loop
// in the test.
//
//	client cr0 198.18.10.2/24 fd00:10::2/64 ── rc0 198.18.10.1 fd00:10::1  (router)
//	(router) rs0 198.19.20.1/25 fd00:20::1/80 ── sr0 198.19.20.2 fd00:20::2 server
//
// The router also routes 198.19.21.0/26 and fd00:21::/96 via the server
// (which has 198.19.21.1 and fd00:21::1 on lo): a gateway route, where the
// next hop is the gateway, not the destination. It has no default route,
// a blackhole route 198.19.98.0/24 and an unreachable route fd00:99::/64.
type routerLab struct {
	client, rtr, server *namespace
	rc, rs              int // router's ifindexes: client side, server side
	fetcher             *bpf.FlowFetcher
	enricher            *router.Enricher
}

const (
	clientV4, routerCV4, routerSV4, serverV4 = "198.18.10.2", "198.18.10.1", "198.19.20.1", "198.19.20.2"
	clientV6, routerCV6, routerSV6, serverV6 = "fd00:10::2", "fd00:10::1", "fd00:20::1", "fd00:20::2"
	farV4, farV6                             = "198.19.21.1", "fd00:21::1" // behind the server, via gateway
)

// link joins a and b by a veth pair with the given addresses, offloads
// off and permanent neighbour entries (no ARP or ND crosses it).
func link(t *testing.T, a, b *namespace, devA, devB, a4, b4 string, len4 int, a6, b6 string, len6 int) {
	t.Helper()
	sh(t, "ip", "link", "add", devA, "netns", a.name, "type", "veth", "peer", "name", devB, "netns", b.name)
	for _, s := range []struct {
		ns             *namespace
		dev, four, six string
	}{{a, devA, a4, a6}, {b, devB, b4, b6}} {
		s.ns.run(t, "sysctl", "-qw", "net.ipv6.conf."+s.dev+".accept_dad=0", "net.ipv6.conf."+s.dev+".router_solicitations=0")
		s.ns.run(t, "ethtool", "-K", s.dev, "tso", "off", "gso", "off", "gro", "off")
		s.ns.run(t, "ip", "addr", "add", s.four+"/"+strconv.Itoa(len4), "dev", s.dev)
		s.ns.run(t, "ip", "addr", "add", s.six+"/"+strconv.Itoa(len6), "dev", s.dev, "nodad")
		s.ns.run(t, "ip", "link", "set", s.dev, "up")
	}
	ma, mb := mac(t, a, devA), mac(t, b, devB)
	for _, n := range []struct {
		ns             *namespace
		dev, addr, mac string
	}{{a, devA, b4, mb}, {a, devA, b6, mb}, {b, devB, a4, ma}, {b, devB, a6, ma}} {
		n.ns.run(t, "ip", "neigh", "replace", n.addr, "lladdr", n.mac, "dev", n.dev, "nud", "permanent")
	}
}

// newRouterNet builds the three namespaces, their links and routes.
func newRouterNet(t *testing.T) *routerLab {
	t.Helper()
	requireRoot(t, "ip", "ethtool", "ping", "sysctl", "nft")
	l := &routerLab{
		client: newNamespace(t, "hf-rt-c"),
		rtr:    newNamespace(t, "hf-rt-r"),
		server: newNamespace(t, "hf-rt-s"),
	}
	for _, ns := range []*namespace{l.client, l.rtr, l.server} {
		// No MLD reports or router solicitations on new links.
		ns.run(t, "sysctl", "-qw", "net.ipv6.conf.default.router_solicitations=0", "net.ipv6.conf.all.router_solicitations=0")
	}
	l.rtr.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	link(t, l.client, l.rtr, "cr0", "rc0", clientV4, routerCV4, 24, clientV6, routerCV6, 64)
	link(t, l.rtr, l.server, "rs0", "sr0", routerSV4, serverV4, 25, routerSV6, serverV6, 80)
	l.client.run(t, "ip", "route", "add", "default", "via", routerCV4)
	l.client.run(t, "ip", "-6", "route", "add", "default", "via", routerCV6)
	l.server.run(t, "ip", "route", "add", "default", "via", routerSV4)
	l.server.run(t, "ip", "-6", "route", "add", "default", "via", routerSV6)
	l.server.run(t, "ip", "addr", "add", farV4+"/32", "dev", "lo")
	l.server.run(t, "ip", "addr", "add", farV6+"/128", "dev", "lo")
	l.rtr.run(t, "ip", "route", "add", "198.19.21.0/26", "via", serverV4)
	l.rtr.run(t, "ip", "-6", "route", "add", "fd00:21::/96", "via", serverV6)
	l.rtr.run(t, "ip", "route", "add", "blackhole", "198.19.98.0/24")
	l.rtr.run(t, "ip", "-6", "route", "add", "unreachable", "fd00:99::/64")
	l.rc, l.rs = ifindex(t, l.rtr, "rc0"), ifindex(t, l.rtr, "rs0")
	return l
}

// newRouterLab is newRouterNet with a fetcher on the router's interfaces
// and an enricher in its namespace, for tests that run the pipeline
// themselves.
func newRouterLab(t *testing.T) *routerLab {
	t.Helper()
	l := newRouterNet(t)

	// Ingress only: each forwarded packet is counted once, where it
	// enters the router.
	f, err := bpf.NewFetcher(bpf.FetcherOptions{KernelMapSize: 4096, Ingress: true})
	if err != nil {
		t.Fatalf("NewFetcher: %v", err)
	}
	l.fetcher = f
	t.Cleanup(func() {
		l.rtr.do(t, f.Close)
	})
	l.rtr.do(t, func() error {
		if err := f.Attach(l.rc, "rc0"); err != nil {
			return err
		}
		return f.Attach(l.rs, "rs0")
	})
	l.rtr.do(t, func() (err error) {
		l.enricher, err = router.New(router.Options{Log: slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		return err
	})
	t.Cleanup(func() { l.enricher.Close() })
	return l
}

// settle waits until both router interfaces are quiet, drains the
// kernel's flows into c, and repeats until no packet arrived during the
// drain: then the flows drained so far are exactly the packets counted by
// the returned interface counters.
func (l *routerLab) settle(t *testing.T, c *exporter.Cache) (rc, rs linkStats) {
	t.Helper()
	for range 20 {
		rc = l.rtr.waitQuiet(t, "rc0", 500*time.Millisecond, 20*time.Second)
		rs = l.rtr.waitQuiet(t, "rs0", 500*time.Millisecond, 20*time.Second)
		if err := l.fetcher.Drain(c.Add); err != nil {
			t.Fatalf("drain: %v", err)
		}
		if l.rtr.stats(t, "rc0") == rc && l.rtr.stats(t, "rs0") == rs {
			return rc, rs
		}
	}
	t.Fatal("router interfaces never settled")
	return
}

func newTestCache(t *testing.T) *exporter.Cache {
	t.Helper()
	c, err := exporter.NewCache(exporter.CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: 4096}, exporter.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// collect settles the interfaces, drains the kernel's flows into a fresh
// cache, flushes it and enriches the records in the router's namespace:
// what the daemon's export loop does in router mode, with every flow
// ending now.
func (l *routerLab) collect(t *testing.T) (flows []exporter.Flow, rc, rs linkStats) {
	t.Helper()
	c := newTestCache(t)
	rc, rs = l.settle(t, c)
	flows = c.Flush(nil)
	l.rtr.do(t, func() error {
		l.enricher.Enrich(flows)
		return nil
	})
	return flows, rc, rs
}

// find returns the flows of protocol proto from src to dst (ports 0 match
// any port; icmpType -1 any type).
func find(flows []exporter.Flow, proto uint8, src string, sport uint16, dst string, dport uint16, icmpType int) []exporter.Flow {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var out []exporter.Flow
	for _, f := range flows {
		k := f.Key
		if k.Proto != proto || k.Src != s || k.Dst != d ||
			(sport != 0 && k.SrcPort != sport) || (dport != 0 && k.DstPort != dport) ||
			(icmpType >= 0 && int(k.ICMPType) != icmpType) {
			continue
		}
		out = append(out, f)
	}
	return out
}

func flowString(f exporter.Flow) string {
	return fmt.Sprintf("%v pkts %d bytes %d out %d nh %v fwd %d masks %d/%d nat %v:%d -> %v:%d",
		f.Key, f.Packets, f.Bytes, f.EgressIfIndex, f.NextHop, f.ForwardingStatus, f.SrcPrefixLen, f.DstPrefixLen,
		f.PostNATSrc, f.PostNATSrcPort, f.PostNATDst, f.PostNATDstPort)
}

// one returns the single flow matching, failing if there is not exactly
// one.
func one(t *testing.T, flows []exporter.Flow, what string, proto uint8, src string, sport uint16, dst string, dport uint16, icmpType int) exporter.Flow {
	t.Helper()
	got := find(flows, proto, src, sport, dst, dport, icmpType)
	if len(got) != 1 {
		for _, f := range flows {
			t.Log(flowString(f))
		}
		t.Fatalf("%s: %d flows, want exactly 1", what, len(got))
	}
	return got[0]
}

// wantRoute is what a forwarded flow must carry.
type wantRoute struct {
	in, out        int
	nextHop        string
	srcLen, dstLen uint8
	status         uint8
	packets, bytes uint64 // 0: not checked (TCP)
}

func checkFlow(t *testing.T, what string, f exporter.Flow, w wantRoute) {
	t.Helper()
	var nh netip.Addr
	if w.nextHop != "" {
		nh = netip.MustParseAddr(w.nextHop)
	}
	if f.Key.Direction != bpf.DirectionIngress || int(f.Key.IfIndex) != w.in || int(f.EgressIfIndex) != w.out ||
		f.NextHop != nh || f.SrcPrefixLen != w.srcLen || f.DstPrefixLen != w.dstLen || f.ForwardingStatus != w.status ||
		(w.packets != 0 && (f.Packets != w.packets || f.Bytes != w.bytes)) {
		t.Errorf("%s: %s\nwant in %d out %d nh %v fwd %d masks %d/%d pkts %d bytes %d",
			what, flowString(f), w.in, w.out, nh, w.status, w.srcLen, w.dstLen, w.packets, w.bytes)
	}
}

// checkTotals requires the flows of each router interface to add up to
// what the interface received: every packet counted, none twice.
func checkTotals(t *testing.T, flows []exporter.Flow, l *routerLab, rc0, rc1, rs0, rs1 linkStats) {
	t.Helper()
	for _, side := range []struct {
		name          string
		idx           int
		before, after linkStats
	}{{"rc0", l.rc, rc0, rc1}, {"rs0", l.rs, rs0, rs1}} {
		var pk, by uint64
		for _, f := range flows {
			if int(f.Key.IfIndex) == side.idx {
				pk += f.Packets
				by += f.Bytes
			}
		}
		rxPk, rxBy := side.after.RxPackets-side.before.RxPackets, side.after.RxBytes-side.before.RxBytes
		// Flows count IP bytes; the veth counters include the 14-byte
		// Ethernet header.
		if pk != rxPk || by != rxBy-14*rxPk {
			t.Errorf("%s: flows have %d packets %d bytes, the interface received %d packets %d IP bytes", side.name, pk, by, rxPk, rxBy-14*rxPk)
		}
	}
	for _, f := range flows {
		if f.Key.Direction != bpf.DirectionIngress {
			t.Errorf("egress flow with ingress-only hooks: %s", flowString(f))
		}
	}
}

// tLogWriter sends a logger's lines to the test log.
type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
