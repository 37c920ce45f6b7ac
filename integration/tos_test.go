package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"golang.org/x/sys/unix"
)

// tosSender sends UDP datagrams of one 5-tuple from a to a discarding
// listener in b, setting the IPv4 ToS byte or IPv6 Traffic Class before
// each burst. It returns the client's and server's ports.
func tosSender(t *testing.T, a, b *namespace, srcIP, dstIP string, size int, bursts []tosBurst) (cport, sport int) {
	t.Helper()
	var srv net.PacketConn
	b.do(t, func() (err error) {
		srv, err = net.ListenPacket("udp", net.JoinHostPort(dstIP, "0"))
		return err
	})
	defer srv.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	sport = srv.LocalAddr().(*net.UDPAddr).Port
	var c *net.UDPConn
	a.do(t, func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(srcIP)}}
		conn, err := d.Dial("udp", net.JoinHostPort(dstIP, strconv.Itoa(sport)))
		if err != nil {
			return err
		}
		c = conn.(*net.UDPConn)
		return nil
	})
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v6 := netip.MustParseAddr(srcIP).Is6()
	payload := make([]byte, size)
	for _, burst := range bursts {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(burst.tos))
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(burst.tos))
			}
		})
		if err != nil || serr != nil {
			t.Fatalf("set ToS %#x: %v %v", burst.tos, err, serr)
		}
		for range burst.n {
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("udp send: %v", err)
			}
		}
	}
	return c.LocalAddr().(*net.UDPAddr).Port, sport
}

type tosBurst struct {
	tos uint8
	n   int
}

// gfListener collects the datagrams sent to a UDP address in ns, for
// goflow2's decoder.
type gfListener struct {
	conn net.PacketConn
	done chan struct{} // closed when the reader has returned
	mu   sync.Mutex
	msgs [][]byte
}

func newGFListener(t *testing.T, ns *namespace, addr string) *gfListener {
	t.Helper()
	l := &gfListener{done: make(chan struct{})}
	ns.do(t, func() (err error) {
		l.conn, err = net.ListenPacket("udp", addr)
		return err
	})
	t.Cleanup(func() { l.conn.Close(); <-l.done })
	go func() {
		defer close(l.done)
		buf := make([]byte, 65536)
		for {
			n, _, err := l.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, bytes.Clone(buf[:n]))
			l.mu.Unlock()
		}
	}()
	return l
}

// gfFlow is a data record as goflow2 decodes it: raw values by field type.
type gfFlow map[uint16][]byte

func (f gfFlow) uint(typ uint16) uint64 {
	var v uint64
	for _, b := range f[typ] {
		v = v<<8 | uint64(b)
	}
	return v
}

// records closes the listener, waits for its reader (so that a datagram it
// has read is not missed), and decodes every datagram received, in order,
// with one goflow2 template system. Datagrams still queued on the socket
// are lost: wait for its queue to empty first.
func (l *gfListener) records(t *testing.T) []gfFlow {
	t.Helper()
	l.conn.Close()
	<-l.done
	l.mu.Lock()
	msgs := slicesClone(l.msgs)
	l.mu.Unlock()
	ts := netflow.CreateTemplateSystem()
	var out []gfFlow
	for i, msg := range msgs {
		var v9 netflow.NFv9Packet
		var ipfix netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), ts, &v9, &ipfix); err != nil {
			t.Fatalf("goflow2: message %d: %v", i, err)
		}
		sets := ipfix.FlowSets
		if binary.BigEndian.Uint16(msg) == 9 {
			sets = v9.FlowSets
		}
		for _, s := range sets {
			ds, ok := s.(netflow.DataFlowSet)
			if !ok {
				continue
			}
			for _, r := range ds.Records {
				f := gfFlow{}
				for _, v := range r.Values {
					if b, ok := v.Value.([]byte); ok {
						f[v.Type] = b
					}
				}
				out = append(out, f)
			}
		}
	}
	return out
}

func slicesClone(s [][]byte) [][]byte { return append([][]byte(nil), s...) }

// TestToSSplitsFlows runs the daemon in a namespace and sends UDP
// datagrams of one 5-tuple with two ToS values, interleaved (IPv4 ToS and
// IPv6 Traffic Class): each value must be its own flow, with exactly the
// packets sent with it and its ToS, as nfdump (IPFIX, via nfcapd) and
// goflow2's decoder (IPFIX and NetFlow v9) decode them.
func TestToSSplitsFlows(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "nfcapd", "nfdump", "sysctl")
	bin := buildHostflow(t)

	a := newNamespace(t, "hf-tos-a")
	b := newNamespace(t, "hf-tos-b")
	p := newVethPair(t, a, b, "hft0", "hft1")

	dir := t.TempDir()
	nfcapd := start(t, a.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "4739", "-t", "3600", "-I", "hostflow", "-v"))
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	gfIPFIX := newGFListener(t, a, "127.0.0.1:4740")
	gfV9 := newGFListener(t, a, "127.0.0.1:4741")
	a.waitQuiet(t, "hft0", time.Second, 20*time.Second)

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hft0", "--direction", "egress",
		"--collector", "ipfix+udp://127.0.0.1:4739", "--collector", "ipfix+udp://127.0.0.1:4740",
		"--collector", "netflow9+udp://127.0.0.1:4741",
		"--poll-interval", "200ms", "--active-timeout", "60s", "--idle-timeout", "60s")...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)

	// EF and AF11, with a second EF burst after the AF11 one: the EF
	// flow must add both up.
	const size = 100
	bursts := []tosBurst{{0xb8, 3}, {0x28, 4}, {0xb8, 2}}
	c4, s4 := tosSender(t, a, b, p.v4A, p.v4B, size, bursts)
	c6, s6 := tosSender(t, a, b, p.v6A, p.v6B, size, bursts)
	a.waitQuiet(t, "hft0", 500*time.Millisecond, 10*time.Second)
	hf.stop(t, 20*time.Second)                   // exports every cached flow
	a.waitUDPQueueEmpty(t, 4739, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)
	a.waitUDPQueueEmpty(t, 4740, 10*time.Second) // so have the goflow2 listeners
	a.waitUDPQueueEmpty(t, 4741, 10*time.Second)

	type want struct {
		src, dst     string
		sport, dport int
		tos          uint8
		packets      uint64
		bytes        uint64
	}
	wants := []want{
		{p.v4A, p.v4B, c4, s4, 0xb8, 5, 5 * (20 + 8 + size)},
		{p.v4A, p.v4B, c4, s4, 0x28, 4, 4 * (20 + 8 + size)},
		{p.v6A, p.v6B, c6, s6, 0xb8, 5, 5 * (40 + 8 + size)},
		{p.v6A, p.v6B, c6, s6, 0x28, 4, 4 * (40 + 8 + size)},
	}

	// nfdump: the 5-tuple has exactly two records per family, one per
	// ToS, with its counts.
	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	for _, w := range wants {
		var got []nfRecord
		others := 0
		for _, r := range recs {
			r.normalize()
			if r.Proto != 17 || r.SrcAddress != w.src || r.DstAddress != w.dst || r.SrcPort != w.sport || r.DstPort != w.dport {
				continue
			}
			if r.SrcTos != nil && *r.SrcTos == int(w.tos) {
				got = append(got, r)
			} else {
				others++
			}
		}
		if len(got) != 1 || others != 1 {
			t.Errorf("nfdump: %s -> %s: %d records with ToS %#x and %d others, want 1 and 1: %v", w.src, w.dst, len(got), w.tos, others, recs)
			continue
		}
		if r := got[0]; r.Packets != w.packets || r.Bytes != w.bytes {
			t.Errorf("nfdump: %s -> %s ToS %#x: %d packets %d bytes, want %d and %d", w.src, w.dst, w.tos, r.Packets, r.Bytes, w.packets, w.bytes)
		}
	}

	// goflow2: the same, in IPFIX and in v9 (field types 8/27 and 12/28
	// addresses, 7/11 ports, 5 ToS, 2 packets, 1 bytes).
	for _, l := range []struct {
		name string
		gf   *gfListener
	}{{"ipfix", gfIPFIX}, {"netflow9", gfV9}} {
		recs := l.gf.records(t)
		for _, w := range wants {
			src, dst := netip.MustParseAddr(w.src), netip.MustParseAddr(w.dst)
			srcT, dstT := uint16(8), uint16(12)
			if src.Is6() {
				srcT, dstT = 27, 28
			}
			var got []gfFlow
			for _, r := range recs {
				if !bytes.Equal(r[srcT], src.AsSlice()) || !bytes.Equal(r[dstT], dst.AsSlice()) ||
					r.uint(4) != 17 || r.uint(7) != uint64(w.sport) || r.uint(11) != uint64(w.dport) || r.uint(5) != uint64(w.tos) {
					continue
				}
				got = append(got, r)
			}
			if len(got) != 1 {
				t.Errorf("goflow2 %s: %s -> %s ToS %#x: %d records, want 1", l.name, w.src, w.dst, w.tos, len(got))
				continue
			}
			if pk, by := got[0].uint(2), got[0].uint(1); pk != w.packets || by != w.bytes {
				t.Errorf("goflow2 %s: %s -> %s ToS %#x: %d packets %d bytes, want %d and %d", l.name, w.src, w.dst, w.tos, pk, by, w.packets, w.bytes)
			}
		}
	}
}

// scrapeMetrics reads /metrics from addr in ns.
func scrapeMetrics(t *testing.T, ns *namespace, addr string) string {
	t.Helper()
	var body string
	ns.do(t, func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: hostflow\r\n\r\n"); err != nil {
			return err
		}
		raw, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		head, b, ok := strings.Cut(string(raw), "\r\n\r\n")
		if !ok || !strings.Contains(head, " 200 ") {
			return fmt.Errorf("GET /metrics: %.200q", head)
		}
		body = b
		return nil
	})
	return body
}

// metricValue is the value of an unlabelled metric in a scrape, -1 if
// absent.
func metricValue(body, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestObservedBeforeExport runs the daemon with a long idle timeout,
// sends traffic, and scrapes /metrics within two poll intervals and
// exporter.MaxUnread (a poll reads the kernel only when a record could
// leave, or when the last read is MaxUnread old): the observed counters
// show every packet and IP byte sent, while nothing has been exported yet.
func TestObservedBeforeExport(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)

	a := newNamespace(t, "hf-obs-a")
	b := newNamespace(t, "hf-obs-b")
	p := newVethPair(t, a, b, "hfo0", "hfo1")
	a.waitQuiet(t, "hfo0", time.Second, 20*time.Second)

	const poll = 500 * time.Millisecond
	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfo0", "--direction", "egress",
		"--metrics-enabled=true", "--metrics-listen", "127.0.0.1:9740",
		"--poll-interval", poll.String(), "--active-timeout", "600s", "--idle-timeout", "600s")...))
	hf.waitOutput(t, "msg=ready", 10*time.Second)
	before := scrapeMetrics(t, a, "127.0.0.1:9740")
	if v := metricValue(before, "hostflow_observed_packets_total"); v != 0 {
		t.Fatalf("hostflow_observed_packets_total %v before any traffic, want 0", v)
	}

	const n, size = 7, 100
	txBefore := a.stats(t, "hfo0")
	tosSender(t, a, b, p.v4A, p.v4B, size, []tosBurst{{0, n}})
	txAfter := a.stats(t, "hfo0")
	sent := txAfter.TxPackets - txBefore.TxPackets
	if sent != n {
		t.Fatalf("hfo0 sent %d frames, want %d: other traffic on the link", sent, n)
	}
	// The metrics follow the polls, which a busy machine delays: scrape
	// until the packets show (bounded), then once more a while later
	// for any excess.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if metricValue(scrapeMetrics(t, a, "127.0.0.1:9740"), "hostflow_observed_packets_total") >= n {
			break
		}
	}
	time.Sleep(2*poll + exporter.MaxUnread)
	body := scrapeMetrics(t, a, "127.0.0.1:9740")
	pk, by := metricValue(body, "hostflow_observed_packets_total"), metricValue(body, "hostflow_observed_bytes_total")
	exported := metricValue(body, "hostflow_packets_total")
	if pk != n || by != n*(20+8+size) {
		t.Errorf("observed %v packets %v bytes, sent %d packets of %d IP bytes", pk, by, n, 20+8+size)
	}
	if exported != 0 {
		t.Errorf("hostflow_packets_total %v, want 0 before any flow ends", exported)
	}
	hf.stop(t, 20*time.Second)
}
