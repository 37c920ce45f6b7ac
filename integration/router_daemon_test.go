package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// nfRouterRecord is what nfdump shows of a router-mode record.
type nfRouterRecord struct {
	nfRecord
	NextHop4  string `json:"ip4_next_hop"`
	SrcMask   int    `json:"src_mask"`
	DstMask   int    `json:"dst_mask"`
	FwdStatus int    `json:"fwd_status"`
}

// TestRouterModeDaemon runs the daemon with --mode router on the lab's
// router, exporting NetFlow v9 to nfcapd there (nfdump 1.7.1 decodes
// forwardingStatus from v9 only), and checks what a hardware router's
// NetFlow would say: each forwarded packet counted once, in and out
// interfaces, next hop, prefix lengths, and forwarded / dropped / consumed.
func TestRouterModeDaemon(t *testing.T) {
	requireRoot(t, "nfcapd", "nfdump")
	bin := buildHostflow(t)
	l := newRouterNet(t)
	dir := t.TempDir()
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "2055", "-t", "3600"))
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--mode", "router", "--interfaces", "rc0,rs0",
		"--collector", "netflow9+udp://127.0.0.1:2055", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const pings = 3
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV4)
	l.client.run(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", routerCV4)
	// The blackhole answers nothing: ping fails, as it should.
	_ = l.client.command("ping", "-c", "2", "-i", "0.2", "-W", "1", "198.19.98.7").Run()

	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	nfcapd.stop(t, 10*time.Second)

	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRouterRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	find := func(src, dst string, icmpType int) []nfRouterRecord {
		var got []nfRouterRecord
		for _, r := range recs {
			r.normalize()
			if r.Proto == 1 && r.SrcAddress == src && r.DstAddress == dst && r.ICMPType != nil && *r.ICMPType == icmpType {
				got = append(got, r)
			}
		}
		return got
	}
	type want struct {
		what             string
		src, dst         string
		icmpType         int
		packets          uint64
		in, outIf        int
		nextHop          string
		srcMask, dstMask int
		fwd              int
	}
	for _, w := range []want{
		{"echo request, forwarded", clientV4, serverV4, 8, pings, l.rc, l.rs, serverV4, 24, 25, 64},
		{"echo reply, forwarded", serverV4, clientV4, 0, pings, l.rs, l.rc, clientV4, 25, 24, 64},
		{"ping to the router, consumed", clientV4, routerCV4, 8, 2, l.rc, 0, "0.0.0.0", 24, 24, 192},
		{"ping into a blackhole, dropped", clientV4, "198.19.98.7", 8, 2, l.rc, 0, "0.0.0.0", 24, 24, 128},
	} {
		got := find(w.src, w.dst, w.icmpType)
		if len(got) != 1 {
			t.Errorf("%s: %d records, want exactly 1 (counted once, at ingress): %v", w.what, len(got), got)
			continue
		}
		r := got[0]
		desc := fmt.Sprintf("in %s out %s nh %s masks %d/%d fwd %d pkts %d", deref(r.Input), deref(r.Output),
			r.NextHop4, r.SrcMask, r.DstMask, r.FwdStatus, r.Packets)
		t.Logf("%s: %s", w.what, desc)
		if r.Packets != w.packets || deref(r.Input) != strconv.Itoa(w.in) || deref(r.Output) != strconv.Itoa(w.outIf) ||
			r.FwdStatus != w.fwd || r.SrcMask != w.srcMask {
			t.Errorf("%s: %s; want pkts %d in %d out %d fwd %d src mask %d", w.what, desc, w.packets, w.in, w.outIf, w.fwd, w.srcMask)
		}
		if w.fwd == 64 && (r.NextHop4 != w.nextHop || r.DstMask != w.dstMask) {
			t.Errorf("%s: next hop %s dst mask %d, want %s /%d", w.what, r.NextHop4, r.DstMask, w.nextHop, w.dstMask)
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
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "2055", "-t", "3600"))
	hf := start(t, l.rtr.command(bin, daemonArgs(t, "--interfaces", "rc0,rs0",
		"--collector", "netflow9+udp://127.0.0.1:2055", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const pings = 3
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV4)
	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
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
