package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nfRouterRecord is what nfdump shows of a router-mode record.
type nfRouterRecord struct {
	nfRecord
	NextHop4  string `json:"ip4_next_hop"`
	NextHop6  string `json:"ip6_next_hop"`
	SrcMask   int    `json:"src_mask"`
	DstMask   int    `json:"dst_mask"`
	FwdStatus int    `json:"fwd_status"`
}

// TestRouterModeDaemon runs the daemon with --mode router on the lab's
// router, exporting NetFlow v9 to nfcapd there (nfdump 1.7.1 decodes
// forwardingStatus from v9 only), and checks what nfdump -o json shows,
// as a hardware router's NetFlow would say it: TCP, UDP and ICMP over IPv4
// and IPv6 both ways, each flow once (counted at ingress only), exact
// counts where the traffic is known, in and out interfaces, next hop,
// prefix lengths, and forwarded / dropped / consumed.
func TestRouterModeDaemon(t *testing.T) {
	requireRoot(t, "nfcapd", "nfdump")
	bin := buildHostflow(t)
	l := newRouterNet(t)
	dir := t.TempDir()
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "2055", "-t", "3600", "-v"))
	// The daemon sends its templates first thing: nfcapd must be bound.
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second)
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--mode", "router", "--interfaces", "rc0,rs0",
		"--collector", "netflow9+udp://127.0.0.1:2055", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const pings, udpN, udpSize = 3, 5, 100
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV4)
	l.client.run(t, "ping", "-6", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV6)
	l.client.run(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", routerCV4)
	// The blackhole answers nothing: ping fails, as it should.
	_ = l.client.command("ping", "-c", "2", "-i", "0.2", "-W", "1", "198.19.98.7").Run()
	u4c, u4s := udpEcho(t, l.client, l.server, clientV4, serverV4, udpN, udpSize)
	u6c, u6s := udpEcho(t, l.client, l.server, clientV6, serverV6, udpN, udpSize)
	t4c, t4s := tcpTransfer(t, l.client, l.server, clientV4, serverV4, 50_000)
	t6c, t6s := tcpTransfer(t, l.client, l.server, clientV6, serverV6, 50_000)

	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)
	l.rtr.waitUDPQueueEmpty(t, 2055, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)

	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRouterRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	for i := range recs {
		recs[i].normalize()
	}
	// find returns the records of one flow; sport < 0 matches ICMP by type.
	find := func(proto int, src, dst string, sport, dport int) []nfRouterRecord {
		var got []nfRouterRecord
		for _, r := range recs {
			if r.Proto != proto || r.SrcAddress != src || r.DstAddress != dst {
				continue
			}
			if sport < 0 && (r.ICMPType == nil || *r.ICMPType != dport) {
				continue
			}
			if sport >= 0 && (r.SrcPort != sport || r.DstPort != dport) {
				continue
			}
			got = append(got, r)
		}
		return got
	}
	type want struct {
		what             string
		proto            int
		src, dst         string
		sport, dport     int
		packets, bytes   uint64 // 0: not known in advance
		in, outIf        int
		nextHop          string
		srcMask, dstMask int
		fwd              int
	}
	c4, s4 := uint64(udpN*(20+8+udpSize)), uint64(udpN*(40+8+udpSize))
	for _, w := range []want{
		{"icmp echo request", 1, clientV4, serverV4, -1, 8, pings, pings * 84, l.rc, l.rs, serverV4, 24, 25, 64},
		{"icmp echo reply", 1, serverV4, clientV4, -1, 0, pings, pings * 84, l.rs, l.rc, clientV4, 25, 24, 64},
		{"icmpv6 echo request", 58, clientV6, serverV6, -1, 128, pings, pings * 104, l.rc, l.rs, serverV6, 64, 80, 64},
		{"icmpv6 echo reply", 58, serverV6, clientV6, -1, 129, pings, pings * 104, l.rs, l.rc, clientV6, 80, 64, 64},
		{"udp4 request", 17, clientV4, serverV4, u4c, u4s, udpN, c4, l.rc, l.rs, serverV4, 24, 25, 64},
		{"udp4 reply", 17, serverV4, clientV4, u4s, u4c, udpN, c4, l.rs, l.rc, clientV4, 25, 24, 64},
		{"udp6 request", 17, clientV6, serverV6, u6c, u6s, udpN, s4, l.rc, l.rs, serverV6, 64, 80, 64},
		{"udp6 reply", 17, serverV6, clientV6, u6s, u6c, udpN, s4, l.rs, l.rc, clientV6, 80, 64, 64},
		{"tcp4 client", 6, clientV4, serverV4, t4c, t4s, 0, 0, l.rc, l.rs, serverV4, 24, 25, 64},
		{"tcp4 server", 6, serverV4, clientV4, t4s, t4c, 0, 0, l.rs, l.rc, clientV4, 25, 24, 64},
		{"tcp6 client", 6, clientV6, serverV6, t6c, t6s, 0, 0, l.rc, l.rs, serverV6, 64, 80, 64},
		{"tcp6 server", 6, serverV6, clientV6, t6s, t6c, 0, 0, l.rs, l.rc, clientV6, 80, 64, 64},
		{"ping to the router, consumed (for us)", 1, clientV4, routerCV4, -1, 8, 2, 2 * 84, l.rc, 0, "", 24, 24, 195},
		{"ping into a blackhole, dropped", 1, clientV4, "198.19.98.7", -1, 8, 2, 2 * 84, l.rc, 0, "", 24, 24, 128},
	} {
		got := find(w.proto, w.src, w.dst, w.sport, w.dport)
		if len(got) != 1 {
			t.Errorf("%s: %d records, want exactly 1 (each packet has one fate): %v", w.what, len(got), got)
			continue
		}
		r := got[0]
		nh := r.NextHop4
		if w.proto == 58 || strings.Contains(w.src, ":") {
			nh = r.NextHop6
		}
		desc := fmt.Sprintf("in %s out %s nh %s masks %d/%d fwd %d pkts %d bytes %d", deref(r.Input), deref(r.Output),
			nh, r.SrcMask, r.DstMask, r.FwdStatus, r.Packets, r.Bytes)
		t.Logf("%s: %s", w.what, desc)
		if w.packets != 0 && (r.Packets != w.packets || r.Bytes != w.bytes) {
			t.Errorf("%s: %d pkts %d bytes, sent %d pkts %d bytes", w.what, r.Packets, r.Bytes, w.packets, w.bytes)
		}
		if deref(r.Input) != strconv.Itoa(w.in) || deref(r.Output) != strconv.Itoa(w.outIf) ||
			r.FwdStatus != w.fwd || r.SrcMask != w.srcMask {
			t.Errorf("%s: %s; want in %d out %d fwd %d src mask %d", w.what, desc, w.in, w.outIf, w.fwd, w.srcMask)
		}
		if w.fwd == 64 && (nh != w.nextHop || r.DstMask != w.dstMask) {
			t.Errorf("%s: next hop %s dst mask %d, want %s /%d", w.what, nh, r.DstMask, w.nextHop, w.dstMask)
		}
	}
}

// TestHostModeOnRouter: host mode on the same router counts as before,
// both directions on every interface: a forwarded packet appears where it
// comes in (ingress) and where it leaves (egress).
func TestHostModeOnRouter(t *testing.T) {
	requireRoot(t, "nfcapd", "nfdump")
	bin := buildHostflow(t)
	l := newRouterNet(t)
	dir := t.TempDir()
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "2055", "-t", "3600", "-v"))
	// The daemon sends its templates first thing: nfcapd must be bound.
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second)
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--interfaces", "rc0,rs0",
		"--collector", "netflow9+udp://127.0.0.1:2055", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const pings = 3
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV4)
	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)
	l.rtr.waitUDPQueueEmpty(t, 2055, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)

	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	type key struct {
		src, dst string
		typ      int
		dir      int
		ifindex  string
	}
	got := map[key]uint64{}
	for _, r := range recs {
		r.normalize()
		if r.Proto != 1 || r.ICMPType == nil || r.Direction == nil {
			continue
		}
		ifx := deref(r.Input)
		if *r.Direction == 1 {
			ifx = deref(r.Output)
		}
		got[key{r.SrcAddress, r.DstAddress, *r.ICMPType, *r.Direction, ifx}] += r.Packets
	}
	rc, rs := strconv.Itoa(l.rc), strconv.Itoa(l.rs)
	for _, k := range []key{
		{clientV4, serverV4, 8, 0, rc}, // request in on the client side
		{clientV4, serverV4, 8, 1, rs}, // and out on the server side
		{serverV4, clientV4, 0, 0, rs}, // reply in on the server side
		{serverV4, clientV4, 0, 1, rc}, // and out on the client side
	} {
		if got[k] != pings {
			t.Errorf("%+v: %d packets, want %d (all records: %v)", k, got[k], pings, got)
		}
	}
}
