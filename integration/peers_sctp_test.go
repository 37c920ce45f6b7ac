package integration

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// TestPeerNfdumpSCTPPorts exports SCTP flows next to ICMP ones to nfcapd,
// IPFIX and v9: nfdump must show the SCTP ports, and the ICMP type and
// code, exactly. With the ICMP type and code in the same template as the
// ports, nfdump 1.7.1 showed an SCTP flow's destination port as 0: it
// takes the destination port from the ICMP field for any flow that is not
// TCP or UDP. Transport and ICMP flows now have templates of their own.
func TestPeerNfdumpSCTPPorts(t *testing.T) {
	requireRoot(t, "ip", "nfcapd", "nfdump")
	now := peerClock()
	at := func(ms int) time.Time { return now.Add(-10 * time.Second).Add(time.Duration(ms) * time.Millisecond) }
	a4, b4 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	flows := []peerFlow{
		{name: "sctp4 out", proto: 132, src: a4, dst: b4, sport: 2905, dport: 3868, egress: true, ifindex: 3,
			packets: 10, bytes: 1000, start: at(100), end: at(900), reason: exporter.EndIdleTimeout},
		{name: "sctp4 in", proto: 132, src: b4, dst: a4, sport: 3868, dport: 2905, ifindex: 3,
			packets: 9, bytes: 900, start: at(101), end: at(901), reason: exporter.EndIdleTimeout},
		{name: "sctp6 out", proto: 132, src: a6, dst: b6, sport: 36412, dport: 38412, egress: true, ifindex: 7,
			packets: 4, bytes: 400, start: at(200), end: at(300), reason: exporter.EndIdleTimeout},
		{name: "icmp4 unreachable", proto: 1, src: b4, dst: a4, icmpType: 3, icmpCode: 3, ifindex: 3,
			packets: 1, bytes: 56, start: at(400), end: at(400), reason: exporter.EndIdleTimeout},
		{name: "icmp6 echo", proto: 58, src: a6, dst: b6, icmpType: 128, egress: true, ifindex: 7,
			packets: 2, bytes: 208, start: at(500), end: at(600), reason: exporter.EndIdleTimeout},
	}
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			ns := newNamespace(t, "hf-peer-sctp")
			dir := t.TempDir()
			const port = 9995
			nfcapd := start(t, ns.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "3600", "-I", "peer", "-v"))
			nfcapd.waitOutput(t, "Startup nfcapd.", 10*time.Second)
			exportUDP(t, ns, proto, "127.0.0.1:"+strconv.Itoa(port), now, flows)
			ns.waitUDPQueueEmpty(t, port, 10*time.Second) // nfcapd has read every datagram
			nfcapd.stop(t, 10*time.Second)
			out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
			var recs []nfRecord
			if err := json.Unmarshal([]byte(out), &recs); err != nil {
				t.Fatalf("parse nfdump json: %v\n%s", err, out)
			}
			if len(recs) != len(flows) {
				t.Fatalf("nfdump shows %d records, want %d", len(recs), len(flows))
			}
			for _, f := range flows {
				found := false
				for i := range recs {
					r := &recs[i]
					r.normalize()
					if r.Proto != int(f.proto) || r.SrcAddress != f.src.String() || r.DstAddress != f.dst.String() {
						continue
					}
					found = true
					if f.isICMP() {
						if got, want := icmpTypeCode(*r), int(f.icmpType)<<8|int(f.icmpCode); got != want {
							t.Errorf("%s: icmp type/code %#x, want %#x", f, got, want)
						}
					} else if r.SrcPort != int(f.sport) || r.DstPort != int(f.dport) {
						t.Errorf("%s: ports %d -> %d, want %d -> %d", f, r.SrcPort, r.DstPort, f.sport, f.dport)
					}
					if r.Packets != f.packets || r.Bytes != f.bytes {
						t.Errorf("%s: %d packets %d bytes, want %d %d", f, r.Packets, r.Bytes, f.packets, f.bytes)
					}
				}
				if !found {
					t.Errorf("%s: not in nfdump's output", f)
				}
			}
		})
	}
}
