package integration

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/hostflow/hostflow/router"
)

func TestRouterMode(t *testing.T) {
	l := newRouterLab(t)
	_, rc0, rs0 := l.collect(t) // link-up chatter out of the way

	const udpN, udpSize, pings = 5, 100, 3
	type tp struct{ c, s int }
	var udp, tcp, udpFar [2]tp
	for i, fam := range []struct{ c, s, far string }{{clientV4, serverV4, farV4}, {clientV6, serverV6, farV6}} {
		udp[i].c, udp[i].s = udpEcho(t, l.client, l.server, fam.c, fam.s, udpN, udpSize)
		tcp[i].c, tcp[i].s = tcpTransfer(t, l.client, l.server, fam.c, fam.s, 50_000)
		udpFar[i].c, udpFar[i].s = udpEcho(t, l.client, l.server, fam.c, fam.far, udpN, udpSize)
	}
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV4)
	l.client.run(t, "ping", "-6", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", serverV6)
	// To the router itself: consumed.
	l.client.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", routerCV4)
	l.client.run(t, "ping", "-6", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", routerCV6)
	// Dropped: no route (v4, v6), blackhole (v4), unreachable (v6).
	for _, dst := range []string{"198.19.99.1", "198.19.98.1", "fd00:99::1", "fd00:98::1"} {
		l.client.do(t, func() error {
			c, err := net.Dial("udp", net.JoinHostPort(dst, "9"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(make([]byte, udpSize))
			return err
		})
	}
	flows, rc1, rs1 := l.collect(t)
	checkTotals(t, flows, l, rc0, rc1, rs0, rs1)

	v4 := func(n int) uint64 { return uint64(n * (20 + 8 + udpSize)) }
	v6 := func(n int) uint64 { return uint64(n * (40 + 8 + udpSize)) }
	for i, fam := range []struct {
		name               string
		c, s, far, rc      string
		cLen, sLen, farLen uint8
		udpBytes           uint64
		icmpReq, icmpRep   int
		proto              uint8
		pingBytes          uint64
	}{
		{"ipv4", clientV4, serverV4, farV4, routerCV4, 24, 25, 26, v4(udpN), 8, 0, 1, 3 * 84},
		{"ipv6", clientV6, serverV6, farV6, routerCV6, 64, 80, 96, v6(udpN), 128, 129, 58, 3 * 104},
	} {
		c2s := wantRoute{in: l.rc, out: l.rs, nextHop: fam.s, srcLen: fam.cLen, dstLen: fam.sLen, status: router.StatusForwarded}
		s2c := wantRoute{in: l.rs, out: l.rc, nextHop: fam.c, srcLen: fam.sLen, dstLen: fam.cLen, status: router.StatusForwarded}

		w := c2s
		w.packets, w.bytes = udpN, fam.udpBytes
		checkFlow(t, fam.name+" udp c->s", one(t, flows, "udp c->s", 17, fam.c, uint16(udp[i].c), fam.s, uint16(udp[i].s), -1), w)
		w = s2c
		w.packets, w.bytes = udpN, fam.udpBytes
		checkFlow(t, fam.name+" udp s->c", one(t, flows, "udp s->c", 17, fam.s, uint16(udp[i].s), fam.c, uint16(udp[i].c), -1), w)

		checkFlow(t, fam.name+" tcp c->s", one(t, flows, "tcp c->s", 6, fam.c, uint16(tcp[i].c), fam.s, uint16(tcp[i].s), -1), c2s)
		checkFlow(t, fam.name+" tcp s->c", one(t, flows, "tcp s->c", 6, fam.s, uint16(tcp[i].s), fam.c, uint16(tcp[i].c), -1), s2c)

		// Via the gateway route: the next hop is the server, the
		// destination prefix the /26 or /96.
		w = wantRoute{in: l.rc, out: l.rs, nextHop: fam.s, srcLen: fam.cLen, dstLen: fam.farLen, status: router.StatusForwarded, packets: udpN, bytes: fam.udpBytes}
		checkFlow(t, fam.name+" udp c->far", one(t, flows, "udp c->far", 17, fam.c, uint16(udpFar[i].c), fam.far, uint16(udpFar[i].s), -1), w)
		w = wantRoute{in: l.rs, out: l.rc, nextHop: fam.c, srcLen: fam.farLen, dstLen: fam.cLen, status: router.StatusForwarded, packets: udpN, bytes: fam.udpBytes}
		checkFlow(t, fam.name+" udp far->c", one(t, flows, "udp far->c", 17, fam.far, uint16(udpFar[i].s), fam.c, uint16(udpFar[i].c), -1), w)

		w = c2s
		w.packets, w.bytes = pings, fam.pingBytes
		checkFlow(t, fam.name+" echo request", one(t, flows, "echo request", fam.proto, fam.c, 0, fam.s, 0, fam.icmpReq), w)
		w = s2c
		w.packets, w.bytes = pings, fam.pingBytes
		checkFlow(t, fam.name+" echo reply", one(t, flows, "echo reply", fam.proto, fam.s, 0, fam.c, 0, fam.icmpRep), w)

		// A ping to the router: consumed, no egress interface or next
		// hop; its reply leaves the router and is not counted.
		w = wantRoute{in: l.rc, srcLen: fam.cLen, dstLen: fam.cLen, status: router.StatusConsumed, packets: pings, bytes: fam.pingBytes}
		checkFlow(t, fam.name+" ping router", one(t, flows, "ping router", fam.proto, fam.c, 0, fam.rc, 0, fam.icmpReq), w)
		if got := find(flows, fam.proto, fam.rc, 0, fam.c, 0, -1); len(got) != 0 {
			t.Errorf("%s: the router's own replies were counted: %s", fam.name, flowString(got[0]))
		}
	}
	for _, d := range []struct {
		name, src, dst string
		dstLen         uint8
		srcLen         uint8
	}{
		{"v4 no route", clientV4, "198.19.99.1", 0, 24},
		{"v4 blackhole", clientV4, "198.19.98.1", 24, 24},
		{"v6 unreachable route", clientV6, "fd00:99::1", 64, 64},
		{"v6 no route", clientV6, "fd00:98::1", 0, 64},
	} {
		f := one(t, flows, d.name, 17, d.src, 0, d.dst, 9, -1)
		checkFlow(t, d.name, f, wantRoute{in: l.rc, srcLen: d.srcLen, dstLen: d.dstLen, status: router.StatusDropped,
			packets: 1, bytes: map[bool]uint64{true: v4(1), false: v6(1)}[netip.MustParseAddr(d.dst).Is4()]})
		if f.PostNATSrc.IsValid() {
			t.Errorf("%s: post-NAT source %v without conntrack", d.name, f.PostNATSrc)
		}
	}
	st := l.enricher.Stats()
	t.Logf("%d flows; enricher stats %+v", len(flows), st)
}
