package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nfRecord is the part of an `nfdump -o json` record the tests read.
type nfRecord struct {
	Type       string `json:"type"`
	First      string `json:"first"`
	Last       string `json:"last"`
	Proto      int    `json:"proto"`
	Src4       string `json:"src4_addr"`
	Dst4       string `json:"dst4_addr"`
	Src6       string `json:"src6_addr"`
	Dst6       string `json:"dst6_addr"`
	SrcPort    int    `json:"src_port"`
	DstPort    int    `json:"dst_port"`
	ICMPType   *int   `json:"icmp_type"`
	ICMPCode   *int   `json:"icmp_code"`
	Packets    uint64 `json:"in_packets"`
	Bytes      uint64 `json:"in_bytes"`
	Input      *int   `json:"input_snmp"`
	Output     *int   `json:"output_snmp"`
	Direction  *int   `json:"direction"`
	TCPFlags   string `json:"tcp_flags"`
	SrcTos     *int   `json:"src_tos"`
	SrcAddress string `json:"-"`
	DstAddress string `json:"-"`
}

func (r *nfRecord) normalize() {
	r.SrcAddress, r.DstAddress = r.Src4, r.Dst4
	if r.Src6 != "" {
		r.SrcAddress, r.DstAddress = r.Src6, r.Dst6
	}
}

func (r nfRecord) String() string {
	return fmt.Sprintf("proto %d %s:%d -> %s:%d pkts %d bytes %d dir %v in %v out %v",
		r.Proto, r.SrcAddress, r.SrcPort, r.DstAddress, r.DstPort, r.Packets, r.Bytes,
		deref(r.Direction), deref(r.Input), deref(r.Output))
}

func deref(p *int) string {
	if p == nil {
		return "-"
	}
	return strconv.Itoa(*p)
}

// nfdumpTime parses nfdump's local-time timestamps.
func nfdumpTime(t *testing.T, s string) time.Time {
	t.Helper()
	for _, layout := range []string{"2006-01-02T15:04:05.000", "2006-01-02T15:04:05"} {
		if ts, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return ts
		}
	}
	t.Fatalf("nfdump time %q", s)
	return time.Time{}
}

// TestEndToEndNfcapd runs hostflow in a namespace joined to another by a
// veth pair, exporting to nfcapd, and checks what nfdump reads back against
// the traffic sent and the interface counters: IPFIX from the TC hooks, and
// NetFlow v9 from the socket-filter fallback.
func TestEndToEndNfcapd(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "nfcapd", "nfdump", "ping", "sysctl")
	bin := buildHostflow(t)
	for _, tc := range []struct {
		name, scheme, capture string
	}{
		{"ipfix-tc", "ipfix+udp", "tc"},
		{"netflow9-socket", "netflow9+udp", "socket"},
	} {
		t.Run(tc.name, func(t *testing.T) { testEndToEnd(t, bin, tc.scheme, tc.capture) })
	}
}

func testEndToEnd(t *testing.T, bin, scheme, capture string) {

	a := newNamespace(t, "hf-e2e-a")
	b := newNamespace(t, "hf-e2e-b")
	p := newVethPair(t, a, b, "hfp0", "hfp1")
	idx := ifindex(t, a, "hfp0")

	dir := t.TempDir()
	nfcapd := start(t, a.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "4739", "-t", "3600", "-I", "hostflow", "-v"))
	nfcapd.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	a.waitQuiet(t, "hfp0", time.Second, 20*time.Second)

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfp0", "--collector", scheme+"://127.0.0.1:4739",
		"--capture", capture, "--poll-interval", "200ms", "--active-timeout", "60s", "--idle-timeout", "15s")...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)

	windowStart := time.Now().Add(-time.Second) // nfdump keeps milliseconds; allow rounding
	before := a.stats(t, "hfp0")

	const udpN, udpSize, pings, tcpSize = 10, 100, 4, 200_000
	udp4c, udp4s := udpEcho(t, a, b, p.v4A, p.v4B, udpN, udpSize)
	udp6c, udp6s := udpEcho(t, a, b, p.v6A, p.v6B, udpN, udpSize)
	a.run(t, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", p.v4B)
	a.run(t, "ping", "-6", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", p.v6B)
	tcp4c, tcp4s := tcpTransfer(t, a, b, p.v4A, p.v4B, tcpSize)
	tcp6c, tcp6s := tcpTransfer(t, a, b, p.v6A, p.v6B, tcpSize)

	after := a.waitQuiet(t, "hfp0", 500*time.Millisecond, 10*time.Second)
	windowEnd := time.Now().Add(time.Second)
	hf.stop(t, 20*time.Second)
	a.waitUDPQueueEmpty(t, 4739, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)

	file := nfdumpFile(t, dir)
	out := sh(t, "nfdump", "-r", file, "-o", "json")
	var recs []nfRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	if len(recs) == 0 {
		t.Fatalf("nfdump read no flow from %s", file)
	}

	// Totals: every packet that crossed hfp0 while hostflow ran is in
	// exactly one exported flow, and octets are IP bytes (frame - 14).
	var egress, ingress linkStats
	for i := range recs {
		r := &recs[i]
		r.normalize()
		t.Logf("flow %s", r)
		if r.Direction == nil {
			t.Fatalf("record without flowDirection: %s", r)
		}
		switch *r.Direction {
		case 1:
			egress.TxPackets += r.Packets
			egress.TxBytes += r.Bytes
			if r.Output == nil || *r.Output != idx {
				t.Errorf("egress flow %s: egressInterface %s, want %d", r, deref(r.Output), idx)
			}
		case 0:
			ingress.RxPackets += r.Packets
			ingress.RxBytes += r.Bytes
			if r.Input == nil || *r.Input != idx {
				t.Errorf("ingress flow %s: ingressInterface %s, want %d", r, deref(r.Input), idx)
			}
		default:
			t.Errorf("flow %s: direction %d", r, *r.Direction)
		}
		first, last := nfdumpTime(t, r.First), nfdumpTime(t, r.Last)
		if first.After(last) || first.Before(windowStart) || last.After(windowEnd) {
			t.Errorf("flow %s: first %v last %v outside [%v, %v]", r, first, last, windowStart, windowEnd)
		}
	}
	txPk, txBy := after.TxPackets-before.TxPackets, after.TxBytes-before.TxBytes
	rxPk, rxBy := after.RxPackets-before.RxPackets, after.RxBytes-before.RxBytes
	t.Logf("hfp0 sent %d frames (%d bytes), received %d (%d bytes); exported egress %d pkts %d bytes, ingress %d pkts %d bytes",
		txPk, txBy, rxPk, rxBy, egress.TxPackets, egress.TxBytes, ingress.RxPackets, ingress.RxBytes)
	if egress.TxPackets != txPk || egress.TxBytes != txBy-14*txPk {
		t.Errorf("egress: exported %d pkts %d bytes, interface sent %d frames = %d IP bytes",
			egress.TxPackets, egress.TxBytes, txPk, txBy-14*txPk)
	}
	if ingress.RxPackets != rxPk || ingress.RxBytes != rxBy-14*rxPk {
		t.Errorf("ingress: exported %d pkts %d bytes, interface received %d frames = %d IP bytes",
			ingress.RxPackets, ingress.RxBytes, rxPk, rxBy-14*rxPk)
	}

	// Per flow: present once per direction with the exact counts sent.
	type want struct {
		name           string
		proto          int
		src, dst       string
		sport, dport   int
		dir            int
		packets, bytes uint64 // 0: only checked in the totals
		flags          string // letters tcp_flags must contain
	}
	wants := []want{
		{"udp4 request", 17, p.v4A, p.v4B, udp4c, udp4s, 1, udpN, udpN * (20 + 8 + udpSize), ""},
		{"udp4 reply", 17, p.v4B, p.v4A, udp4s, udp4c, 0, udpN, udpN * (20 + 8 + udpSize), ""},
		{"udp6 request", 17, p.v6A, p.v6B, udp6c, udp6s, 1, udpN, udpN * (40 + 8 + udpSize), ""},
		{"udp6 reply", 17, p.v6B, p.v6A, udp6s, udp6c, 0, udpN, udpN * (40 + 8 + udpSize), ""},
		{"icmp echo", 1, p.v4A, p.v4B, -1, 8 << 8, 1, pings, pings * 84, ""},
		{"icmp echo reply", 1, p.v4B, p.v4A, -1, 0, 0, pings, pings * 84, ""},
		{"icmpv6 echo", 58, p.v6A, p.v6B, -1, 128 << 8, 1, pings, pings * 104, ""},
		{"icmpv6 echo reply", 58, p.v6B, p.v6A, -1, 129 << 8, 0, pings, pings * 104, ""},
		{"tcp4 client", 6, p.v4A, p.v4B, tcp4c, tcp4s, 1, 0, 0, "SF"},
		{"tcp4 server", 6, p.v4B, p.v4A, tcp4s, tcp4c, 0, 0, 0, "ASF"},
		{"tcp6 client", 6, p.v6A, p.v6B, tcp6c, tcp6s, 1, 0, 0, "SF"},
		{"tcp6 server", 6, p.v6B, p.v6A, tcp6s, tcp6c, 0, 0, 0, "ASF"},
	}
	for _, w := range wants {
		var got []nfRecord
		for _, r := range recs {
			if r.Proto != w.proto || r.SrcAddress != w.src || r.DstAddress != w.dst || *r.Direction != w.dir {
				continue
			}
			if w.sport >= 0 && (r.SrcPort != w.sport || r.DstPort != w.dport) {
				continue
			}
			if w.sport < 0 && icmpTypeCode(r) != w.dport {
				continue
			}
			got = append(got, r)
		}
		if len(got) != 1 {
			t.Errorf("%s: %d records, want exactly 1: %v", w.name, len(got), got)
			continue
		}
		r := got[0]
		if w.packets != 0 && (r.Packets != w.packets || r.Bytes != w.bytes) {
			t.Errorf("%s: %d pkts %d bytes, sent %d pkts %d bytes", w.name, r.Packets, r.Bytes, w.packets, w.bytes)
		}
		if w.proto == 6 && w.dir == 1 && r.Bytes < tcpSize {
			t.Errorf("%s: %d bytes, want at least %d", w.name, r.Bytes, tcpSize)
		}
		for _, f := range w.flags {
			if !strings.ContainsRune(r.TCPFlags, f) {
				t.Errorf("%s: tcp flags %q lack %c", w.name, r.TCPFlags, f)
			}
		}
	}

	// The collector saw every message in sequence.
	info := sh(t, "nfdump", "-I", "-r", file)
	m := regexp.MustCompile(`(?m)^Sequence failures:\s*(\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("nfdump -I has no sequence failures line:\n%s", info)
	}
	if m[1] != "0" {
		t.Errorf("nfdump -I: %s sequence failures\n%s", m[1], info)
	}
}

// icmpTypeCode returns type<<8|code as nfdump shows it.
func icmpTypeCode(r nfRecord) int {
	if r.ICMPType != nil && r.ICMPCode != nil {
		return *r.ICMPType<<8 | *r.ICMPCode
	}
	return r.DstPort
}
