package exporter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
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

func TestIPFIXSequence(t *testing.T) {
	w := &captureWriter{}
	clk := &ipfixClock{testEpoch}
	// 400 bytes: the template set and a few records, so every Export
	// spans several messages.
	e := newTestIPFIX(t, w, clk, 600)
	var sent uint32
	for i, n := range []int{1, 37, 100, 5} {
		if err := e.Export(randomFlows(n, uint64(i))); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	msgs := decodeAll(t, w.msgs)
	if len(msgs) < 10 {
		t.Fatalf("only %d messages: the test needs several per Export", len(msgs))
	}
	for i, m := range msgs {
		// Records before this message; template records do not count.
		if m.Seq != sent {
			t.Errorf("message %d: sequence %d, want %d", i, m.Seq, sent)
		}
		sent += uint32(len(m.Records))
	}
	if sent != 143 {
		t.Errorf("%d records, want 143", sent)
	}

	t.Run("wraps modulo 2^32", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 600)
		e.seq = math.MaxUint32 - 2
		if err := e.Export(randomFlows(20, 3)); err != nil {
			t.Fatal(err)
		}
		if err := e.Export(randomFlows(1, 4)); err != nil {
			t.Fatal(err)
		}
		msgs := decodeAll(t, w.msgs)
		seq := uint32(math.MaxUint32 - 2)
		for i, m := range msgs {
			if m.Seq != seq {
				t.Errorf("message %d: sequence %d, want %d", i, m.Seq, seq)
			}
			seq += uint32(len(m.Records))
		}
		if last := msgs[len(msgs)-1].Seq; last != 17 {
			t.Errorf("last sequence %d, want 17 (20 records from 2^32-3)", last)
		}
	})
}

func TestIPFIXTemplateRefresh(t *testing.T) {
	w := &captureWriter{}
	clk := &ipfixClock{testEpoch}
	e, err := NewIPFIX(IPFIXConfig{Writer: w, Now: clk.Now, TemplateRefresh: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	flows := sampleFlows()[:2]
	// Elapsed time since the start at each Export, and whether that
	// Export must carry templates.
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{time.Second, false},
		{59 * time.Second, false},
		{59*time.Second + 999*time.Millisecond, false},
		{60 * time.Second, true}, // TemplateRefresh after the first
		{61 * time.Second, false},
		{119 * time.Second, false},
		{125 * time.Second, true},
		{126 * time.Second, false},
	}
	// One collector throughout, which keeps the templates it has seen.
	c := newCollector()
	for _, s := range steps {
		clk.now = testEpoch.Add(s.at)
		w.msgs = nil
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if len(w.msgs) != 1 {
			t.Fatalf("at %v: %d messages", s.at, len(w.msgs))
		}
		m, err := c.decode(w.msgs[0])
		if err != nil {
			t.Fatalf("at %v: %v", s.at, err)
		}
		if got := len(m.Templates) > 0; got != s.want {
			t.Errorf("at %v: templates sent %v, want %v", s.at, got, s.want)
		}
	}

	t.Run("resent after a failed send", func(t *testing.T) {
		w := &captureWriter{fail: func(i int) bool { return i == 0 }}
		clk := &ipfixClock{testEpoch}
		e := newTestIPFIX(t, w, clk, 0)
		if err := e.Export(flows); !errors.Is(err, errInjected) {
			t.Fatalf("Export error %v, want the injected one", err)
		}
		clk.Advance(time.Second)
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if m := decodeAll(t, w.msgs); len(m[0].Templates) != templates.NumTemplates {
			t.Errorf("templates not resent after the failed first message")
		}
	})

	t.Run("nothing sent without flows", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
		if err := e.Export(nil); err != nil || w.writes != 0 {
			t.Errorf("Export(nil): err %v, %d writes", err, w.writes)
		}
	})
}

func TestIPFIXPacking(t *testing.T) {
	flows := randomFlows(1000, 11)
	want := inWireOrder(flows)
	least := 16 + 4 + 4*(4+4*15) + 4*(4+4*14) // header + template set
	for _, size := range []int{least, 533, 548, 1000, DefaultMaxMessageSize, 9000, 65535} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			w := &captureWriter{}
			e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, size)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			for i, m := range w.msgs {
				if len(m) > size {
					t.Errorf("message %d: %d bytes > %d", i, len(m), size)
				}
				// Every message but the last was closed because the next
				// record did not fit: at worst a new set of the longest
				// record (4 + 79 bytes).
				if i < len(w.msgs)-1 && len(m)+4+79 <= size {
					t.Errorf("message %d: %d bytes, room left for another record", i, len(m))
				}
			}
			got := records(decodeAll(t, w.msgs))
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				checkRecord(t, got[i], &want[i])
			}
			if s := e.Stats(); s.Messages != uint64(len(w.msgs)) || s.Records != 1000 || s.SendErrors != 0 || s.RecordsLost != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
	t.Run("several sets per message", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 9000)
		if err := e.Export(sampleFlows()); err != nil {
			t.Fatal(err)
		}
		m := decodeAll(t, w.msgs)
		if len(m) != 1 || m[0].Sets != 9 {
			t.Errorf("%d messages; want 1 with 9 sets (templates + 8 data)", len(m))
		}
	})
}

func TestIPFIXConfig(t *testing.T) {
	w := &captureWriter{}
	tests := []struct {
		name string
		cfg  IPFIXConfig
		ok   bool
	}{
		{"defaults", IPFIXConfig{Writer: w}, true},
		{"no writer", IPFIXConfig{}, false},
		{"too small for templates", IPFIXConfig{Writer: w, MaxMessageSize: 200}, false},
		{"larger than the length field", IPFIXConfig{Writer: w, MaxMessageSize: 65536}, false},
	}
	for _, tt := range tests {
		e, err := NewIPFIX(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
		if e != nil && (e.max != DefaultMaxMessageSize || e.refresh != DefaultTemplateRefresh) {
			t.Errorf("%s: defaults not applied: %d, %v", tt.name, e.max, e.refresh)
		}
	}
}

func TestIPFIXSendErrors(t *testing.T) {
	// Every other message fails.
	w := &captureWriter{fail: func(i int) bool { return i%2 == 1 }}
	e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 600)
	flows := randomFlows(100, 5)
	err := e.Export(flows)
	if !errors.Is(err, errInjected) {
		t.Fatalf("Export error %v, want the injected one", err)
	}
	s := e.Stats()
	if s.SendErrors == 0 || s.SendErrors != uint64(w.writes)-s.Messages {
		t.Errorf("stats %+v after %d writes", s, w.writes)
	}
	if s.Records+s.RecordsLost != 100 || s.RecordsLost == 0 {
		t.Errorf("stats %+v: records sent and lost must add up to 100", s)
	}
	// Export goes on after failures; once the writer recovers, the
	// sequence shows the collector a gap of exactly the lost records.
	w.fail = nil
	if err := e.Export(flows[:1]); err != nil {
		t.Errorf("Export after failures: %v", err)
	}
	msgs := decodeAll(t, w.msgs)
	var received uint64
	for _, m := range msgs {
		received += uint64(len(m.Records))
	}
	last := msgs[len(msgs)-1]
	if gap := uint64(last.Seq) + uint64(len(last.Records)) - received; gap != s.RecordsLost {
		t.Errorf("sequence gap %d, want %d lost records", gap, s.RecordsLost)
	}
}

func TestIPFIXClose(t *testing.T) {
	u, err := DialUDP("127.0.0.1:9") // discard port; nothing needs to listen
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewIPFIX(IPFIXConfig{Writer: u})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteMessage([]byte{0}); err == nil {
		t.Error("writer still open after Close")
	}
	if err := e.Export(sampleFlows()); err == nil {
		t.Error("Export after Close succeeded")
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestIPFIXUDPRoundTrip(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				t.Skipf("no %s: %v", addr, err)
			}
			defer l.Close()
			u, err := DialUDP(l.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			e, err := NewIPFIX(IPFIXConfig{Writer: u, ObservationDomainID: 7})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			flows := append(sampleFlows(), randomFlows(200, 9)...)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			sent := e.Stats().Messages
			var msgs [][]byte
			buf := make([]byte, 65535)
			if err := l.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			for uint64(len(msgs)) < sent {
				n, from, err := l.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("after %d of %d messages: %v", len(msgs), sent, err)
				}
				if from.String() != u.LocalAddr().String() {
					t.Errorf("datagram from %v, want %v", from, u.LocalAddr())
				}
				if n > DefaultMaxMessageSize {
					t.Errorf("datagram of %d bytes", n)
				}
				msgs = append(msgs, bytes.Clone(buf[:n]))
			}
			got := records(decodeAll(t, msgs))
			want := inWireOrder(flows)
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				checkRecord(t, got[i], &want[i])
			}

			// With the collector gone, the kernel reports port
			// unreachable on a later write: counted by the
			// transport, and the message is sent all the same.
			l.Close()
			for range 20 {
				if err := e.Export(flows[:3]); err != nil {
					t.Fatalf("export with the listener closed: %v", err)
				}
				if u.Stats().Unreachable > 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			s := e.Stats()
			if ts := u.Stats(); ts.Unreachable == 0 || ts.Lost != 0 || s.SendErrors != 0 {
				t.Errorf("listener closed: transport %+v, encoder %+v: want ICMP errors counted, nothing lost", ts, s)
			}
			if total := uint64(len(flows)) + 3*(s.Messages+s.SendErrors-sent); s.Records+s.RecordsLost != total {
				t.Errorf("stats %+v: sent and lost records do not add up to %d", s, total)
			}
		})
	}
}

// TestIPFIXAllocs holds the encoder to zero allocations per Export once
// warmed up (the first Export differs only by carrying templates).
func TestIPFIXAllocs(t *testing.T) {
	e := newTestIPFIX(t, MessageWriterFunc(func([]byte) error { return nil }), &ipfixClock{testEpoch}, 0)
	flows := randomFlows(300, 1)
	if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("Export of %d flows allocates %v times", len(flows), a)
	}
}

func FuzzIPFIXEncode(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, true, uint8(0), uint16(40000), uint16(443), uint8(6), uint8(0), uint8(0),
		uint32(2), uint16(0), uint64(12), uint64(3456), int64(1714564800000), int64(1714564830000), uint16(0x1b), uint8(3))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, []byte{0xff, 0x02, 15: 1}, false, uint8(1), uint16(0), uint16(0), uint8(58), uint8(135), uint8(0),
		uint32(5), uint16(4094), uint64(1), uint64(72), int64(0), int64(-5), uint16(0), uint8(5))
	f.Add([]byte{}, []byte{1}, true, uint8(0xff), uint16(1), uint16(2), uint8(1), uint8(8), uint8(0),
		uint32(math.MaxUint32), uint16(math.MaxUint16), uint64(math.MaxUint64), uint64(0), int64(math.MinInt64), int64(math.MaxInt64), uint16(math.MaxUint16), uint8(0xff))
	f.Fuzz(func(t *testing.T, src, dst []byte, ipv4 bool, dir uint8, sport, dport uint16, proto, icmpType, icmpCode uint8,
		ifindex uint32, vlan uint16, packets, octets uint64, startMs, endMs int64, flags uint16, reason uint8) {
		var k bpf.NetFlowId
		if ipv4 {
			// IPv4 keys are mapped; the encoder takes the last 4 bytes.
			k.EthProtocol = 0x0800
			var s4, d4 [4]byte
			copy(s4[:], src)
			copy(d4[:], dst)
			k.SrcIp = netip.AddrFrom4(s4).As16()
			k.DstIp = netip.AddrFrom4(d4).As16()
		} else {
			k.EthProtocol = 0x86dd
			copy(k.SrcIp[:], src)
			copy(k.DstIp[:], dst)
		}
		k.Direction, k.SrcPort, k.DstPort, k.TransportProtocol = dir, sport, dport, proto
		k.IcmpType, k.IcmpCode, k.IfIndex, k.VlanId = icmpType, icmpCode, ifindex, vlan
		fl := Flow{
			Key: KeyOf(k), Packets: packets, Bytes: octets,
			Start: time.UnixMilli(startMs), End: time.UnixMilli(endMs),
			TCPFlags: flags, EndReason: EndReason(reason),
		}
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
		if err := e.Export([]Flow{fl}); err != nil {
			t.Fatal(err)
		}
		recs := records(decodeAll(t, w.msgs))
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		checkRecord(t, recs[0], &fl)
	})
}

// BenchmarkIPFIXEncode encodes batches of 256 flows of all templates into
// 1400-byte messages for a writer that discards them.
func BenchmarkIPFIXEncode(b *testing.B) {
	flows := randomFlows(256, 2)
	e := newTestIPFIX(b, MessageWriterFunc(func([]byte) error { return nil }), &ipfixClock{testEpoch}, 0)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := e.Export(flows); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(flows)), "ns/record")
}

func TestIPFIXTemplateRefreshMessages(t *testing.T) {
	flows := sampleFlows()[:2]
	for _, n := range []int{-1, 1, 2, 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := &captureWriter{}
			e, err := NewIPFIX(IPFIXConfig{Writer: w, Now: (&ipfixClock{testEpoch}).Now, TemplateRefreshMessages: n})
			if err != nil {
				t.Fatal(err)
			}
			for range 30 {
				if err := e.Export(flows); err != nil {
					t.Fatal(err)
				}
			}
			for i, m := range decodeAll(t, w.msgs) {
				want := i == 0 || (n > 0 && i%n == 0)
				if want != (len(m.Templates) > 0) {
					t.Errorf("message %d: %d templates", i, len(m.Templates))
				}
			}
		})
	}
	t.Run("mid-export refresh in tiny messages", func(t *testing.T) {
		// Every message wants templates, and templates leave no room
		// for a record: the exporter must still make progress.
		least := 16 + 4 + 4*(4+4*15) + 4*(4+4*14)
		w := &captureWriter{}
		e, err := NewIPFIX(IPFIXConfig{Writer: w, MaxMessageSize: least, TemplateRefreshMessages: 1, Now: (&ipfixClock{testEpoch}).Now})
		if err != nil {
			t.Fatal(err)
		}
		flows := randomFlows(40, 4)
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if got := records(decodeAll(t, w.msgs)); len(got) != 40 {
			t.Errorf("%d records, want 40", len(got))
		}
	})
}

func TestIPFIXResendTemplates(t *testing.T) {
	w := &captureWriter{}
	e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
	flows := sampleFlows()[:2]
	_ = e.Export(flows)
	_ = e.Export(flows)
	e.ResendTemplates()
	_ = e.Export(flows)
	_ = e.Export(flows)
	if err := e.SendTemplates(); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range decodeAll(t, w.msgs) {
		got = append(got, len(m.Templates), len(m.Records))
	}
	if fmt.Sprint(got) != "[8 2 0 2 8 2 0 2 8 0]" {
		t.Errorf("templates, records per message: %v", got)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.SendTemplates(); err == nil {
		t.Error("SendTemplates after Close succeeded")
	}
}

// wantIPFIXRaw is the raw bytes of f's record by element ID, written from
// RFC 7011 and the IANA registry, for comparison with goflow2.
func wantIPFIXRaw(f *Flow) map[uint16][]byte {
	k := &f.Key
	be := binary.BigEndian
	u16 := func(v uint16) []byte { return be.AppendUint16(nil, v) }
	u64 := func(v uint64) []byte { return be.AppendUint64(nil, v) }
	ms := func(t time.Time) []byte { return u64(uint64(max(t.UnixMilli(), 0))) }
	v := map[uint16][]byte{
		4: {k.Proto}, 5: {k.TOS}, 6: u16(f.TCPFlags),
		1: u64(f.Bytes), 2: u64(f.Packets), 152: ms(f.Start), 153: ms(f.End),
		61: {k.Direction}, 136: {byte(f.EndReason)}, 58: u16(k.VLAN),
	}
	iface := be.AppendUint32(nil, k.IfIndex)
	if k.Direction == 1 {
		v[14] = iface
	} else {
		v[10] = iface
	}
	// Transport records have the ports, ICMP ones the type and code.
	icmp := []byte{k.ICMPType, k.ICMPCode}
	v4 := k.EtherType() == 0x0800
	if v4 {
		v[8], v[12] = bytes4(k.Src), bytes4(k.Dst)
	} else {
		v[27], v[28] = bytes16(k.Src), bytes16(k.Dst)
	}
	switch {
	case v4 && k.Proto == 1:
		v[32] = icmp
	case !v4 && k.Proto == 58:
		v[139] = icmp
	default:
		v[7], v[11] = u16(k.SrcPort), u16(k.DstPort)
	}
	return v
}

// TestIPFIXGoflow2 decodes IPFIX with goflow2 as a second independent
// collector, with options on.
func TestIPFIXGoflow2(t *testing.T) {
	flows := append(sampleFlows(), randomFlows(500, 8)...)
	w := &captureWriter{}
	e, _ := newOptionsExporter(t, templates.IPFIX, w, 0, testOptions())
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	msgs := gfDecodeAll(t, w.msgs)
	var seq uint32
	for i, m := range msgs {
		if m.Version != 10 || m.SourceID != 42 || m.Seq != seq || m.UnixSecs != uint32(testEpoch.Unix()) {
			t.Errorf("message %d header %+v, want sequence %d", i, m, seq)
		}
		seq += uint32(len(m.Flows) + len(m.Options))
	}
	checkOptions(t, msgs[0].Options, wantOptions(templates.IPFIX, 0, 0))
	got := gfFlows(msgs)
	want := inWireOrder(flows)
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		w := wantIPFIXRaw(&want[i])
		if len(got[i].Values) != len(w) || got[i].TemplateID != wantRecord(&want[i]).TemplateID {
			t.Errorf("record %d: template %d, %d fields", i, got[i].TemplateID, len(got[i].Values))
		}
		for id, v := range w {
			if !bytes.Equal(got[i].Values[id], v) {
				t.Errorf("record %d: element %d = %x, want %x", i, id, got[i].Values[id], v)
			}
		}
	}
}

// TestIPFIXFromNames exports a user layout, decoded by the go-ipfix side.
func TestIPFIXFromNames(t *testing.T) {
	set, err := templates.FromNames(templates.IPFIX, []string{"destinationIPv6Address", "egressInterface", "packetDeltaCount", "flowEndReason", "ipVersion"})
	if err != nil {
		t.Fatal(err)
	}
	w := &captureWriter{}
	e, err := NewIPFIX(IPFIXConfig{Writer: w, Templates: set, Now: (&ipfixClock{testEpoch}).Now})
	if err != nil {
		t.Fatal(err)
	}
	flows := sampleFlows()
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	got := records(decodeAll(t, w.msgs))
	want := inWireOrder(flows)
	for i := range want {
		f := &want[i]
		all := wantRecord(f)
		ver, addr, iface := uint64(6), "destinationIPv6Address", "ingressInterface"
		if f.Key.IsIPv4() {
			ver, addr = 4, "destinationIPv4Address"
		}
		if f.Key.Direction == 1 {
			iface = "egressInterface"
		}
		g := got[i]
		if g.TemplateID != all.TemplateID || len(g.Uints) != 4 || len(g.Addrs) != 1 ||
			g.Addrs[addr] != all.Addrs[addr] || g.Uints[iface] != all.Uints[iface] ||
			g.Uints["packetDeltaCount"] != f.Packets || g.Uints["flowEndReason"] != uint64(f.EndReason) || g.Uints["ipVersion"] != ver {
			t.Errorf("record %d: %+v", i, g)
		}
	}
}
