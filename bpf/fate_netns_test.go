package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/internal/testutil"
)

// fateRouter is three namespaces: client (198.18.1.2, fd00:1::2) - router
// - server (198.18.2.2, fd00:2::2), the router forwarding between its two
// veths rc0 (198.18.1.1, fd00:1::1) and rs0 (198.18.2.1, fd00:2::1). IPv6
// only with v6.
type fateRouter struct {
	client, router, server *testutil.Netns
	rc0, rs0               int // the router's ifindexes
}

// resolveNeighbours sends a UDP packet (source port 39999) each way
// between client and server and waits for the replies' neighbour
// resolution, so that no packet a test sends later waits in (or is
// dropped from) a neighbour queue. Tests skip or drain these packets.
func (r *fateRouter) resolveNeighbours(t *testing.T, client, server netip.Addr) {
	t.Helper()
	sendUDP(t, r.client, 39999, netip.AddrPortFrom(server, 4999), 64, 1, 10)
	sendUDP(t, r.server, 39999, netip.AddrPortFrom(client, 4999), 64, 1, 10)
	time.Sleep(200 * time.Millisecond)
}

func newFateRouter(t *testing.T, v6 bool) *fateRouter {
	t.Helper()
	r := &fateRouter{client: testutil.NewNetns(t), router: testutil.NewNetns(t), server: testutil.NewNetns(t)}
	for _, ns := range []*testutil.Netns{r.client, r.router, r.server} {
		if v6 {
			break
		}
		if err := ns.DisableIPv6(); err != nil {
			t.Fatal(err)
		}
	}
	r.client.IP(t, "link", "add", "c0", "type", "veth", "peer", "name", "rc0", "netns", r.router.Name)
	r.server.IP(t, "link", "add", "s0", "type", "veth", "peer", "name", "rs0", "netns", r.router.Name)
	r.client.IP(t, "addr", "add", "198.18.1.2/24", "dev", "c0")
	r.router.IP(t, "addr", "add", "198.18.1.1/24", "dev", "rc0")
	r.router.IP(t, "addr", "add", "198.18.2.1/24", "dev", "rs0")
	r.server.IP(t, "addr", "add", "198.18.2.2/24", "dev", "s0")
	for _, l := range []struct {
		ns   *testutil.Netns
		name string
	}{{r.client, "c0"}, {r.router, "rc0"}, {r.router, "rs0"}, {r.server, "s0"}} {
		l.ns.IP(t, "link", "set", l.name, "up")
	}
	r.client.IP(t, "route", "add", "default", "via", "198.18.1.1")
	r.server.IP(t, "route", "add", "198.18.1.0/24", "via", "198.18.2.1")
	if v6 {
		r.client.IP(t, "addr", "add", "fd00:1::2/64", "dev", "c0", "nodad")
		r.router.IP(t, "addr", "add", "fd00:1::1/64", "dev", "rc0", "nodad")
		r.router.IP(t, "addr", "add", "fd00:2::1/64", "dev", "rs0", "nodad")
		r.server.IP(t, "addr", "add", "fd00:2::2/64", "dev", "s0", "nodad")
		r.client.IP(t, "-6", "route", "add", "default", "via", "fd00:1::1")
		r.server.IP(t, "-6", "route", "add", "fd00:1::/64", "via", "fd00:2::1")
	}
	if err := r.router.Do(func() error {
		if v6 {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.router.Do(func() error {
		for _, p := range []struct {
			name string
			idx  *int
		}{{"rc0", &r.rc0}, {"rs0", &r.rs0}} {
			i, err := net.InterfaceByName(p.name)
			if err != nil {
				return err
			}
			*p.idx = i.Index
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// fetcher loads a fetcher with fate (room for maxEntries flows, ingress
// hooks, and opts) in the router, runs attach there and closes the fetcher
// when the test ends.
func (r *fateRouter) fetcher(t *testing.T, maxEntries int, attach func(*FlowFetcher) error, opts ...FetcherOption) *FlowFetcher {
	t.Helper()
	var f *FlowFetcher
	if err := r.router.Do(func() (err error) {
		f, err = NewFlowFetcher(0, maxEntries, true, false, append([]FetcherOption{WithFate(true)}, opts...)...)
		return err
	}); err != nil {
		t.Fatalf("NewFlowFetcher with fate: %v", err)
	}
	t.Cleanup(func() {
		if err := r.router.Do(f.Close); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := r.router.Do(func() error { return attach(f) }); err != nil {
		t.Fatalf("attach: %v", err)
	}
	return f
}

// attachBoth attaches f to both of the router's veths.
func (r *fateRouter) attachBoth(f *FlowFetcher) error {
	return errors.Join(f.Attach(r.rc0, "rc0"), f.Attach(r.rs0, "rs0"))
}

// attachClient attaches f to the router's veth on the client's side.
func (r *fateRouter) attachClient(f *FlowFetcher) error {
	return f.Attach(r.rc0, "rc0")
}

// routerMAC is the hardware address of the router's interface name.
func (r *fateRouter) routerMAC(t *testing.T, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := r.router.Do(func() error {
		i, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		mac = i.HardwareAddr
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// sendFragmentable sends from ns, from UDP port sport, a 1400-byte datagram
// to dst on each of ports, with path MTU discovery off: a link with a
// smaller MTU fragments them.
func sendFragmentable(t *testing.T, ns *testutil.Netns, sport int, dst netip.Addr, ports []int) {
	t.Helper()
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: sport}); err != nil {
			return err
		}
		for _, port := range ports {
			if err := unix.Sendto(fd, make([]byte, 1400), 0, &unix.SockaddrInet4{Addr: dst.As4(), Port: port}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// nft loads an nftables ruleset into ns.
func nft(t *testing.T, ns *testutil.Netns, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", ns.Name, err, out)
	}
}

// sendUDP sends n datagrams of size bytes from ns, port sport, to dst:dport
// with the given TTL (hop limit).
func sendUDP(t *testing.T, ns *testutil.Netns, sport uint16, dst netip.AddrPort, ttl, n, size int) {
	t.Helper()
	if err := ns.Do(func() error {
		family, level, opt := unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
		var from, to unix.Sockaddr = &unix.SockaddrInet6{Port: int(sport)}, &unix.SockaddrInet6{Addr: dst.Addr().As16(), Port: int(dst.Port())}
		if dst.Addr().Is4() {
			family, level, opt = unix.AF_INET, unix.IPPROTO_IP, unix.IP_TTL
			from, to = &unix.SockaddrInet4{Port: int(sport)}, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, level, opt, ttl); err != nil {
			return err
		}
		if err := unix.Bind(fd, from); err != nil {
			return err
		}
		for range n {
			if err := unix.Sendto(fd, make([]byte, size), 0, to); err != nil {
				return fmt.Errorf("send to %s: %w", dst, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestFateRouterNetns forwards, drops and delivers packets through a
// router namespace with a fetcher in router mode (ingress only asked for:
// the egress hooks come with Fate) and checks the exact packets per fate
// under each arrival key: forwarded packets 64 with the egress interface,
// an nftables forward drop 130, TTL 1 137, no route 131; a drop in
// another namespace (the server's input firewall) is no fate of the
// router's.
func TestFateRouterNetns(t *testing.T) {
	testutil.RequireTool(t, "nft")
	r := newFateRouter(t, false)
	nft(t, r.router, `table inet hf {
	chain hf_forward {
		type filter hook forward priority 0; policy accept;
		udp dport 5001 drop
	}
}
`)
	nft(t, r.server, `table inet hf {
	chain hf_input {
		type filter hook input priority 0; policy accept;
		udp dport 5003 drop
	}
}
`)
	f := r.fetcher(t, 1024, r.attachBoth)

	server := netip.MustParseAddr("198.18.2.2")
	r.resolveNeighbours(t, netip.MustParseAddr("198.18.1.2"), server)
	drain(t, f)
	before := counters(t, f)

	sendUDP(t, r.client, 40000, netip.AddrPortFrom(server, 5000), 64, 5, 100) // forwarded
	sendUDP(t, r.client, 40001, netip.AddrPortFrom(server, 5001), 64, 3, 100) // dropped by nft
	sendUDP(t, r.client, 40002, netip.AddrPortFrom(server, 5002), 1, 2, 100)  // TTL expires
	sendUDP(t, r.client, 40003, netip.AddrPortFrom(netip.MustParseAddr("198.19.9.9"), 5000), 64, 4, 100)
	sendUDP(t, r.client, 40004, netip.AddrPortFrom(server, 5003), 64, 6, 100) // dropped in the server
	// Dropped (no socket) after arriving on the loopback, which hostflow
	// does not watch: no arrival, so no fate.
	sendUDP(t, r.router, 40005, netip.MustParseAddrPort("127.0.0.1:5999"), 64, 2, 100)

	key := func(sport, dport uint16, dst string, fate uint8) NetFlowId {
		return NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey(dst), SrcPort: sport, DstPort: dport,
			TransportProtocol: protoUDP, IfIndex: uint32(r.rc0), Direction: DirectionIngress, Fate: fate}
	}
	want := map[NetFlowId]uint64{
		key(40000, 5000, "198.18.2.2", 0):                  5,
		key(40000, 5000, "198.18.2.2", FateForwarded):      5,
		key(40001, 5001, "198.18.2.2", 0):                  3,
		key(40001, 5001, "198.18.2.2", FateDropACLDrop):    3,
		key(40002, 5002, "198.18.2.2", 0):                  2,
		key(40002, 5002, "198.18.2.2", FateDropBadTTL):     2,
		key(40003, 5000, "198.19.9.9", 0):                  4,
		key(40003, 5000, "198.19.9.9", FateDropUnroutable): 4,
		key(40004, 5003, "198.18.2.2", 0):                  6,
		key(40004, 5003, "198.18.2.2", FateForwarded):      6,
	}
	got := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got, want)
	for id, n := range want {
		if got[id].Packets != n {
			t.Errorf("%v fate %d: %d packets, want %d", id, id.Fate, got[id].Packets, n)
		}
		if n > 0 && got[id].Bytes != n*128 {
			t.Errorf("%v fate %d: %d bytes, want %d", id, id.Fate, got[id].Bytes, n*128)
		}
	}
	if m := got[key(40000, 5000, "198.18.2.2", FateForwarded)]; m.OutIfIndex != uint32(r.rs0) {
		t.Errorf("forwarded flow: out if %d, want rs0 (%d)", m.OutIfIndex, r.rs0)
	}
	// No other fate of the client's flows: in particular no drop of the
	// server's firewall, which is another namespace's.
	for id, m := range got {
		if id.IfIndex == uint32(r.rc0) && id.SrcPort >= 40000 && id.SrcPort <= 40004 && id.TransportProtocol == protoUDP {
			if _, ok := want[id]; !ok {
				t.Errorf("unexpected flow %v fate %d: %d packets", id, id.Fate, m.Packets)
			}
		}
		if id.Fate >= FateDropUnknown && id.DstPort == 5003 {
			t.Errorf("the server's drop counted by the router: %v fate %d", id, id.Fate)
		}
		if id.Fate != 0 && id.IfIndex != uint32(r.rc0) && id.IfIndex != uint32(r.rs0) {
			t.Errorf("fate of a packet that arrived on an interface not attached: %v fate %d", id, id.Fate)
		}
	}
	if after := counters(t, f); after.FateMalformed != before.FateMalformed {
		t.Errorf("FateMalformed moved: %d -> %d", before.FateMalformed, after.FateMalformed)
	}

	// A sampling change reloads the TC programs on the spare maps: the
	// drop counter, loaded once, follows them (flow_state.swapped), so
	// that no drop lands in the map the change empties.
	if err := r.router.Do(func() error { return f.SetSampling(1) }); err != nil {
		t.Fatalf("SetSampling: %v", err)
	}
	var st NetFlowStateT
	if err := f.shared.state.Lookup(uint32(0), &st); err != nil || st.Swapped != 1 {
		t.Fatalf("flow state after a sampling change: %+v (%v), want swapped 1", st, err)
	}
	// The drain that empties the old programs' map: what follows is
	// counted in the new programs' map only.
	drain(t, f)
	sendUDP(t, r.client, 40000, netip.AddrPortFrom(server, 5000), 64, 2, 100)
	sendUDP(t, r.client, 40001, netip.AddrPortFrom(server, 5001), 64, 3, 100)
	want2 := map[NetFlowId]uint64{
		key(40000, 5000, "198.18.2.2", 0):               2,
		key(40000, 5000, "198.18.2.2", FateForwarded):   2,
		key(40001, 5001, "198.18.2.2", 0):               3,
		key(40001, 5001, "198.18.2.2", FateDropACLDrop): 3,
	}
	got2 := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got2, want2)
	for id, n := range want2 {
		if got2[id].Packets != n {
			t.Errorf("after a sampling change: %v fate %d: %d packets, want %d", id, id.Fate, got2[id].Packets, n)
		}
	}
}

// collect adds what f's drains hand out to got until every flow of want
// has its packets (bounded: counts, not timing), then drains once more
// for any excess.
func collect(t *testing.T, f *FlowFetcher, got map[NetFlowId]NetFlowMetrics, want map[NetFlowId]uint64) {
	t.Helper()
	add := func() {
		for id, m := range drain(t, f) {
			g := got[id]
			g.Accumulate(&m)
			got[id] = g
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		add()
		done := true
		for id, n := range want {
			if got[id].Packets < n {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	add()
}

// TestFateSetHooks: in router mode an interface attached for ingress only
// has an egress hook too, counting forwarded packets only; asking for
// egress swaps in the program that also counts what the host sends, on
// the same hook, and asking for ingress only again swaps it back.
func TestFateSetHooks(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		t.Run(mode.String(), func(t *testing.T) { testFateSetHooks(t, mode) })
	}
}

func testFateSetHooks(t *testing.T, mode AttachMode) {
	r := newFateRouter(t, false)
	// The client's side too, for the arrivals (their fates are counted
	// only with them).
	f := r.fetcher(t, 256, r.attachBoth, WithAttachMode(mode))
	egressLink := func() hookLink {
		t.Helper()
		a := f.attached[r.rs0]
		if len(a.links) != 2 {
			t.Fatalf("%d hooks on rs0, want ingress and egress", len(a.links))
		}
		for _, h := range a.links {
			if !h.ingress {
				return h
			}
		}
		t.Fatal("no egress hook")
		return hookLink{}
	}
	first := egressLink()
	if first.local {
		t.Fatal("egress hook of an ingress-only interface counts the host's packets")
	}
	server := netip.AddrPortFrom(netip.MustParseAddr("198.18.2.2"), 6000)
	local := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.2.1"), DstIp: ipKey("198.18.2.2"), SrcPort: 41000, DstPort: 6000,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rs0), Direction: DirectionEgress}
	fwd := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"), SrcPort: 41001, DstPort: 6000,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rc0), Direction: DirectionIngress, Fate: FateForwarded}
	fwdAsEgress := fwd
	fwdAsEgress.IfIndex, fwdAsEgress.Direction, fwdAsEgress.Fate = uint32(r.rs0), DirectionEgress, 0
	for _, step := range []struct {
		ingress, egress bool
		want            uint64
	}{{true, false, 0}, {true, true, 3}, {true, false, 0}} {
		if err := r.router.Do(func() error { return f.SetHooks(r.rs0, step.ingress, step.egress) }); err != nil {
			t.Fatalf("SetHooks(%v, %v): %v", step.ingress, step.egress, err)
		}
		h := egressLink()
		if h.link != first.link || h.local != step.egress {
			t.Fatalf("SetHooks(%v, %v): egress hook %+v, want the same link with local %v", step.ingress, step.egress, h, step.egress)
		}
		sendUDP(t, r.router, 41000, server, 64, 3, 10)
		// Forwarded from the client: counted forwarded (under rc0,
		// where it arrived) whatever the egress choice, never as an
		// egress packet of rs0.
		sendUDP(t, r.client, 41001, server, 64, 2, 10)
		got := map[NetFlowId]NetFlowMetrics{}
		collect(t, f, got, map[NetFlowId]uint64{local: step.want, fwd: 2})
		if got[local].Packets != step.want {
			t.Errorf("egress %v: %d packets the router sent counted, want %d", step.egress, got[local].Packets, step.want)
		}
		if got[fwd].Packets != 2 || got[fwdAsEgress].Packets != 0 {
			t.Errorf("egress %v: forwarded %d packets, as egress %d, want 2 and 0", step.egress, got[fwd].Packets, got[fwdAsEgress].Packets)
		}
	}

	// The fates of the attached interfaces' arrivals are counted, no
	// others.
	if w, err := f.watched(uint32(r.rs0)); !w || err != nil {
		t.Errorf("attached rs0 not watched: %v %v", w, err)
	}
	if err := r.router.Do(func() error { return f.Detach(r.rs0) }); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if w, err := f.watched(uint32(r.rs0)); w || err != nil {
		t.Errorf("detached rs0 still watched: %v %v", w, err)
	}
}

// TestFateRouterNetnsIPv6 is TestFateRouterNetns's forwarded, hop limit 1
// and no route cases over IPv6.
func TestFateRouterNetnsIPv6(t *testing.T) {
	r := newFateRouter(t, true)
	f := r.fetcher(t, 1024, r.attachBoth)
	server := netip.MustParseAddr("fd00:2::2")
	r.resolveNeighbours(t, netip.MustParseAddr("fd00:1::2"), server)
	sendUDP(t, r.client, 39998, netip.AddrPortFrom(server, 4999), 64, 1, 10)
	time.Sleep(100 * time.Millisecond)
	drain(t, f)

	sendUDP(t, r.client, 40000, netip.AddrPortFrom(server, 5000), 64, 5, 100)
	sendUDP(t, r.client, 40002, netip.AddrPortFrom(server, 5002), 1, 2, 100)
	sendUDP(t, r.client, 40003, netip.AddrPortFrom(netip.MustParseAddr("fd00:9::9"), 5000), 64, 4, 100)
	key := func(sport uint16, dst string, fate uint8) NetFlowId {
		return NetFlowId{EthProtocol: 0x86dd, SrcIp: ipKey("fd00:1::2"), DstIp: ipKey(dst), SrcPort: sport, DstPort: map[uint16]uint16{40000: 5000, 40002: 5002, 40003: 5000}[sport],
			TransportProtocol: protoUDP, IfIndex: uint32(r.rc0), Direction: DirectionIngress, Fate: fate}
	}
	want := map[NetFlowId]uint64{
		key(40000, "fd00:2::2", 0):                  5,
		key(40000, "fd00:2::2", FateForwarded):      5,
		key(40002, "fd00:2::2", 0):                  2,
		key(40002, "fd00:2::2", FateDropBadTTL):     2,
		key(40003, "fd00:9::9", 0):                  4,
		key(40003, "fd00:9::9", FateDropUnroutable): 4,
	}
	got := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got, want)
	for id, n := range want {
		if got[id].Packets != n || got[id].Bytes != n*148 {
			t.Errorf("%v fate %d: %d packets %d bytes, want %d, %d", id, id.Fate, got[id].Packets, got[id].Bytes, n, n*148)
		}
	}
	for id, m := range got {
		if id.IfIndex == uint32(r.rc0) && id.SrcPort >= 40000 && id.SrcPort <= 40003 {
			if _, ok := want[id]; !ok {
				t.Errorf("unexpected flow %v fate %d: %d packets", id, id.Fate, m.Packets)
			}
		}
	}
}

// TestFateRouterNAT: a forwarded packet is keyed as it arrived, before
// NAT, in both directions of a connection: the router DNATs the client's
// datagrams to its own address to the server and masquerades them, and
// de-NATs the server's replies; each forwarded record has the key of its
// arrival record, from the packet's conntrack entry, and so do the ICMP
// errors related to the connection.
func TestFateRouterNAT(t *testing.T) {
	testutil.RequireTool(t, "nft")
	r := newFateRouter(t, false)
	nft(t, r.router, `table ip hf_nat {
	chain hf_pre {
		type nat hook prerouting priority -100;
		udp dport 7000 dnat to 198.18.2.2:5000
	}
	chain hf_post {
		type nat hook postrouting priority 100;
		oifname "rs0" masquerade
	}
}
`)
	f := r.fetcher(t, 1024, r.attachBoth)
	// nft loaded conntrack before the fetcher.
	if !f.FateNAT() {
		t.Error("FateNAT() = false with conntrack in the kernel")
	}
	sendUDP(t, r.client, 40010, netip.MustParseAddrPort("198.18.1.1:7000"), 64, 3, 100)
	time.Sleep(50 * time.Millisecond)
	// Replies, to the masqueraded address (the source port is kept).
	sendUDP(t, r.server, 5000, netip.MustParseAddrPort("198.18.2.1:40010"), 64, 2, 100)

	orig := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.1.1"), SrcPort: 40010, DstPort: 7000,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rc0)}
	reply := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.2.2"), DstIp: ipKey("198.18.2.1"), SrcPort: 5000, DstPort: 40010,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rs0)}
	fwd := func(id NetFlowId) NetFlowId { id.Fate = FateForwarded; return id }
	want := map[NetFlowId]uint64{orig: 3, fwd(orig): 3, reply: 2, fwd(reply): 2}
	got := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got, want)
	for id, n := range want {
		if got[id].Packets != n {
			t.Errorf("%v fate %d: %d packets, want %d", id, id.Fate, got[id].Packets, n)
		}
	}
	if m := got[fwd(orig)]; m.OutIfIndex != uint32(r.rs0) {
		t.Errorf("forwarded original: out if %d, want rs0 %d", m.OutIfIndex, r.rs0)
	}
	if m := got[fwd(reply)]; m.OutIfIndex != uint32(r.rc0) {
		t.Errorf("forwarded reply: out if %d, want rc0 %d", m.OutIfIndex, r.rc0)
	}
	// Every forwarded flow has the key of an arrival flow, with as many
	// packets (nothing is dropped here): the ICMP port unreachable
	// errors each end sends too, NATed as their parent connection.
	icmp := 0
	for id, m := range got {
		if id.Fate != FateForwarded {
			continue
		}
		arrival := id
		arrival.Fate = 0
		if a := got[arrival]; a.Packets != m.Packets {
			t.Errorf("forwarded flow %v (%d packets) not keyed as it arrived: arrival has %d packets", id, m.Packets, a.Packets)
		}
		if id.TransportProtocol == 1 {
			icmp++
		}
	}
	if icmp != 2 {
		t.Errorf("%d forwarded ICMP error flows, want 2 (one from each end)", icmp)
	}
}

// TestFateDropMalformed: a packet the kernel drops for a header the drop
// counter cannot key (an IPv4 header length below 20 bytes: ip_rcv drops
// it, IP_INHDR) moves COUNTER_FATE_MALFORMED; its arrival was not counted
// either (COUNTER_MALFORMED).
func TestFateDropMalformed(t *testing.T) {
	r := newFateRouter(t, false)
	mac := r.routerMAC(t, "rc0")
	f := r.fetcher(t, 256, r.attachClient)
	l3 := ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoUDP}.build(udp(1, 2, bytesN(20)))
	l3[0] = 0x44 // header length 16 bytes
	frame := ether(0x0800, nil, l3)
	before := counters(t, f)
	const n = 3
	sendFramesTo(t, r.client, "c0", mac, frame, n)
	var after KernelCounters
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = counters(t, f); after.FateMalformed-before.FateMalformed >= n {
			break
		}
	}
	if d := after.FateMalformed - before.FateMalformed; d != n {
		t.Errorf("FateMalformed moved by %d, want %d", d, n)
	}
	if d := after.Malformed - before.Malformed; d != n {
		t.Errorf("Malformed moved by %d, want %d", d, n)
	}
	for id := range drain(t, f) {
		if id.Fate != 0 {
			t.Errorf("a fate counted for a malformed packet: %v fate %d", id, id.Fate)
		}
	}
}

// sendFramesTo sends frame n times from link dev of ns to the Ethernet
// address mac (written into the frame), with a packet socket: any header,
// any source address.
func sendFramesTo(t *testing.T, ns *testutil.Netns, dev string, mac net.HardwareAddr, frame []byte, n int) {
	t.Helper()
	copy(frame[0:6], mac)
	if err := ns.Do(func() error {
		l, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: l.Index, Halen: 6}
		copy(to.Addr[:], mac)
		for range n {
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestFateRPFilter: with strict reverse-path filtering on the router, a
// packet whose source is routed through another interface than the one
// it came in on is dropped with fate 140 (RPF).
func TestFateRPFilter(t *testing.T) {
	r := newFateRouter(t, false)
	if err := r.router.Do(func() error {
		for _, p := range []string{"all", "rc0"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+p+"/rp_filter", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mac := r.routerMAC(t, "rc0")
	f := r.fetcher(t, 256, r.attachClient)
	// From the client's side, a source on the server's side.
	spoofed := ipv4{src: netip.MustParseAddr("198.18.2.50"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoUDP}.build(udp(4242, 53, bytesN(20)))
	sendFramesTo(t, r.client, "c0", mac, ether(0x0800, nil, spoofed), 4)
	id := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.2.50"), DstIp: ipKey("198.18.2.2"), SrcPort: 4242, DstPort: 53,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rc0)}
	rpf := id
	rpf.Fate = FateDropRPF
	got := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got, map[NetFlowId]uint64{id: 4, rpf: 4})
	if got[id].Packets != 4 || got[rpf].Packets != 4 {
		t.Errorf("spoofed source: arrival %d, RPF drop %d packets, want 4 and 4", got[id].Packets, got[rpf].Packets)
	}
	for k, m := range got {
		if k.SrcIp == id.SrcIp && k != id && k != rpf {
			t.Errorf("unexpected fate of the spoofed packets: %v fate %d, %d packets", k, k.Fate, m.Packets)
		}
	}
}

// TestFateArrivalsFollowIngressHook: the fates of an interface's arrivals
// are counted only while it has hostflow's ingress hook (fate_ifaces):
// attached for egress only, packets forwarded from it have no arrival
// record and get no forwarded one either; SetHooks adding ingress starts
// them, removing it stops them.
func TestFateArrivalsFollowIngressHook(t *testing.T) {
	r := newFateRouter(t, false)
	f := r.fetcher(t, 256, func(f *FlowFetcher) error {
		return errors.Join(f.AttachHooks(r.rc0, "rc0", false, true), f.Attach(r.rs0, "rs0"))
	})
	// Every port unreachable error the server sends is needed.
	if err := r.server.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/icmp_ratelimit", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(netip.MustParseAddr("198.18.2.2"), 6000)
	arrival := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"), SrcPort: 41002, DstPort: 6000,
		TransportProtocol: protoUDP, IfIndex: uint32(r.rc0), Direction: DirectionIngress}
	fwd := arrival
	fwd.Fate = FateForwarded
	for _, step := range []struct {
		ingress bool
		want    uint64
	}{{false, 0}, {true, 2}, {false, 0}} {
		if step.ingress != (len(f.attached[r.rc0].links) == 2) {
			if err := r.router.Do(func() error { return f.SetHooks(r.rc0, step.ingress, true) }); err != nil {
				t.Fatalf("SetHooks(%v, true): %v", step.ingress, err)
			}
		}
		if w, err := f.watched(uint32(r.rc0)); w != step.ingress || err != nil {
			t.Errorf("ingress %v: rc0 watched %v (%v)", step.ingress, w, err)
		}
		sendUDP(t, r.client, 41002, server, 64, 2, 10)
		got := map[NetFlowId]NetFlowMetrics{}
		// The server's port unreachable errors come back through
		// rs0, watched: their forwarded records show the packets
		// went through.
		back := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.2.2"), DstIp: ipKey("198.18.1.2"), TransportProtocol: protoICMP,
			IcmpType: 3, IcmpCode: 3, Tos: 0xc0, IfIndex: uint32(r.rs0), Direction: DirectionIngress, Fate: FateForwarded}
		collect(t, f, got, map[NetFlowId]uint64{back: 2, fwd: step.want})
		if got[back].Packets != 2 {
			t.Errorf("ingress %v: %d port unreachable errors forwarded, want 2: %v", step.ingress, got[back].Packets, got)
		}
		if got[arrival].Packets != step.want || got[fwd].Packets != step.want {
			t.Errorf("ingress %v: %d arrived on rc0, %d forwarded, want %d and %d", step.ingress, got[arrival].Packets, got[fwd].Packets, step.want, step.want)
		}
	}
}

// TestFateRouterFragmentsForwardedOnce: a forwarded IPv4 packet that the
// router must fragment (egress MTU smaller, DF clear) arrived once and is
// counted forwarded once, under its arrival key, not once per fragment
// (the later ones under a key with ports 0 that no arrival has).
func TestFateRouterFragmentsForwardedOnce(t *testing.T) {
	r := newFateRouter(t, false)
	r.router.IP(t, "link", "set", "rs0", "mtu", "1280")
	f := r.fetcher(t, 1024, r.attachBoth)
	server := netip.MustParseAddr("198.18.2.2")
	r.resolveNeighbours(t, netip.MustParseAddr("198.18.1.2"), server)
	drain(t, f)
	const n = 3
	sendFragmentable(t, r.client, 41000, server, slices.Repeat([]int{5000}, n))
	var arrived, fated uint64
	add := func() {
		for id, m := range drain(t, f) {
			// Skips the warm-up's packets (source port 39999) too,
			// should the drain above have come before them.
			if id.IfIndex != uint32(r.rc0) || id.TransportProtocol != protoUDP || id.SrcPort == 39999 {
				continue
			}
			t.Logf("%v sport %d dport %d fate %d: %d packets %d bytes", id.DstIp[12:], id.SrcPort, id.DstPort, id.Fate, m.Packets, m.Bytes)
			if id.Fate == FateArrival {
				arrived += m.Packets
			} else {
				fated += m.Packets
			}
		}
	}
	// Forwarding may be late on a busy machine: drain until both counts
	// are reached (bounded), then once more for any excess.
	for deadline := time.Now().Add(10 * time.Second); (arrived < n || fated < n) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		add()
	}
	time.Sleep(300 * time.Millisecond) // as long as the old test waited
	add()
	if arrived != n || fated != n {
		t.Errorf("arrived %d packets, fates counted %d, want %d and %d", arrived, fated, n, n)
	}
}

// TestFateDefragAsFragments: with conntrack on the router, a fragmented
// datagram arrives as k fragments (k arrivals, the later ones under a key
// with ports 0) but meets its fate reassembled, as one skb: dropped (an
// nftables forward drop) or forwarded whole, its fate is counted as the
// fragments it arrived in, under their arrival keys, packets and octets.
func TestFateDefragAsFragments(t *testing.T) {
	testutil.RequireTool(t, "nft")
	r := newFateRouter(t, false)
	nft(t, r.router, `table inet hf {
	chain hf_forward {
		type filter hook forward priority 0; policy accept;
		ct state new udp dport 5001 drop
	}
}
`)
	r.client.IP(t, "link", "set", "c0", "mtu", "1000")
	f := r.fetcher(t, 1024, r.attachBoth)
	server := netip.MustParseAddr("198.18.2.2")
	// 5001 dropped, 5002 forwarded (1428 bytes fit rs0's MTU).
	sendFragmentable(t, r.client, 41003, server, []int{5001, 5001, 5002, 5002, 5002})
	// Each 1428-byte datagram left the client as 996 + 452 bytes.
	key := func(dport uint16, fate uint8) NetFlowId {
		return NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"), SrcPort: 41003, DstPort: dport,
			TransportProtocol: protoUDP, IfIndex: uint32(r.rc0), Fate: fate}
	}
	rest := func(fate uint8) NetFlowId { id := key(0, fate); id.SrcPort = 0; return id }
	want := map[NetFlowId][2]uint64{
		key(5001, 0): {2, 2 * 996}, key(5001, FateDropACLDrop): {2, 2 * 996},
		key(5002, 0): {3, 3 * 996}, key(5002, FateForwarded): {3, 3 * 996},
		rest(0): {5, 5 * 452}, rest(FateDropACLDrop): {2, 2 * 452}, rest(FateForwarded): {3, 3 * 452},
	}
	wantPackets := map[NetFlowId]uint64{}
	for id, w := range want {
		wantPackets[id] = w[0]
	}
	got := map[NetFlowId]NetFlowMetrics{}
	collect(t, f, got, wantPackets)
	for id, w := range want {
		if m := got[id]; m.Packets != w[0] || m.Bytes != w[1] {
			t.Errorf("%v: %d packets %d bytes, want %d and %d", id, m.Packets, m.Bytes, w[0], w[1])
		}
	}
	for id, m := range got {
		if _, ok := want[id]; !ok && id.IfIndex == uint32(r.rc0) && id.TransportProtocol == protoUDP {
			t.Errorf("unexpected %v: %d packets", id, m.Packets)
		}
	}
}
