package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/router"
	"github.com/hostflow/hostflow/templates"
)

// natTCP opens a TCP connection from client to server and returns the
// client's local address and the client address the server saw. The
// connection stays open until the test ends, so its conntrack entry is
// alive when the flows are enriched.
func natTCP(t *testing.T, l *routerLab, cIP, sIP string) (local, seen netip.AddrPort, server netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	l.server.do(t, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(sIP, "0"))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		_, _ = io.CopyN(io.Discard, c, 1000)
		_, _ = c.Write(make([]byte, 2000))
		accepted <- c
	}()
	var c net.Conn
	l.client.do(t, func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(cIP)}, Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", net.JoinHostPort(sIP, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
		return err
	})
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { sc.Close() })
	ap := func(a net.Addr) netip.AddrPort {
		p := a.(*net.TCPAddr).AddrPort()
		return netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	}
	return ap(c.LocalAddr()), ap(sc.RemoteAddr()), ap(ln.Addr())
}

// natUDP sends one datagram from client to server, which answers, and
// returns the client's local address and the source the server saw.
func natUDP(t *testing.T, l *routerLab, cIP, sIP string) (local, seen, server netip.AddrPort) {
	t.Helper()
	var srv net.PacketConn
	l.server.do(t, func() (err error) {
		srv, err = net.ListenPacket("udp", net.JoinHostPort(sIP, "0"))
		return err
	})
	defer srv.Close()
	from := make(chan net.Addr, 1)
	go func() {
		buf := make([]byte, 2048)
		n, a, err := srv.ReadFrom(buf)
		if err != nil {
			close(from)
			return
		}
		_, _ = srv.WriteTo(buf[:n], a)
		from <- a
	}()
	var c net.Conn
	l.client.do(t, func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(cIP)}}
		c, err = d.Dial("udp", net.JoinHostPort(sIP, strconv.Itoa(srv.LocalAddr().(*net.UDPAddr).Port)))
		return err
	})
	defer c.Close()
	if _, err := c.Write(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 2048)); err != nil {
		t.Fatalf("udp echo through NAT: %v", err)
	}
	a, ok := <-from
	if !ok {
		t.Fatal("server read failed")
	}
	ap := func(a net.Addr) netip.AddrPort {
		p := a.(*net.UDPAddr).AddrPort()
		return netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	}
	return ap(c.LocalAddr()), ap(a), ap(srv.LocalAddr())
}

func TestRouterModeNAT(t *testing.T) {
	l := newRouterLab(t)
	// Masquerade what leaves towards the server, with random ports so
	// that the port translation shows.
	l.rtr.run(t, "nft", "add", "table", "inet", "hfnat")
	l.rtr.run(t, "nft", "add", "chain", "inet", "hfnat", "post", "{ type nat hook postrouting priority srcnat; policy accept; }")
	l.rtr.run(t, "nft", "add", "rule", "inet", "hfnat", "post", "oifname", "rs0", "masquerade", "random")
	l.collect(t)

	type conn struct {
		name                string
		proto               uint8
		local, seen, server netip.AddrPort
		routerOut           string
	}
	var conns []conn
	for _, fam := range []struct{ c, s, r string }{{clientV4, serverV4, routerSV4}, {clientV6, serverV6, routerSV6}} {
		lo, seen, srv := natTCP(t, l, fam.c, fam.s)
		conns = append(conns, conn{"tcp " + fam.c, 6, lo, seen, srv, fam.r})
		lo, seen, srv = natUDP(t, l, fam.c, fam.s)
		conns = append(conns, conn{"udp " + fam.c, 17, lo, seen, srv, fam.r})
	}
	flows, _, _ := l.collect(t)
	// The enricher chose per-flow gets (a small table); a dump must give
	// the same answer.
	if st := l.enricher.Stats(); st.ConntrackGets == 0 {
		t.Errorf("auto mode made no conntrack get: %+v", st)
	}
	dumped := make([]exporter.Flow, len(flows))
	for i, f := range flows {
		f.EgressIfIndex, f.NextHop, f.ForwardingStatus, f.SrcPrefixLen, f.DstPrefixLen = 0, netip.Addr{}, 0, 0, 0
		f.PostNATSrc, f.PostNATDst, f.PostNATSrcPort, f.PostNATDstPort = netip.Addr{}, netip.Addr{}, 0, 0
		dumped[i] = f
	}
	l.rtr.do(t, func() error {
		e, err := router.New(router.Options{Conntrack: router.ConntrackDump})
		if err != nil {
			return err
		}
		defer e.Close()
		e.Enrich(dumped)
		return nil
	})
	for i := range flows {
		if a, b := flowString(flows[i]), flowString(dumped[i]); a != b {
			t.Errorf("auto and dump differ:\n%s\n%s", a, b)
		}
	}
	for _, c := range conns {
		if c.seen.Addr() != netip.MustParseAddr(c.routerOut) {
			t.Errorf("%s: the server saw %v: not masqueraded", c.name, c.seen)
		}
		// Client to server, counted at rc0 before NAT: post-NAT source
		// is what the server saw.
		f := one(t, flows, c.name+" c->s", c.proto, c.local.Addr().String(), c.local.Port(), c.server.Addr().String(), c.server.Port(), -1)
		if f.PostNATSrc != c.seen.Addr() || f.PostNATSrcPort != c.seen.Port() ||
			f.PostNATDst != c.server.Addr() || f.PostNATDstPort != c.server.Port() {
			t.Errorf("%s c->s: %s; the server saw %v", c.name, flowString(f), c.seen)
		}
		if int(f.EgressIfIndex) != l.rs || f.ForwardingStatus != router.StatusForwarded {
			t.Errorf("%s c->s: %s", c.name, flowString(f))
		}
		// Server to client, counted at rs0 before de-NAT: addressed to
		// the router's masquerade address; post-NAT it goes to the
		// client.
		f = one(t, flows, c.name+" s->c", c.proto, c.server.Addr().String(), c.server.Port(), c.seen.Addr().String(), c.seen.Port(), -1)
		if f.PostNATSrc != c.server.Addr() || f.PostNATSrcPort != c.server.Port() ||
			f.PostNATDst != c.local.Addr() || f.PostNATDstPort != c.local.Port() {
			t.Errorf("%s s->c: %s; want post-NAT destination %v", c.name, flowString(f), c.local)
		}
		// The kernel routes it after the de-NAT: forwarded to the
		// client, not consumed by the router it is addressed to.
		if int(f.EgressIfIndex) != l.rc || f.ForwardingStatus != router.StatusForwarded || f.NextHop != c.local.Addr() {
			t.Errorf("%s s->c: %s; want forwarded to the client on rc0", c.name, flowString(f))
		}
	}
	t.Logf("enricher stats %+v", l.enricher.Stats())

	t.Run("nfdump", func(t *testing.T) {
		requireRoot(t, "nfcapd", "nfdump")
		checkNfdump(t, l, flows, conns[0].local, conns[0].seen, conns[0].server, conns[2].local, conns[2].seen, conns[2].server)
	})
}

// checkNfdump exports the NAT test's flows in both protocols to nfcapd and
// checks what nfdump shows of the router fields for the IPv4 and IPv6
// TCP connections (client local address, what the server saw, server).
func checkNfdump(t *testing.T, l *routerLab, flows []exporter.Flow, local4, seen4, srv4, local6, seen6, srv6 netip.AddrPort) {
	for _, p := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		recs := exportToNfdump(t, l, p, flows)
		for _, c := range []struct {
			v6               bool
			local, seen, srv netip.AddrPort
			srcMask, dstMask float64
		}{{false, local4, seen4, srv4, 24, 25}, {true, local6, seen6, srv6, 64, 80}} {
			sa, da, nh, sx, dx := "src4_addr", "dst4_addr", "ip4_next_hop", "src4_xlt_ip", "dst4_xlt_ip"
			if c.v6 {
				sa, da, nh, sx, dx = "src6_addr", "dst6_addr", "ip6_next_hop", "src6_xlt_ip", "dst6_xlt_ip"
			}
			var r map[string]any
			for _, x := range recs {
				if x[sa] == c.local.Addr().String() && x[da] == c.srv.Addr().String() && x["proto"] == 6.0 &&
					x["src_port"] == float64(c.local.Port()) {
					r = x
				}
			}
			if r == nil {
				t.Errorf("%v: nfdump has no record of %v -> %v: %v", p, c.local, c.srv, recs)
				continue
			}
			t.Logf("%v: %v", p, r)
			want := map[string]any{
				"input_snmp": float64(l.rc), "output_snmp": float64(l.rs),
				nh: c.srv.Addr().String(), "src_mask": c.srcMask, "dst_mask": c.dstMask,
				"src_xlt_port": float64(c.seen.Port()), "dst_xlt_port": float64(c.srv.Port()),
				sx: c.seen.Addr().String(), dx: c.srv.Addr().String(),
				"fwd_status": 64.0,
			}
			if p == templates.IPFIX {
				// nfdump 1.7.1 decodes neither forwardingStatus nor
				// postNATSource/DestinationIPv6Address (281/282) in
				// IPFIX; it does in v9 (FORWARDING_STATUS, NSEL's
				// XLATE_*_ADDR_IPV6). Checked only if shown.
				for _, k := range []string{"fwd_status", "src6_xlt_ip", "dst6_xlt_ip"} {
					if v, ok := r[k]; !ok || v == 0.0 {
						delete(want, k)
					}
				}
			}
			for k, w := range want {
				// nfdump writes some numbers as strings: compare text.
				if fmt.Sprint(r[k]) != fmt.Sprint(w) {
					t.Errorf("%v %v: nfdump %s = %v, want %v", p, c.local, k, r[k], w)
				}
			}
		}
	}
}

// exportToNfdump exports flows with the router layout of protocol proto
// (IPFIX or NetFlow v9) to an nfcapd in the router's namespace and returns
// nfdump's JSON records, raw.
func exportToNfdump(t *testing.T, l *routerLab, proto templates.ExportProtocol, flows []exporter.Flow) []map[string]any {
	t.Helper()
	dir := t.TempDir()
	port := "4739"
	if proto == templates.NetFlowV9 {
		port = "2055"
	}
	nfcapd := start(t, l.rtr.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", port, "-t", "3600", "-I", "hostflow", "-v"))
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	var w *exporter.UDPWriter
	l.rtr.do(t, func() (err error) {
		w, err = exporter.DialUDP("127.0.0.1:" + port)
		return err
	})
	set := templates.RouterSet(proto)
	var err error
	if proto == templates.IPFIX {
		var e *exporter.IPFIX
		if e, err = exporter.NewIPFIX(exporter.IPFIXConfig{Writer: w, Templates: set}); err == nil {
			err = e.Export(flows)
			e.Close()
		}
	} else {
		var e *exporter.NetFlow9
		if e, err = exporter.NewNetFlow9(exporter.NetFlow9Config{Writer: w, Templates: set}); err == nil {
			err = e.Export(flows)
			e.Close()
		}
	}
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	pn, _ := strconv.Atoi(port)
	l.rtr.waitUDPQueueEmpty(t, pn, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)
	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []map[string]any
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	return recs
}
