package exporter

import (
	"bytes"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testEpoch is the fixed time of the tests: 2024-05-01T12:00:00Z.
var testEpoch = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

type ipfixClock struct{ now time.Time }

func (c *ipfixClock) Now() time.Time          { return c.now }
func (c *ipfixClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// captureWriter is a MessageWriter that keeps a copy of every message; fail, if
// set, decides which writes fail (by 0-based write index).
type captureWriter struct {
	msgs   [][]byte
	writes int
	fail   func(i int) bool
}

var errInjected = errors.New("injected send failure")

func (c *captureWriter) WriteMessage(msg []byte) error {
	i := c.writes
	c.writes++
	if c.fail != nil && c.fail(i) {
		return errInjected
	}
	c.msgs = append(c.msgs, bytes.Clone(msg))
	return nil
}

func newTestIPFIX(t testing.TB, w MessageWriter, clk *ipfixClock, maxSize int) *IPFIX {
	t.Helper()
	e, err := NewIPFIX(IPFIXConfig{
		Writer:              w,
		ObservationDomainID: 42,
		MaxMessageSize:      maxSize,
		Now:                 clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func flowKey(src, dst string, sport, dport uint16, proto, dir uint8, ifindex uint32) FlowKey {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	k := bpf.NetFlowId{
		SrcIp: s.As16(), DstIp: d.As16(),
		SrcPort: sport, DstPort: dport,
		TransportProtocol: proto, Direction: dir, IfIndex: ifindex,
		EthProtocol: 0x86dd,
	}
	if s.Is4() {
		k.EthProtocol = 0x0800
	}
	return KeyOf(k)
}

// bytes4 and bytes16 are a key address as the IPv4 and IPv6 address
// fields carry it.
func bytes4(a netip.Addr) []byte {
	b := a.As16()
	return b[12:]
}

func bytes16(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
}

func testFlow(k FlowKey, packets, bytes uint64, start, dur time.Duration) Flow {
	return Flow{
		Key: k, Packets: packets, Bytes: bytes,
		Start: testEpoch.Add(-start), End: testEpoch.Add(-start + dur),
		EndReason: EndIdleTimeout,
	}
}

// sampleFlows has flows of every template, ICMP of both families, a VLAN,
// ToS values and TCP flags. It feeds the golden files: changing it changes them.
func sampleFlows() []Flow {
	tcp4 := testFlow(flowKey("192.0.2.1", "198.51.100.7", 40000, 443, 6, 0, 2), 12, 3456, 30*time.Second, 29*time.Second+123*time.Millisecond)
	tcp4.TCPFlags = 0x1b
	tcp4.EndReason = EndOfFlowDetected
	tcp4.Key.TOS = 0xb8 // DSCP EF
	udp4 := testFlow(flowKey("10.0.0.1", "10.0.0.53", 5353, 53, 17, 1, 3), 1, 80, time.Second, 0)
	udp4.Key.VLAN = 100
	icmp4 := testFlow(flowKey("192.0.2.9", "192.0.2.1", 0, 0, 1, 0, 2), 3, 252, 5*time.Second, 2*time.Second)
	icmp4.Key.ICMPType, icmp4.Key.ICMPCode = 8, 0
	icmp4out := testFlow(flowKey("192.0.2.1", "192.0.2.9", 0, 0, 1, 1, 2), 3, 252, 5*time.Second, 2*time.Second)
	icmp4out.Key.ICMPType, icmp4out.Key.ICMPCode = 3, 13
	icmp4out.EndReason = EndActiveTimeout
	icmp4out.Key.TOS = 0xc0 // DSCP CS6
	tcp6 := testFlow(flowKey("2001:db8::1", "2001:db8::2", 22, 51000, 6, 0, 4), 1000, 1<<33, time.Minute, time.Minute)
	tcp6.TCPFlags = 0x18
	tcp6.EndReason = EndForced
	tcp6.Key.TOS = 0x29 // DSCP AF11, ECT(1)
	udp6 := testFlow(flowKey("2001:db8::2", "2001:db8::1", 51000, 22, 17, 0, 4), 2, 200, time.Second, time.Millisecond)
	icmp6 := testFlow(flowKey("fe80::1", "ff02::1", 0, 0, 58, 1, 5), 1, 72, 0, 0)
	icmp6.Key.ICMPType, icmp6.Key.ICMPCode = 135, 0
	icmp6.Key.VLAN = 4094
	icmp6.EndReason = EndLackOfResources
	udp6out := testFlow(flowKey("2001:db8::3", "2001:db8:ffff::9", 1234, 4739, 17, 1, 1), 5, 7000, 2*time.Second, time.Second)
	// Two flows or more of every template: SCTP (ports, no ICMP) and
	// ICMP of both families and directions.
	sctp4 := testFlow(flowKey("198.18.0.1", "198.18.0.2", 2905, 3868, 132, 0, 2), 40, 4000, 3*time.Second, time.Second)
	udp4out := testFlow(flowKey("198.18.0.1", "198.18.0.53", 40000, 53, 17, 1, 3), 1, 60, time.Second, 0)
	sctp6out := testFlow(flowKey("2001:db8::3", "2001:db8::4", 36412, 38412, 132, 1, 1), 9, 900, time.Second, time.Second)
	icmp4b := testFlow(flowKey("198.18.0.9", "198.18.0.1", 0, 0, 1, 0, 2), 1, 56, time.Second, 0)
	icmp4b.Key.ICMPType, icmp4b.Key.ICMPCode = 11, 0
	icmp4outb := testFlow(flowKey("198.18.0.1", "198.18.0.9", 0, 0, 1, 1, 2), 2, 168, time.Second, time.Second)
	icmp4outb.Key.ICMPType = 0
	icmp6in := testFlow(flowKey("2001:db8::2", "2001:db8::1", 0, 0, 58, 0, 4), 2, 208, time.Second, time.Second)
	icmp6in.Key.ICMPType = 129
	icmp6inb := testFlow(flowKey("fe80::2", "fe80::1", 0, 0, 58, 0, 4), 1, 72, 0, 0)
	icmp6inb.Key.ICMPType, icmp6inb.Key.ICMPCode = 1, 4
	icmp6outb := testFlow(flowKey("2001:db8::1", "2001:db8::2", 0, 0, 58, 1, 4), 2, 208, time.Second, time.Second)
	icmp6outb.Key.ICMPType = 128
	return []Flow{tcp4, udp4, icmp4, icmp4out, tcp6, udp6, icmp6, udp6out,
		sctp4, udp4out, sctp6out, icmp4b, icmp4outb, icmp6in, icmp6inb, icmp6outb}
}

// randomFlows returns n varied flows of all templates, reproducibly.
func randomFlows(n int, seed uint64) []Flow {
	r := rand.New(rand.NewPCG(seed, 1))
	flows := make([]Flow, n)
	for i := range flows {
		var k bpf.NetFlowId
		if r.IntN(2) == 0 {
			k.EthProtocol = 0x0800
			a4 := func() [16]uint8 {
				var b [4]byte
				for j := range b {
					b[j] = byte(r.Uint32())
				}
				return netip.AddrFrom4(b).As16()
			}
			k.SrcIp, k.DstIp = a4(), a4()
		} else {
			k.EthProtocol = 0x86dd
			for j := range 16 {
				k.SrcIp[j], k.DstIp[j] = byte(r.Uint32()), byte(r.Uint32())
			}
		}
		k.SrcPort, k.DstPort = uint16(r.Uint32()), uint16(r.Uint32())
		k.TransportProtocol = []uint8{1, 6, 17, 58, 132}[r.IntN(5)]
		k.Direction = uint8(r.IntN(2))
		k.IfIndex = r.Uint32N(64)
		k.VlanId = uint16(r.IntN(4096))
		k.IcmpType, k.IcmpCode = uint8(r.Uint32()), uint8(r.Uint32())
		// Derived, not drawn: the draws that follow stay the same.
		k.Tos = uint8(k.SrcPort) ^ uint8(k.DstPort>>8)
		start := testEpoch.Add(-time.Duration(r.Int64N(int64(time.Hour))))
		flows[i] = Flow{
			Key: KeyOf(k), Packets: r.Uint64(), Bytes: r.Uint64(),
			Start: start, End: start.Add(time.Duration(r.Int64N(int64(time.Minute)))),
			TCPFlags: uint16(r.Uint32()), EndReason: EndReason(1 + r.IntN(5)),
		}
	}
	return flows
}

// TestIPFIXEncodeTable checks single records against values written out by
// hand, so the expectations do not share code with the encoder or with
// wantRecord.
func TestIPFIXEncodeTable(t *testing.T) {
	ms := uint64(testEpoch.UnixMilli())
	tests := []struct {
		name     string
		flow     Flow
		template uint16
		addrs    map[string]string
		uints    map[string]uint64
	}{
		{
			name: "tcp4 ingress",
			flow: func() Flow {
				f := testFlow(flowKey("192.0.2.1", "198.51.100.7", 40000, 443, 6, 0, 2), 12, 3456, 30*time.Second, 29*time.Second+123*time.Millisecond)
				f.TCPFlags = 0x1b
				f.EndReason = EndOfFlowDetected
				f.Key.TOS = 0xb8
				return f
			}(),
			template: 256,
			addrs:    map[string]string{"sourceIPv4Address": "192.0.2.1", "destinationIPv4Address": "198.51.100.7"},
			uints: map[string]uint64{
				"sourceTransportPort": 40000, "destinationTransportPort": 443, "protocolIdentifier": 6,
				"ipClassOfService": 0xb8, "tcpControlBits": 0x1b, "octetDeltaCount": 3456, "packetDeltaCount": 12,
				"flowStartMilliseconds": ms - 30000, "flowEndMilliseconds": ms - 877,
				"flowDirection": 0, "ingressInterface": 2, "flowEndReason": 3,
				"vlanId": 0,
			},
		},
		{
			name: "icmp4 egress with vlan",
			flow: func() Flow {
				f := testFlow(flowKey("192.0.2.1", "192.0.2.9", 0, 0, 1, 1, 7), 3, 252, 0, 0)
				f.Key.ICMPType, f.Key.ICMPCode, f.Key.VLAN = 3, 13, 100
				f.EndReason = EndActiveTimeout
				return f
			}(),
			template: 261, // ICMP, IPv4, egress: no ports
			addrs:    map[string]string{"sourceIPv4Address": "192.0.2.1", "destinationIPv4Address": "192.0.2.9"},
			uints: map[string]uint64{
				"protocolIdentifier": 1, "ipClassOfService": 0,
				"tcpControlBits": 0, "octetDeltaCount": 252, "packetDeltaCount": 3,
				"flowStartMilliseconds": ms, "flowEndMilliseconds": ms,
				"flowDirection": 1, "egressInterface": 7, "flowEndReason": 2,
				"icmpTypeCodeIPv4": 3<<8 | 13, "vlanId": 100,
			},
		},
		{
			name: "icmpv6 ingress",
			flow: func() Flow {
				f := testFlow(flowKey("fe80::1", "ff02::1", 0, 0, 58, 0, 5), 1, 72, time.Millisecond, time.Millisecond)
				f.Key.ICMPType, f.Key.ICMPCode = 135, 0
				f.Key.TOS = 0xff
				return f
			}(),
			template: 262, // ICMP, IPv6, ingress: no ports
			addrs:    map[string]string{"sourceIPv6Address": "fe80::1", "destinationIPv6Address": "ff02::1"},
			uints: map[string]uint64{
				"protocolIdentifier": 58, "ipClassOfService": 0xff,
				"tcpControlBits": 0, "octetDeltaCount": 72, "packetDeltaCount": 1,
				"flowStartMilliseconds": ms - 1, "flowEndMilliseconds": ms,
				"flowDirection": 0, "ingressInterface": 5, "flowEndReason": 1,
				"icmpTypeCodeIPv6": 135 << 8, "vlanId": 0,
			},
		},
		{
			name: "udp6 egress, icmp fields ignored, big counters",
			flow: func() Flow {
				f := testFlow(flowKey("2001:db8::2", "2001:db8:ffff::9", 1234, 4739, 17, 1, 1), math.MaxUint64, 1<<40, 2*time.Second, time.Second)
				f.Key.ICMPType, f.Key.ICMPCode = 9, 9 // not ICMP: must read 0
				f.EndReason = EndForced
				return f
			}(),
			template: 259,
			addrs:    map[string]string{"sourceIPv6Address": "2001:db8::2", "destinationIPv6Address": "2001:db8:ffff::9"},
			uints: map[string]uint64{
				"sourceTransportPort": 1234, "destinationTransportPort": 4739, "protocolIdentifier": 17,
				"ipClassOfService": 0, "tcpControlBits": 0, "octetDeltaCount": 1 << 40, "packetDeltaCount": math.MaxUint64,
				"flowStartMilliseconds": ms - 2000, "flowEndMilliseconds": ms - 1000,
				"flowDirection": 1, "egressInterface": 1, "flowEndReason": 4,
				"vlanId": 0,
			},
		},
		{
			name: "zero times encode as 0",
			flow: Flow{Key: flowKey("192.0.2.1", "192.0.2.2", 1, 2, 17, 0, 1)},
			addrs: map[string]string{
				"sourceIPv4Address": "192.0.2.1", "destinationIPv4Address": "192.0.2.2",
			},
			template: 256,
			uints: map[string]uint64{
				"sourceTransportPort": 1, "destinationTransportPort": 2, "protocolIdentifier": 17,
				"ipClassOfService": 0, "tcpControlBits": 0, "octetDeltaCount": 0, "packetDeltaCount": 0,
				"flowStartMilliseconds": 0, "flowEndMilliseconds": 0,
				"flowDirection": 0, "ingressInterface": 1, "flowEndReason": 0,
				"vlanId": 0,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &captureWriter{}
			e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
			if err := e.Export([]Flow{tt.flow}); err != nil {
				t.Fatal(err)
			}
			msgs := decodeAll(t, w.msgs)
			recs := records(msgs)
			if len(msgs) != 1 || len(recs) != 1 {
				t.Fatalf("%d messages, %d records; want 1, 1", len(msgs), len(recs))
			}
			got := recs[0]
			if got.TemplateID != tt.template {
				t.Errorf("template %d, want %d", got.TemplateID, tt.template)
			}
			if n := len(got.Addrs) + len(got.Uints); n != len(tt.addrs)+len(tt.uints) {
				t.Errorf("%d fields, want %d", n, len(tt.addrs)+len(tt.uints))
			}
			for name, want := range tt.addrs {
				if a, ok := got.Addrs[name]; !ok || a != netip.MustParseAddr(want) {
					t.Errorf("%s = %v (present %v), want %s", name, a, ok, want)
				}
			}
			for name, want := range tt.uints {
				if v, ok := got.Uints[name]; !ok || v != want {
					t.Errorf("%s = %d (present %v), want %d", name, v, ok, want)
				}
			}
			checkRecord(t, got, &tt.flow)
		})
	}
}

// TestIPFIXGolden compares the wire bytes of one message per template with
// testdata/<template>.golden. Regenerate with: go test ./exporter/ -run
// TestIPFIXGolden -update, and review the diff (e.g. with xxd).
func TestIPFIXGolden(t *testing.T) {
	all := sampleFlows()
	for _, tmpl := range templates.Defaults() {
		t.Run(tmpl.Name, func(t *testing.T) {
			var flows []Flow
			for _, f := range all {
				if wantRecord(&f).TemplateID == tmpl.ID {
					flows = append(flows, f)
				}
			}
			if len(flows) < 2 {
				t.Fatalf("sampleFlows has %d flows of %s, want at least 2", len(flows), tmpl.Name)
			}
			w := &captureWriter{}
			e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			if len(w.msgs) != 1 {
				t.Fatalf("%d messages, want 1", len(w.msgs))
			}
			got := w.msgs[0]
			path := filepath.Join("testdata", tmpl.Name+".golden")
			if *updateGolden {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("wire bytes differ from %s\ngot:  %x\nwant: %x", path, got, want)
			}
			// The golden bytes must themselves decode to the flows.
			m := decodeAll(t, [][]byte{want})[0]
			if len(m.Records) != len(flows) {
				t.Fatalf("golden has %d records, want %d", len(m.Records), len(flows))
			}
			for i := range flows {
				checkRecord(t, m.Records[i], &flows[i])
			}
		})
	}
}

// TestIPFIXDifferential decodes many messages of varied flows with the
// go-ipfix based decoder and requires every field of every record to match.
func TestIPFIXDifferential(t *testing.T) {
	flows := append(sampleFlows(), randomFlows(500, 7)...)
	w := &captureWriter{}
	clk := &ipfixClock{testEpoch}
	e := newTestIPFIX(t, w, clk, 0)
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	msgs := decodeAll(t, w.msgs)
	for i, m := range msgs {
		if m.Domain != 42 || m.ExportTime != uint32(testEpoch.Unix()) || m.Version != 10 {
			t.Errorf("message %d header: %+v", i, m)
		}
		// Templates open the first message and every
		// DefaultTemplateRefreshMessages-th after it.
		if (i%DefaultTemplateRefreshMessages == 0) != (len(m.Templates) == templates.NumTemplates) {
			t.Errorf("message %d has %d templates", i, len(m.Templates))
		}
	}
	got := records(msgs)
	want := inWireOrder(flows)
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		checkRecord(t, got[i], &want[i])
	}
}
