package integration

import (
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// TestRouterFate runs the daemon with --mode router on the fate lab's
// router (newFateNet), exporting IPFIX to a socket whose datagrams tshark
// decodes and NetFlow v9 to nfcapd, read back with nfdump. Each scenario
// sends its own flow, a known number of packets, and both collectors must
// show exactly that many packets per forwardingStatus (RFC 7270), the
// packet's actual fate (issue 13):
//
//   - ordinary forwarding: 64, with the egress interface and next hop;
//   - an nftables forward drop: 130 (NETFILTER_DROP, ACL drop), none
//     forwarded;
//   - TTL / hop limit 1: 137 (bad TTL), the time-exceeded messages back
//     at the client;
//   - a destination without a route: 131 (unroutable);
//   - a spoofed source under strict rp_filter (IPv4): 140 (RPF);
//   - a ping to the router: consumed, 195 (for us: the FIB says local);
//   - policy routing, ip rule from a source to table 100: 64 out rp0 via
//     table 100's gateway;
//   - one flow forwarded, then dropped by a rule added mid-flow: two
//     records, forwarded + dropped = sent.
//
// Before each check, the kernel's own counters (nft rule counters, SNMP
// counters, what the server received) show the scenario did what it
// says, so that a failure is hostflow's.
func TestRouterFate(t *testing.T) {
	requireRoot(t, "nfcapd", "nfdump", "tshark", "nft", "ping")
	bin := buildHostflow(t)
	l := newFateNet(t)

	const ipfixPort, v9Port = 4739, 2055
	ipfix := newCollectorSocket(t, l.rtr, "127.0.0.1") // UDP and TCP 4739
	dir := t.TempDir()
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(v9Port), "-t", "3600", "-v"))
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	// Every packet the router's interfaces receive while the daemon runs
	// must be in exactly one record: forwarded, dropped or consumed. The
	// links' own chatter (IPv6 MLD reports after link-up) is over first.
	ifaces := []struct {
		name  string
		index int
	}{{"rc0", l.rc}, {"rs0", l.rs}, {"rp0", l.rp}}
	quiet := func(d time.Duration) (s []linkStats) {
		for _, i := range ifaces {
			s = append(s, l.rtr.waitQuiet(t, i.name, d, 20*time.Second))
		}
		return s
	}
	quiet(1500 * time.Millisecond)
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--mode", "router", "--interfaces", "rc0,rs0,rp0",
		"--collector", "ipfix+udp://127.0.0.1:"+strconv.Itoa(ipfixPort),
		"--collector", "netflow9+udp://127.0.0.1:"+strconv.Itoa(v9Port),
		"--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	ifBefore := quiet(500 * time.Millisecond)

	// Each scenario's count differs from the others', so a record
	// that lands on the wrong flow shows.
	const (
		nFwd, nDrop, nTTL, nNoRoute, nSpoof, nPing, nPolicy = 3, 4, 5, 6, 7, 3, 8
		nMidFwd, nMidDrop                                   = 5, 4
	)
	var wants []fateWant
	for _, fam := range []struct {
		name                       string
		c, s, rtr, policy, noRoute string
		policyNH                   string
		udp, ping                  uint64
		icmp, echo                 int
		v6                         bool
	}{
		{"ipv4", clientV4, serverV4, routerCV4, policyV4, noRouteV4, serverPV4, fateV4UDP, fateV4Ping, 1, 8, false},
		{"ipv6", clientV6, serverV6, routerCV6, policyV6, noRouteV6, serverPV6, fateV6UDP, fateV6Ping, 58, 128, true},
	} {
		udp := func(what string, src string, sport int, dst string, dport int, packets map[int]uint64) fateWant {
			w := fateWant{what: fam.name + " " + what, proto: 17, src: src, dst: dst, sport: sport, dport: dport,
				icmpType: -1, in: l.rc, packets: packets, pktBytes: fam.udp}
			if _, ok := packets[64]; ok {
				w.out, w.nextHop = l.rs, fam.s
			}
			return w
		}

		// Forwarded.
		sink := newFateSink(t, l.server, fam.s)
		sport := sendUDP(t, udpSocket(t, l.client, fam.c, 0), fam.s, sink.port, nFwd)
		sink.wait(t, fam.name+" forwarded", nFwd)
		wants = append(wants, udp("forwarded", fam.c, sport, fam.s, sink.port, map[int]uint64{64: nFwd}))

		// Dropped by an nftables forward rule.
		sink = newFateSink(t, l.server, fam.s)
		tag := fam.name + "-drop"
		l.nftDrop(t, fam.s, sink.port, tag)
		sport = sendUDP(t, udpSocket(t, l.client, fam.c, 0), fam.s, sink.port, nDrop)
		if n := waitCounter(func() uint64 { return l.nftDropped(t, tag) }, nDrop); n != nDrop {
			t.Fatalf("%s: the nft rule dropped %d packets, sent %d", tag, n, nDrop)
		}
		sink.wait(t, tag, 0)
		wants = append(wants, udp("nft drop", fam.c, sport, fam.s, sink.port, map[int]uint64{130: nDrop}))

		// TTL / hop limit 1: the router drops them and says so.
		timeExceeded := func() uint64 { return snmpCounter(t, l.client, "snmp", "Icmp", "InTimeExcds") }
		if fam.v6 {
			timeExceeded = func() uint64 { return snmpCounter(t, l.client, "snmp6", "", "Icmp6InTimeExcds") }
		}
		before := timeExceeded()
		sink = newFateSink(t, l.server, fam.s)
		sport = sendUDP(t, udpSocket(t, l.client, fam.c, 1), fam.s, sink.port, nTTL)
		if n := waitCounter(timeExceeded, before+nTTL) - before; n != nTTL {
			t.Fatalf("%s ttl 1: the client got %d time-exceeded messages, sent %d packets", fam.name, n, nTTL)
		}
		sink.wait(t, fam.name+" ttl 1", 0)
		wants = append(wants, udp("ttl 1", fam.c, sport, fam.s, sink.port, map[int]uint64{137: nTTL}))

		// No route.
		noRoutes := func() uint64 { return snmpCounter(t, l.rtr, "netstat", "IpExt", "InNoRoutes") }
		if fam.v6 {
			noRoutes = func() uint64 { return snmpCounter(t, l.rtr, "snmp6", "", "Ip6InNoRoutes") }
		}
		before = noRoutes()
		sport = sendUDP(t, udpSocket(t, l.client, fam.c, 0), fam.noRoute, 9, nNoRoute)
		if n := waitCounter(noRoutes, before+nNoRoute) - before; n != nNoRoute {
			t.Fatalf("%s no route: the router counted %d packets without a route, sent %d", fam.name, n, nNoRoute)
		}
		wants = append(wants, udp("no route", fam.c, sport, fam.noRoute, 9, map[int]uint64{131: nNoRoute}))

		// Spoofed source, strict reverse-path filter (IPv4 only: IPv6
		// has no rp_filter).
		if !fam.v6 {
			rpf := func() uint64 { return snmpCounter(t, l.rtr, "netstat", "TcpExt", "IPReversePathFilter") }
			before = rpf()
			sink = newFateSink(t, l.server, fam.s)
			sport = sendUDP(t, udpSocket(t, l.client, spoofedV4, 0), fam.s, sink.port, nSpoof)
			if n := waitCounter(rpf, before+nSpoof) - before; n != nSpoof {
				t.Fatalf("spoofed: the router's rp_filter dropped %d packets, sent %d", n, nSpoof)
			}
			sink.wait(t, "spoofed", 0)
			wants = append(wants, udp("spoofed source", spoofedV4, sport, fam.s, sink.port, map[int]uint64{140: nSpoof}))
		}

		// A ping to the router: consumed.
		args := []string{"-c", strconv.Itoa(nPing), "-i", "0.2", "-W", "2", "-I", fam.c, fam.rtr}
		if fam.v6 {
			args = append([]string{"-6"}, args...)
		}
		l.client.run(t, "ping", args...)
		wants = append(wants, fateWant{what: fam.name + " ping router", proto: fam.icmp, src: fam.c, dst: fam.rtr,
			icmpType: fam.echo, in: l.rc, packets: map[int]uint64{195: nPing}, pktBytes: fam.ping})

		// Policy route: from the second client address, table 100, out
		// rp0 via the server's sp0.
		sp0 := l.server.stats(t, "sp0").RxPackets
		sink = newFateSink(t, l.server, fam.s)
		sport = sendUDP(t, udpSocket(t, l.client, fam.policy, 0), fam.s, sink.port, nPolicy)
		sink.wait(t, fam.name+" policy route", nPolicy)
		if n := l.server.stats(t, "sp0").RxPackets - sp0; n < nPolicy {
			t.Fatalf("%s policy route: sp0 received %d packets, table 100 should have sent it %d", fam.name, n, nPolicy)
		}
		w := udp("policy route", fam.policy, sport, fam.s, sink.port, map[int]uint64{64: nPolicy})
		w.out, w.nextHop = l.rp, fam.policyNH
		wants = append(wants, w)

		// One flow, forwarded until a drop rule comes mid-flow.
		sink = newFateSink(t, l.server, fam.s)
		c := udpSocket(t, l.client, fam.c, 0)
		sendUDP(t, c, fam.s, sink.port, nMidFwd)
		sink.wait(t, fam.name+" mid-flow, before the rule", nMidFwd)
		tag = fam.name + "-mid"
		l.nftDrop(t, fam.s, sink.port, tag)
		sport = sendUDP(t, c, fam.s, sink.port, nMidDrop)
		if n := waitCounter(func() uint64 { return l.nftDropped(t, tag) }, nMidDrop); n != nMidDrop {
			t.Fatalf("%s: the nft rule dropped %d packets, sent %d", tag, n, nMidDrop)
		}
		sink.wait(t, fam.name+" mid-flow, after the rule", nMidFwd)
		wants = append(wants, udp("mid-flow drop", fam.c, sport, fam.s, sink.port, map[int]uint64{64: nMidFwd, 130: nMidDrop}))
	}

	ifAfter := quiet(500 * time.Millisecond)
	hf.stop(t, 20*time.Second) // the final export has every flow
	l.rtr.waitUDPQueueEmpty(t, v9Port, 10*time.Second)
	ipfix.drainUDP(t, 10*time.Second)
	nfcapd.stop(t, 10*time.Second)
	_, msgs := ipfix.snapshot()

	collectors := []struct {
		name string
		recs []fateRecord
	}{
		{"IPFIX (tshark)", tsharkRecords(t, msgs, ipfixPort)},
		{"NetFlow v9 (nfdump)", nfdumpFateRecords(t, nfdumpFile(t, dir))},
	}
	for _, c := range collectors {
		if len(c.recs) == 0 {
			t.Fatalf("%s: no flow record", c.name)
		}
		for _, w := range wants {
			checkFate(t, c.name, c.recs, w)
		}
		for i, ifc := range ifaces {
			var pk, by uint64
			for _, r := range c.recs {
				if r.in == ifc.index {
					pk += r.packets
					by += r.bytes
				}
			}
			// Records count IP bytes; the veth counters include the
			// 14-byte Ethernet header.
			rxPk := ifAfter[i].RxPackets - ifBefore[i].RxPackets
			rxBy := ifAfter[i].RxBytes - ifBefore[i].RxBytes - 14*rxPk
			if pk != rxPk || by != rxBy {
				t.Errorf("%s: the records of %s have %d packets %d bytes, it received %d packets %d IP bytes",
					c.name, ifc.name, pk, by, rxPk, rxBy)
			}
		}
		if t.Failed() {
			for _, r := range c.recs {
				t.Logf("%s: %v", c.name, r)
			}
		}
	}
}

// TestRouterFateDroppedCounts runs the daemon in router mode with a layout
// that adds droppedPacketDeltaCount (133) and droppedOctetDeltaCount (132)
// to the IPFIX router layout, and requires tshark to show them equal to
// the record's counts on dropped records and 0 on forwarded ones: a flow
// forwarded, one dropped by nftables, one forwarded then dropped.
func TestRouterFateDroppedCounts(t *testing.T) {
	requireRoot(t, "tshark", "nft")
	bin := buildHostflow(t)
	l := newFateNet(t)
	const ipfixPort = 4739
	ipfix := newCollectorSocket(t, l.rtr, "127.0.0.1")
	fields := append(templates.RouterNames(templates.IPFIX), "droppedPacketDeltaCount", "droppedOctetDeltaCount")
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--mode", "router", "--interfaces", "rc0,rs0",
		"--collector", "ipfix+udp://127.0.0.1:"+strconv.Itoa(ipfixPort), "--fields", strings.Join(fields, ","),
		"--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const nFwd, nDrop, nMidFwd, nMidDrop = 3, 4, 5, 6
	fwd := newFateSink(t, l.server, serverV4)
	fwdPort := sendUDP(t, udpSocket(t, l.client, clientV4, 0), serverV4, fwd.port, nFwd)
	fwd.wait(t, "forwarded", nFwd)

	drop := newFateSink(t, l.server, serverV4)
	l.nftDrop(t, serverV4, drop.port, "drop")
	dropPort := sendUDP(t, udpSocket(t, l.client, clientV4, 0), serverV4, drop.port, nDrop)
	if n := waitCounter(func() uint64 { return l.nftDropped(t, "drop") }, nDrop); n != nDrop {
		t.Fatalf("the nft rule dropped %d packets, sent %d", n, nDrop)
	}

	mid := newFateSink(t, l.server, serverV4)
	c := udpSocket(t, l.client, clientV4, 0)
	sendUDP(t, c, serverV4, mid.port, nMidFwd)
	mid.wait(t, "mid-flow, before the rule", nMidFwd)
	l.nftDrop(t, serverV4, mid.port, "mid")
	midPort := sendUDP(t, c, serverV4, mid.port, nMidDrop)
	if n := waitCounter(func() uint64 { return l.nftDropped(t, "mid") }, nMidDrop); n != nMidDrop {
		t.Fatalf("the mid-flow nft rule dropped %d packets, sent %d", n, nMidDrop)
	}

	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)
	ipfix.drainUDP(t, 10*time.Second)
	_, msgs := ipfix.snapshot()
	recs := tsharkRecords(t, msgs, ipfixPort)

	for _, w := range []struct {
		what         string
		sport, dport int
		dropped      map[int][2]uint64 // forwardingStatus -> dropped packets, their bytes
	}{
		{"forwarded", fwdPort, fwd.port, map[int][2]uint64{64: {0, 0}}},
		{"nft drop", dropPort, drop.port, map[int][2]uint64{130: {nDrop, nDrop * fateV4UDP}}},
		{"mid-flow drop", midPort, mid.port, map[int][2]uint64{64: {0, 0}, 130: {nMidDrop, nMidDrop * fateV4UDP}}},
	} {
		got := map[int][2]uint64{}
		var mine []fateRecord
		for _, r := range recs {
			if r.proto != 17 || r.src != clientV4 || r.dst != serverV4 || r.sport != w.sport || r.dport != w.dport {
				continue
			}
			mine = append(mine, r)
			if !r.hasDropped {
				t.Errorf("%s: tshark shows no droppedPacketDeltaCount/droppedOctetDeltaCount: %v", w.what, r)
			}
			g := got[r.status]
			got[r.status] = [2]uint64{g[0] + r.droppedPackets, g[1] + r.droppedBytes}
		}
		if !maps.Equal(got, w.dropped) {
			t.Errorf("%s: dropped packets and bytes per forwardingStatus %v, want %v; records %v", w.what, got, w.dropped, mine)
		}
	}
}
