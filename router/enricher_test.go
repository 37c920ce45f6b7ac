package router

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/testutil"
)

// lab is a namespace with an interface hfd0 (198.18.0.1/15,
// fd00:1::1/64), forwarding on, and an Enricher made inside it.
type lab struct {
	ns      *testutil.Netns
	ifindex uint32
	e       *Enricher
}

func newLab(tb testing.TB, opts Options) *lab {
	tb.Helper()
	ns := testutil.NewNetns(tb) // skips without privileges, fails under CI=true
	// A veth pair inside the namespace: the dummy driver is not always
	// there.
	ns.IP(tb, "link", "add", "hfd0", "type", "veth", "peer", "name", "hfd1")
	ns.IP(tb, "link", "set", "hfd1", "up")
	ns.IP(tb, "addr", "add", "198.18.0.1/15", "dev", "hfd0")
	ns.IP(tb, "addr", "add", "fd00:1::1/64", "dev", "hfd0", "nodad")
	ns.IP(tb, "link", "set", "hfd0", "up")
	l := &lab{ns: ns}
	err := ns.Do(func() error {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		lk, err := netlink.LinkByName("hfd0")
		if err != nil {
			return err
		}
		l.ifindex = uint32(lk.Attrs().Index)
		l.e, err = New(opts)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.e.Close() })
	return l
}

// enrich runs the lab's Enricher on flows inside its namespace.
func (l *lab) enrich(t *testing.T, flows []exporter.Flow) {
	t.Helper()
	if err := l.ns.Do(func() error { l.e.Enrich(flows); return nil }); err != nil {
		t.Fatal(err)
	}
}

// addrOrZero parses s, the zero Addr for "".
func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func ingress(ifindex uint32, proto uint8, src string, sport uint16, dst string, dport uint16) exporter.Flow {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	k := bpf.NetFlowId{SrcIp: s.As16(), DstIp: d.As16(), SrcPort: sport, DstPort: dport,
		TransportProtocol: proto, IfIndex: ifindex, Direction: bpf.DirectionIngress, EthProtocol: 0x86dd}
	if s.Is4() {
		k.EthProtocol = 0x0800
	}
	return exporter.Flow{Key: exporter.KeyOf(k), Packets: 1, Bytes: 100}
}

// TestEnricherRouteUpdates: the prefix lengths follow route changes made
// after New, through the route subscription.
func TestEnricherRouteUpdates(t *testing.T) {
	l := newLab(t, Options{Conntrack: ConntrackOff})
	dst := netip.MustParseAddr("198.19.20.5")
	waitLen := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, ok := l.e.Table().Lookup(dst)
			if !ok {
				got = -1
			}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("prefix length of %v: %d, want %d", dst, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLen(15) // the connected route, loaded by New
	l.ns.IP(t, "route", "add", "198.19.20.0/25", "via", "198.18.0.2")
	waitLen(25)
	l.ns.IP(t, "route", "add", "198.19.20.0/25", "via", "198.18.0.3", "metric", "10")
	l.ns.IP(t, "route", "del", "198.19.20.0/25", "via", "198.18.0.2")
	waitLen(25) // the metric 10 route keeps the prefix
	l.ns.IP(t, "route", "replace", "198.19.20.0/25", "via", "198.18.0.4", "metric", "10")
	l.ns.IP(t, "route", "del", "198.19.20.0/25", "metric", "10")
	waitLen(15)
	l.ns.IP(t, "route", "add", "default", "via", "198.18.0.2")
	l.ns.IP(t, "route", "del", "198.18.0.0/15", "dev", "hfd0")
	waitLen(0)
	// Other tables are not the main table.
	l.ns.IP(t, "route", "add", "198.19.20.0/24", "dev", "hfd0", "table", "100")
	time.Sleep(100 * time.Millisecond)
	waitLen(0)

	flows := []exporter.Flow{ingress(l.ifindex, 17, "198.18.0.9", 1, "198.19.20.5", 2)}
	flows[0].Key.Direction = bpf.DirectionEgress
	l.e.Enrich(flows)
	if f := flows[0]; f.DstPrefixLen != 0 || f.SrcPrefixLen != 0 || f.ForwardingStatus != 0 || f.EgressIfIndex != 0 {
		t.Errorf("egress flow: %+v", f)
	}
}

// TestEnricherFIB checks the forwarding fields against a few routes, from
// the Enricher alone (no traffic): forwarded on a connected route and
// through a gateway, dropped by blackhole, unreachable, prohibit and by
// lack of a route, consumed by a local address.
func TestEnricherFIB(t *testing.T) {
	l := newLab(t, Options{Conntrack: ConntrackOff})
	l.ns.IP(t, "route", "add", "203.0.113.0/26", "via", "198.18.0.2")
	l.ns.IP(t, "route", "add", "blackhole", "192.0.2.0/24")
	l.ns.IP(t, "route", "add", "prohibit", "198.51.100.0/25")
	l.ns.IP(t, "-6", "route", "add", "fd00:2::/96", "via", "fd00:1::2")
	l.ns.IP(t, "-6", "route", "add", "unreachable", "fd00:3::/48")
	l.ns.IP(t, "-6", "route", "add", "blackhole", "fd00:4::/56")
	idx := l.ifindex
	tests := []struct {
		name     string
		src, dst string
		status   uint8
		out      uint32
		nh       string
		dstLen   uint8
	}{
		{"connected", "198.18.0.9", "198.19.1.1", StatusForwarded, idx, "198.19.1.1", 15},
		{"gateway", "198.18.0.9", "203.0.113.7", StatusForwarded, idx, "198.18.0.2", 26},
		{"blackhole", "198.18.0.9", "192.0.2.1", StatusDropped, 0, "", 24},
		{"prohibit", "198.18.0.9", "198.51.100.1", StatusDropped, 0, "", 25},
		{"no route", "198.18.0.9", "100.64.0.1", StatusDropped, 0, "", 0},
		{"local", "198.18.0.9", "198.18.0.1", StatusConsumed, 0, "", 15},
		{"v6 connected", "fd00:1::9", "fd00:1::7", StatusForwarded, idx, "fd00:1::7", 64},
		{"v6 gateway", "fd00:1::9", "fd00:2::7", StatusForwarded, idx, "fd00:1::2", 96},
		{"v6 unreachable", "fd00:1::9", "fd00:3::7", StatusDropped, 0, "", 48},
		{"v6 blackhole", "fd00:1::9", "fd00:4::7", StatusDropped, 0, "", 56},
		{"v6 no route", "fd00:1::9", "2001:db8::1", StatusDropped, 0, "", 0},
		{"v6 local", "fd00:1::9", "fd00:1::1", StatusConsumed, 0, "", 64},
	}
	var flows []exporter.Flow
	for _, tt := range tests {
		flows = append(flows, ingress(idx, 17, tt.src, 1000, tt.dst, 53))
	}
	// Wait for the routes added after New to reach the table.
	deadline := time.Now().Add(5 * time.Second)
	for l.e.Table().Len() < 9 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	l.enrich(t, flows)
	for i, tt := range tests {
		f := flows[i]
		nh := addrOrZero(tt.nh)
		if f.ForwardingStatus != tt.status || f.EgressIfIndex != tt.out || f.NextHop != nh || f.DstPrefixLen != tt.dstLen {
			t.Errorf("%s: status %d out %d nh %v dst len %d; want %d %d %v %d", tt.name,
				f.ForwardingStatus, f.EgressIfIndex, f.NextHop, f.DstPrefixLen, tt.status, tt.out, nh, tt.dstLen)
		}
	}
	if st := l.e.Stats(); st.RouteErrors != 0 || st.RouteLookups != uint64(len(tests)) {
		t.Errorf("stats %+v", st)
	}
}

// TestEnricherFates: with kernel fates the records keep the kernel's
// status and egress interface; the FIB adds the next hop only when its
// egress interface is the kernel's, and tells what consumed packets (no
// fate counted) were: for us (195), forwarded out of an interface no
// program watches (64, with the route's egress and next hop), or neither
// (192). Dropped records get nothing from it; arrivals (fate 0: the cache
// could not match them with fates) get the fallback's status.
func TestEnricherFates(t *testing.T) {
	l := newLab(t, Options{Conntrack: ConntrackOff, Fates: true})
	l.ns.IP(t, "route", "add", "203.0.113.0/26", "via", "198.18.0.2")
	l.ns.IP(t, "-6", "route", "add", "fd00:2::/96", "via", "fd00:1::2")
	idx := l.ifindex
	tests := []struct {
		name     string
		src, dst string
		fate     uint8
		kernOut  uint32 // the egress interface the kernel reported
		status   uint8
		out      uint32
		nh       string
	}{
		{"forwarded", "198.18.0.9", "203.0.113.7", exporter.FateForwarded, idx, StatusForwarded, idx, "198.18.0.2"},
		{"forwarded elsewhere", "198.18.0.10", "203.0.113.7", exporter.FateForwarded, idx + 100, StatusForwarded, idx + 100, ""},
		{"dropped unroutable", "198.18.0.9", "100.64.0.1", 131, 0, 131, 0, ""},
		{"dropped routable", "198.18.0.11", "203.0.113.7", 129, 0, 129, 0, ""},
		{"consumed for us", "198.18.0.9", "198.18.0.1", exporter.FateConsumed, 0, StatusConsumedForUs, 0, ""},
		{"consumed, forwarded unwatched", "198.18.0.12", "203.0.113.7", exporter.FateConsumed, 0, StatusForwarded, idx, "198.18.0.2"},
		{"consumed unroutable", "198.18.0.14", "100.64.0.1", exporter.FateConsumed, 0, StatusConsumed, 0, ""},
		{"arrival", "198.18.0.13", "203.0.113.7", exporter.FateArrival, 0, StatusForwarded, idx, "198.18.0.2"},
		{"arrival for us", "198.18.0.13", "198.18.0.1", exporter.FateArrival, 0, StatusConsumed, 0, ""},
		{"arrival unroutable", "198.18.0.13", "100.64.0.1", exporter.FateArrival, 0, StatusDropped, 0, ""},
		{"v6 forwarded", "fd00:1::9", "fd00:2::7", exporter.FateForwarded, idx, StatusForwarded, idx, "fd00:1::2"},
		{"v6 consumed for us", "fd00:1::9", "fd00:1::1", exporter.FateConsumed, 0, StatusConsumedForUs, 0, ""},
	}
	var flows []exporter.Flow
	for _, tt := range tests {
		f := ingress(idx, 17, tt.src, 1000, tt.dst, 53)
		f.Key.Fate, f.ForwardingStatus, f.EgressIfIndex = tt.fate, tt.fate, tt.kernOut
		flows = append(flows, f)
	}
	// The FIB lookups ask the kernel: no need to wait for the table.
	l.enrich(t, flows)
	for i, tt := range tests {
		f := flows[i]
		nh := addrOrZero(tt.nh)
		if f.ForwardingStatus != tt.status || f.EgressIfIndex != tt.out || f.NextHop != nh {
			t.Errorf("%s: status %d out %d nh %v; want %d %d %v", tt.name,
				f.ForwardingStatus, f.EgressIfIndex, f.NextHop, tt.status, tt.out, nh)
		}
	}
	// Forwarded, consumed and arrival records only.
	if st := l.e.Stats(); st.RouteErrors != 0 || st.RouteLookups != 10 {
		t.Errorf("stats %+v, want 10 route lookups", st)
	}
}

// addConntrack creates n UDP conntrack entries in the lab's namespace,
// half of them masqueraded.
func addConntrack(tb testing.TB, l *lab, n int) {
	tb.Helper()
	err := l.ns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		for i := range n {
			// 4-byte addresses: the library sends the slice as is.
			src := net.IPv4(198, 18, byte(i>>8), byte(i)).To4()
			dst := net.IPv4(198, 19, byte(i>>8), byte(i)).To4()
			replyDst := src
			if i%2 == 1 {
				replyDst = net.IPv4(198, 19, 255, 254).To4() // masqueraded
			}
			f := &netlink.ConntrackFlow{
				FamilyType: netlink.FAMILY_V4,
				Forward:    netlink.IPTuple{Protocol: 17, SrcIP: src, DstIP: dst, SrcPort: 1000, DstPort: 53},
				Reverse:    netlink.IPTuple{Protocol: 17, SrcIP: dst, DstIP: replyDst, SrcPort: 53, DstPort: uint16(1000 + i%2)},
				TimeOut:    600,
			}
			if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
				return fmt.Errorf("conntrack create %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		testutil.SkipOrFail(tb, "cannot create conntrack entries (nf_conntrack): %v", err)
	}
}

// TestEnricherConntrack: post-NAT fields from entries created over
// netlink, read by dump, by get and by the automatic choice.
func TestEnricherConntrack(t *testing.T) {
	for _, mode := range []ConntrackMode{ConntrackDump, ConntrackGet, ConntrackAuto} {
		t.Run(fmt.Sprint("mode=", mode), func(t *testing.T) {
			l := newLab(t, Options{Conntrack: mode})
			flows := []exporter.Flow{
				ingress(l.ifindex, 17, "198.18.0.0", 1000, "198.19.0.0", 53),     // not translated
				ingress(l.ifindex, 17, "198.18.0.1", 1000, "198.19.0.1", 53),     // masqueraded
				ingress(l.ifindex, 17, "198.19.0.1", 53, "198.19.255.254", 1001), // its reply
				ingress(l.ifindex, 17, "198.18.0.9", 1000, "198.19.0.9", 53),     // no entry
				ingress(l.ifindex, 17, "198.18.0.9", 1000, "198.19.0.9", 53),     // again: cached
			}
			l.e.Enrich(flows) // empty conntrack
			for i, f := range flows {
				if f.PostNATSrc.IsValid() {
					t.Errorf("flow %d: post-NAT source %v with no conntrack entry", i, f.PostNATSrc)
				}
			}
			addConntrack(t, l, 4)
			l.e.Enrich(flows)
			want := []struct {
				src   string
				sport uint16
				dst   string
				dport uint16
			}{
				{"198.18.0.0", 1000, "198.19.0.0", 53},
				{"198.19.255.254", 1001, "198.19.0.1", 53},
				{"198.19.0.1", 53, "198.18.0.1", 1000},
				{},
				{},
			}
			for i, w := range want {
				f := flows[i]
				var s, d netip.Addr
				if w.src != "" {
					s, d = netip.MustParseAddr(w.src), netip.MustParseAddr(w.dst)
				}
				if f.PostNATSrc != s || f.PostNATDst != d || f.PostNATSrcPort != w.sport || f.PostNATDstPort != w.dport {
					t.Errorf("flow %d: post-NAT %v:%d -> %v:%d, want %+v", i, f.PostNATSrc, f.PostNATSrcPort, f.PostNATDst, f.PostNATDstPort, w)
				}
			}
			st := l.e.Stats()
			if st.ConntrackErrors != 0 {
				t.Errorf("stats %+v", st)
			}
			switch mode {
			case ConntrackDump:
				if st.ConntrackFlows != 4 || st.ConntrackGets != 0 {
					t.Errorf("stats %+v", st)
				}
			case ConntrackGet:
				// 4 gets on the empty table (the repeated miss is
				// cached), then 3: the reply finds the masqueraded
				// entry in the index the get of its original filled.
				if st.ConntrackDumps != 0 || st.ConntrackGets != 7 {
					t.Errorf("stats %+v", st)
				}
			case ConntrackAuto:
				// Empty table: no lookup; then 4 entries, 5 flows:
				// gets (3, as above) are cheaper than a dump.
				if st.ConntrackDumps != 0 || st.ConntrackGets != 3 {
					t.Errorf("stats %+v", st)
				}
			}
		})
	}
}

// BenchmarkConntrackDump measures one conntrack dump and index build (what
// each Enrich call does once) for N entries.
func BenchmarkConntrackDump(b *testing.B) {
	// 65536 is the most a test namespace holds (nf_conntrack_max).
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint("entries=", n), func(b *testing.B) {
			l := newLab(b, Options{})
			addConntrack(b, l, n)
			for b.Loop() {
				clear(l.e.nat)
				cts, err := l.e.h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
				if err != nil {
					b.Fatal(err)
				}
				if len(cts) != n {
					b.Fatalf("%d entries, want %d", len(cts), n)
				}
				indexFlows(l.e.nat, cts)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
		})
	}
}

// BenchmarkConntrackGet measures one IPCTNL_MSG_CT_GET, what
// ConntrackGet costs per flow, in a table of 10000 entries.
func BenchmarkConntrackGet(b *testing.B) {
	l := newLab(b, Options{Conntrack: ConntrackGet})
	addConntrack(b, l, 10000)
	t := Tuple{Proto: 17, Src: netip.MustParseAddr("198.18.1.7"), Dst: netip.MustParseAddr("198.19.1.7"), SrcPort: 1000, DstPort: 53}
	for b.Loop() {
		if _, _, ok, err := l.e.ctGet.get(t); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkEnrich measures Enrich of F ingress flows, each with its own
// (source, destination) pair, so one route lookup per flow, with and
// without a conntrack table of 10000 entries.
func BenchmarkEnrich(b *testing.B) {
	const nflows = 1000
	for _, c := range []struct {
		entries int
		mode    ConntrackMode
	}{{0, ConntrackOff}, {10000, ConntrackDump}, {10000, ConntrackGet}, {10000, ConntrackAuto}} {
		ct := c.entries
		b.Run(fmt.Sprintf("flows=%d/conntrack=%d/mode=%v", nflows, ct, c.mode), func(b *testing.B) {
			opts := Options{Conntrack: c.mode}
			l := newLab(b, opts)
			if ct > 0 {
				addConntrack(b, l, ct)
			}
			flows := make([]exporter.Flow, nflows)
			for i := range flows {
				// Sources off the namespace's own 198.18.0.1.
				flows[i] = ingress(l.ifindex, 17, fmt.Sprintf("198.18.%d.%d", 100+i>>8, i&255), 1000,
					fmt.Sprintf("198.19.%d.%d", i>>8, i&255), 53)
			}
			for b.Loop() {
				l.e.Enrich(flows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/nflows, "ns/flow")
			if st := l.e.Stats(); st.RouteErrors != 0 {
				b.Errorf("stats %+v", st)
			}
			if flows[1].ForwardingStatus != StatusForwarded {
				b.Errorf("flow not enriched: %+v", flows[1])
			}
		})
	}
}
