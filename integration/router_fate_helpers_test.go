package integration

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fate lab is the router lab (newRouterNet) with a second link from
// the router to the server, which table 100 routes to, and what the fate
// scenarios need:
//
//		router rp0 198.19.30.1/24 fd00:30::1/64 ── sp0 198.19.30.2 fd00:30::2 server
//
//	  - ip rule: from 198.18.10.3 / fd00:10::3 (a second client address)
//	    lookup table 100, whose default route goes via the server's sp0;
//	  - strict reverse-path filtering (rp_filter 1) on the router, and a
//	    source the client may spoof, 198.19.20.77 (on its lo), which the
//	    router routes to rs0;
//	  - no ICMP rate limit on the router, so every packet sent with TTL 1
//	    gets its time-exceeded message back;
//	  - an nftables forward chain (table inet hffate, chain hffwd) for the
//	    drops, rules with counters.
type fateLab struct {
	*routerLab
	rp int // the router's ifindex towards the server's sp0
}

const (
	policyV4, policyV6     = "198.18.10.3", "fd00:10::3" // client sources that table 100 routes
	routerPV4, routerPV6   = "198.19.30.1", "fd00:30::1"
	serverPV4, serverPV6   = "198.19.30.2", "fd00:30::2" // table 100's next hop
	spoofedV4              = "198.19.20.77"              // a source behind rs0, sent from the client
	noRouteV4, noRouteV6   = "198.19.99.1", "fd00:98::1" // no route on the router (no default)
	fateTable, fateChain   = "hffate", "hffwd"
	fateUDPSize            = 100 // UDP payload of every scenario's datagrams
	fateV4UDP, fateV6UDP   = 20 + 8 + fateUDPSize, 40 + 8 + fateUDPSize
	fateV4Ping, fateV6Ping = 84, 104 // ping's default 56-byte payload
)

func newFateNet(t *testing.T) *fateLab {
	t.Helper()
	l := &fateLab{routerLab: newRouterNet(t)}
	link(t, l.rtr, l.server, "rp0", "sp0", routerPV4, serverPV4, 24, routerPV6, serverPV6, 64)
	l.rp = ifindex(t, l.rtr, "rp0")

	l.client.run(t, "ip", "addr", "add", policyV4+"/24", "dev", "cr0")
	l.client.run(t, "ip", "addr", "add", policyV6+"/64", "dev", "cr0", "nodad")
	l.client.run(t, "ip", "addr", "add", spoofedV4+"/32", "dev", "lo")
	l.client.run(t, "ip", "link", "set", "lo", "up")
	// No neighbour discovery for the second client addresses either.
	cmac := mac(t, l.client, "cr0")
	for _, a := range []string{policyV4, policyV6} {
		l.rtr.run(t, "ip", "neigh", "replace", a, "lladdr", cmac, "dev", "rc0", "nud", "permanent")
	}

	l.rtr.run(t, "ip", "rule", "add", "from", policyV4, "lookup", "100")
	l.rtr.run(t, "ip", "route", "add", "default", "via", serverPV4, "dev", "rp0", "table", "100")
	l.rtr.run(t, "ip", "-6", "rule", "add", "from", policyV6, "lookup", "100")
	l.rtr.run(t, "ip", "-6", "route", "add", "default", "via", serverPV6, "dev", "rp0", "table", "100")
	l.rtr.run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.rc0.rp_filter=1",
		"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
	// The server takes table 100's packets on sp0 though it answers via
	// sr0: no reverse-path filter there (a netns inherits the host's).
	l.server.run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.sp0.rp_filter=0", "net.ipv4.conf.sr0.rp_filter=0")

	l.rtr.run(t, "nft", "add", "table", "inet", fateTable)
	l.rtr.run(t, "nft", "add", "chain", "inet", fateTable, fateChain, "{ type filter hook forward priority filter; policy accept; }")
	return l
}

// nftDrop adds a forward rule dropping UDP to dst:port, with a counter
// and the comment tag.
func (l *fateLab) nftDrop(t *testing.T, dst string, port int, tag string) {
	t.Helper()
	family := "ip"
	if strings.Contains(dst, ":") {
		family = "ip6"
	}
	l.rtr.run(t, "nft", "add", "rule", "inet", fateTable, fateChain, family, "daddr", dst, "udp", "dport", strconv.Itoa(port),
		"counter", "drop", "comment", strconv.Quote(tag))
}

// nftDropped returns the packets the drop rule tagged tag counted.
func (l *fateLab) nftDropped(t *testing.T, tag string) uint64 {
	t.Helper()
	out := l.rtr.run(t, "nft", "list", "chain", "inet", fateTable, fateChain)
	m := regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment ` + regexp.QuoteMeta(strconv.Quote(tag))).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no drop rule %q:\n%s", tag, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// fateSink is a UDP socket (on the server, in the fate tests) that counts
// what arrives.
type fateSink struct {
	port int
	n    atomic.Uint64
}

// newFateSink is a fateSink on ip, on a port the kernel chooses.
func newFateSink(t *testing.T, ns *namespace, ip string) *fateSink {
	t.Helper()
	return listenSink(t, ns, net.JoinHostPort(ip, "0"))
}

// listenSink reads and counts datagrams on addr in ns until the test ends.
func listenSink(t *testing.T, ns *namespace, addr string) *fateSink {
	t.Helper()
	s := &fateSink{}
	var c net.PacketConn
	ns.do(t, func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	s.port = c.LocalAddr().(*net.UDPAddr).Port
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			s.n.Add(1)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// wait waits (bounded) until the sink has received want datagrams, and
// fails if it has received any other number.
func (s *fateSink) wait(t *testing.T, what string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second) // a starved machine is slow; the wait ends as soon as want arrives
	for s.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.n.Load(); got != want {
		t.Fatalf("%s: the server received %d datagrams, want %d", what, got, want)
	}
}

// udpSocket opens an unconnected UDP socket on src (port chosen by the
// kernel) inside ns, with the given TTL or hop limit (0: the default).
// Unconnected, so that the ICMP errors some scenarios cause never make a
// send fail.
func udpSocket(t *testing.T, ns *namespace, src string, hops int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	ns.do(t, func() error {
		lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
			if hops == 0 {
				return nil
			}
			var serr error
			err := rc.Control(func(fd uintptr) {
				if strings.HasSuffix(network, "6") {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, hops)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}}
		network := "udp4"
		if strings.Contains(src, ":") {
			network = "udp6"
		}
		pc, err := lc.ListenPacket(t.Context(), network, net.JoinHostPort(src, "0"))
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUDP sends n datagrams of fateUDPSize bytes on c to dst:port and
// returns c's port.
func sendUDP(t *testing.T, c *net.UDPConn, dst string, port, n int) int {
	t.Helper()
	to := &net.UDPAddr{IP: net.ParseIP(dst), Port: port}
	payload := make([]byte, fateUDPSize)
	for i := range n {
		if _, err := c.WriteToUDP(payload, to); err != nil {
			t.Fatalf("send %d of %d to %v: %v", i+1, n, to, err)
		}
	}
	return c.LocalAddr().(*net.UDPAddr).Port
}

// snmpCounter returns counter name of ns's /proc/net/snmp (table "Ip:",
// "Icmp:" ...), /proc/net/snmp6 ("Icmp6InTimeExcds") or /proc/net/netstat
// ("TcpExt:" IPReversePathFilter, "IpExt:" InNoRoutes).
func snmpCounter(t *testing.T, ns *namespace, file, table, name string) uint64 {
	t.Helper()
	out := ns.run(t, "cat", "/proc/net/"+file)
	lines := strings.Split(out, "\n")
	if file == "snmp6" {
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == name {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				return n
			}
		}
		t.Fatalf("/proc/net/snmp6 has no %s", name)
	}
	// Tables come as a header line and a value line, both starting with
	// the table's name.
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != table+":" || len(v) != len(h) || v[0] != h[0] {
			continue
		}
		for j := range h {
			if h[j] == name {
				n, err := strconv.ParseUint(v[j], 10, 64)
				if err != nil {
					t.Fatalf("/proc/net/%s %s %s: %v", file, table, name, err)
				}
				return n
			}
		}
	}
	t.Fatalf("/proc/net/%s has no %s %s", file, table, name)
	return 0
}

// waitCounter waits (bounded) until counter reaches want and returns it.
func waitCounter(read func() uint64, want uint64) uint64 {
	deadline := time.Now().Add(20 * time.Second) // a starved machine is slow; the wait ends as soon as want arrives
	n := read()
	for n < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = read()
	}
	return n
}

// fateWant is what one scenario's flow must show in a collector: the
// packets of each forwardingStatus (exactly these statuses, no other), and
// for the forwarded packets their egress interface and next hop.
type fateWant struct {
	what     string
	proto    int
	src, dst string
	// sport/dport match UDP; icmpType >= 0 matches ICMP by type.
	sport, dport int
	icmpType     int
	in           int
	packets      map[int]uint64 // forwardingStatus -> packets
	pktBytes     uint64         // IP bytes of each packet
	out          int            // egress interface of the forwarded packets
	nextHop      string         // their next hop
}

func (w fateWant) matches(r fateRecord) bool {
	if r.proto != w.proto || r.src != w.src || r.dst != w.dst {
		return false
	}
	if w.icmpType >= 0 {
		return r.icmpType == w.icmpType
	}
	return r.sport == w.sport && r.dport == w.dport
}

// checkFate requires the records of w's flow in one collector's output to
// add up, per forwardingStatus, to exactly w's packets and bytes, from the
// ingress interface w.in, forwarded ones with w's egress interface and
// next hop, dropped and consumed ones with neither.
func checkFate(t *testing.T, collector string, recs []fateRecord, w fateWant) {
	t.Helper()
	got := map[int]uint64{}
	gotBytes := map[int]uint64{}
	var mine []fateRecord
	for _, r := range recs {
		if !w.matches(r) {
			continue
		}
		mine = append(mine, r)
		got[r.status] += r.packets
		gotBytes[r.status] += r.bytes
		bad := r.in != w.in
		switch {
		case r.status == 64:
			bad = bad || r.out != w.out || r.nextHop != w.nextHop
		default:
			bad = bad || r.out != 0 || r.nextHop != ""
		}
		if bad {
			t.Errorf("%s %s: record %v; want in %d, forwarded out %d via %q, dropped or consumed with no egress",
				collector, w.what, r, w.in, w.out, w.nextHop)
		}
	}
	ok := len(got) == len(w.packets)
	for st, n := range w.packets {
		ok = ok && got[st] == n && gotBytes[st] == n*w.pktBytes
	}
	if !ok {
		t.Errorf("%s %s: packets per forwardingStatus %v bytes %v, want %v (%d bytes each); records: %v",
			collector, w.what, got, gotBytes, w.packets, w.pktBytes, mine)
	}
}
