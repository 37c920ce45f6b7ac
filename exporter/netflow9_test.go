package exporter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// v9Boot is when the test exporters start: sysUptime 0, two hours before
// testEpoch, so every test flow has a positive FIRST_SWITCHED.
var v9Boot = testEpoch.Add(-2 * time.Hour)

// newTestNetFlow9 returns an exporter started at v9Boot whose clock then
// reads testEpoch.
func newTestNetFlow9(t testing.TB, w MessageWriter, maxSize int, opts *OptionsConfig) (*NetFlow9, *ipfixClock) {
	t.Helper()
	clk := &ipfixClock{v9Boot}
	e, err := NewNetFlow9(NetFlow9Config{
		Writer: w, SourceID: 42, MaxMessageSize: maxSize, Now: clk.Now, Options: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	clk.now = testEpoch
	return e, clk
}

var v9BootMillis = v9Boot.UnixMilli()

// TestNetFlow9EncodeTable checks single records against values written out
// by hand.
func TestNetFlow9EncodeTable(t *testing.T) {
	const upNow = 2 * 3600 * 1000 // sysUptime at testEpoch
	tests := []struct {
		name     string
		flow     Flow
		template uint16
		want     map[uint16][]byte
	}{
		{
			name: "tcp4 ingress",
			flow: func() Flow {
				f := testFlow(flowKey("192.0.2.1", "198.51.100.7", 40000, 443, 6, 0, 2), 12, 3456, 30*time.Second, 29*time.Second+123*time.Millisecond)
				f.TCPFlags = 0x11b // the ECE bit does not fit v9's byte
				f.Key.TOS = 0x2e
				return f
			}(),
			template: 256,
			want: map[uint16][]byte{
				8: {192, 0, 2, 1}, 12: {198, 51, 100, 7}, 7: {0x9c, 0x40}, 11: {1, 0xbb}, 4: {6}, 5: {0x2e}, 6: {0x1b},
				1: {0, 0, 0, 0, 0, 0, 0x0d, 0x80}, 2: {0, 0, 0, 0, 0, 0, 0, 12},
				22: be32(upNow - 30000), 21: be32(upNow - 877), 61: {0}, 10: {0, 0, 0, 2}, 58: {0, 0},
			},
		},
		{
			name: "icmp4 egress with vlan",
			flow: func() Flow {
				f := testFlow(flowKey("192.0.2.1", "192.0.2.9", 0, 0, 1, 1, 7), 3, 252, 0, 0)
				f.Key.ICMPType, f.Key.ICMPCode, f.Key.VLAN = 3, 13, 100
				return f
			}(),
			template: 261, // ICMP, IPv4, egress: no ports
			want: map[uint16][]byte{
				8: {192, 0, 2, 1}, 12: {192, 0, 2, 9}, 4: {1}, 5: {0}, 6: {0},
				1: {0, 0, 0, 0, 0, 0, 0, 252}, 2: {0, 0, 0, 0, 0, 0, 0, 3},
				22: be32(upNow), 21: be32(upNow), 61: {1}, 14: {0, 0, 0, 7}, 32: {3, 13}, 58: {0, 100},
			},
		},
		{
			name: "icmpv6 ingress, started before the exporter",
			flow: func() Flow {
				f := testFlow(flowKey("fe80::1", "ff02::1", 0, 0, 58, 0, 5), 1, 72, 3*time.Hour, 3*time.Hour)
				f.Key.ICMPType = 135
				return f
			}(),
			template: 262, // ICMP, IPv6, ingress: no ports
			want: map[uint16][]byte{
				27: netip.MustParseAddr("fe80::1").AsSlice(), 28: netip.MustParseAddr("ff02::1").AsSlice(),
				4: {58}, 5: {0}, 6: {0},
				1: {0, 0, 0, 0, 0, 0, 0, 72}, 2: {0, 0, 0, 0, 0, 0, 0, 1},
				22: be32(0), 21: be32(upNow), 61: {0}, 10: {0, 0, 0, 5}, 32: {135, 0}, 58: {0, 0},
			},
		},
		{
			name: "udp6 egress, icmp fields ignored",
			flow: func() Flow {
				f := testFlow(flowKey("2001:db8::3", "2001:db8:ffff::9", 1234, 2055, 17, 1, 1), 5, 7000, time.Second, time.Second)
				f.Key.ICMPType, f.Key.ICMPCode = 1, 2
				return f
			}(),
			template: 259,
			want: map[uint16][]byte{
				27: netip.MustParseAddr("2001:db8::3").AsSlice(), 28: netip.MustParseAddr("2001:db8:ffff::9").AsSlice(),
				7: {0x04, 0xd2}, 11: {0x08, 0x07}, 4: {17}, 5: {0}, 6: {0},
				1: {0, 0, 0, 0, 0, 0, 0x1b, 0x58}, 2: {0, 0, 0, 0, 0, 0, 0, 5},
				22: be32(upNow - 1000), 21: be32(upNow), 61: {1}, 14: {0, 0, 0, 1}, 58: {0, 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &captureWriter{}
			e, _ := newTestNetFlow9(t, w, 0, nil)
			if err := e.Export([]Flow{tt.flow}); err != nil {
				t.Fatal(err)
			}
			recs := gfFlows(gfDecodeAll(t, w.msgs))
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			if recs[0].TemplateID != tt.template {
				t.Errorf("template %d, want %d", recs[0].TemplateID, tt.template)
			}
			if len(recs[0].Values) != len(tt.want) {
				t.Errorf("%d fields, want %d", len(recs[0].Values), len(tt.want))
			}
			for typ, want := range tt.want {
				if got := recs[0].Values[typ]; !bytes.Equal(got, want) {
					t.Errorf("field %d = %x, want %x", typ, got, want)
				}
			}
		})
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestNetFlow9Golden compares the wire bytes of one packet per template
// with testdata/v9-<template>.golden. Regenerate with: go test ./exporter/
// -run Golden -update, and review the diff (e.g. with xxd).
func TestNetFlow9Golden(t *testing.T) {
	all := sampleFlows()
	for _, tmpl := range templates.DefaultSet(templates.NetFlowV9).Templates() {
		t.Run(tmpl.Name, func(t *testing.T) {
			var flows []Flow
			for _, f := range all {
				if id, _ := wantV9(&f, v9BootMillis); id == tmpl.ID {
					flows = append(flows, f)
				}
			}
			w := &captureWriter{}
			e, _ := newTestNetFlow9(t, w, 0, nil)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			if len(w.msgs) != 1 {
				t.Fatalf("%d messages, want 1", len(w.msgs))
			}
			want := checkGolden(t, "v9-"+tmpl.Name+".golden", w.msgs[0])
			if err := checkFramingV9(want); err != nil {
				t.Fatal(err)
			}
			m := gfDecodeAll(t, [][]byte{want})[0]
			if m.Version != 9 || m.SourceID != 42 || m.Seq != 0 || m.UnixSecs != uint32(testEpoch.Unix()) || m.Uptime != 2*3600*1000 {
				t.Errorf("header %+v", m)
			}
			if int(m.Count) != templates.NumTemplates+len(flows) || len(m.Templates) != templates.NumTemplates {
				t.Errorf("count %d with %d templates, want %d + %d records", m.Count, len(m.Templates), templates.NumTemplates, len(flows))
			}
			if len(m.Flows) != len(flows) {
				t.Fatalf("%d records, want %d", len(m.Flows), len(flows))
			}
			for i := range flows {
				checkV9Record(t, m.Flows[i], &flows[i], v9BootMillis)
			}
		})
	}
}

// checkGolden compares got with testdata/name (rewriting it with -update)
// and returns the golden bytes.
func checkGolden(t *testing.T, name string, got []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", name)
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
	return want
}

// v9InWireOrder is flows grouped by v9 template, input order within one.
func v9InWireOrder(flows []Flow) []Flow {
	var out []Flow
	for id := uint16(256); id < 256+templates.NumTemplates; id++ {
		for i := range flows {
			if tid, _ := wantV9(&flows[i], 0); tid == id {
				out = append(out, flows[i])
			}
		}
	}
	return out
}

// TestNetFlow9Differential decodes many packets of varied flows with
// goflow2 and requires every header field and every value to match.
func TestNetFlow9Differential(t *testing.T) {
	flows := append(sampleFlows(), randomFlows(1000, 7)...)
	for _, size := range []int{0, 500, 512, 9000, 65535} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			w := &captureWriter{}
			e, _ := newTestNetFlow9(t, w, size, nil)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			max := size
			if max == 0 {
				max = DefaultMaxMessageSize
			}
			msgs := gfDecodeAll(t, w.msgs)
			for i, m := range msgs {
				if err := checkFramingV9(w.msgs[i]); err != nil {
					t.Errorf("packet %d: %v", i, err)
				}
				if len(w.msgs[i]) > max {
					t.Errorf("packet %d: %d bytes > %d", i, len(w.msgs[i]), max)
				}
				if m.Seq != uint32(i) || m.SourceID != 42 || m.Uptime != 2*3600*1000 || m.UnixSecs != uint32(testEpoch.Unix()) {
					t.Errorf("packet %d header: %+v", i, m)
				}
				if int(m.Count) != len(m.Templates)+len(m.Flows) {
					t.Errorf("packet %d: count %d, %d templates + %d records", i, m.Count, len(m.Templates), len(m.Flows))
				}
				if wantT := i%DefaultTemplateRefreshMessages == 0; wantT != (len(m.Templates) == templates.NumTemplates) {
					t.Errorf("packet %d: %d templates", i, len(m.Templates))
				}
			}
			got := gfFlows(msgs)
			want := v9InWireOrder(flows)
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				checkV9Record(t, got[i], &want[i], v9BootMillis)
			}
		})
	}
}

func TestNetFlow9TemplateRefresh(t *testing.T) {
	flows := sampleFlows()[:2]
	t.Run("by time", func(t *testing.T) {
		w := &captureWriter{}
		clk := &ipfixClock{testEpoch}
		e, err := NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefresh: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		c := newGFCollector()
		for _, s := range []struct {
			at   time.Duration
			want bool
		}{{0, true}, {time.Second, false}, {59 * time.Second, false}, {time.Minute, true}, {90 * time.Second, false}, {121 * time.Second, true}} {
			clk.now = testEpoch.Add(s.at)
			w.msgs = nil
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			m, err := c.decode(w.msgs[0])
			if err != nil {
				t.Fatal(err)
			}
			if got := len(m.Templates) > 0; got != s.want {
				t.Errorf("at %v: templates %v, want %v", s.at, got, s.want)
			}
			if m.Uptime != uint32(s.at/time.Millisecond) {
				t.Errorf("at %v: sysUptime %d", s.at, m.Uptime)
			}
		}
	})
	t.Run("by count", func(t *testing.T) {
		for _, n := range []int{1, 3, 20} {
			w := &captureWriter{}
			clk := &ipfixClock{testEpoch}
			e, err := NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefreshMessages: n})
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				if err := e.Export(flows); err != nil {
					t.Fatal(err)
				}
			}
			c := newGFCollector()
			for i, msg := range w.msgs {
				m, err := c.decode(msg)
				if err != nil {
					t.Fatal(err)
				}
				if want := i%n == 0; want != (len(m.Templates) > 0) {
					t.Errorf("every %d: packet %d: templates %v", n, i, !want)
				}
			}
		}
	})
	t.Run("count off", func(t *testing.T) {
		w := &captureWriter{}
		e, err := NewNetFlow9(NetFlow9Config{Writer: w, TemplateRefreshMessages: -1, Now: (&ipfixClock{testEpoch}).Now})
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			_ = e.Export(flows)
		}
		for i, m := range gfDecodeAll(t, w.msgs) {
			if (i == 0) != (len(m.Templates) > 0) {
				t.Errorf("packet %d: %d templates", i, len(m.Templates))
			}
		}
	})
	t.Run("resend", func(t *testing.T) {
		w := &captureWriter{}
		e, _ := newTestNetFlow9(t, w, 0, nil)
		_ = e.Export(flows)
		_ = e.Export(flows)
		e.ResendTemplates()
		_ = e.Export(flows)
		_ = e.Export(flows)
		if err := e.SendTemplates(); err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, m := range gfDecodeAll(t, w.msgs) {
			got = append(got, len(m.Templates), len(m.Flows))
		}
		if fmt.Sprint(got) != "[8 2 0 2 8 2 0 2 8 0]" {
			t.Errorf("templates, records per packet: %v", got)
		}
	})
}

func TestNetFlow9SendErrors(t *testing.T) {
	w := &captureWriter{fail: func(i int) bool { return i%2 == 1 }}
	e, _ := newTestNetFlow9(t, w, 600, nil)
	err := e.Export(randomFlows(100, 5))
	if !errors.Is(err, errInjected) {
		t.Fatalf("error %v", err)
	}
	s := e.Stats()
	if s.Records+s.RecordsLost != 100 || s.SendErrors != uint64(w.writes)-s.Messages {
		t.Errorf("stats %+v", s)
	}
	// Failed packets leave gaps in the packet sequence.
	for i, m := range gfDecodeAll(t, w.msgs) {
		if m.Seq != uint32(2*i) {
			t.Errorf("packet %d: sequence %d, want %d", i, m.Seq, 2*i)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(randomFlows(1, 1)); err == nil {
		t.Error("Export after Close")
	}
}

func TestNetFlow9Config(t *testing.T) {
	w := &captureWriter{}
	ipfixSet := templates.DefaultSet(templates.IPFIX)
	tests := []struct {
		name string
		cfg  NetFlow9Config
		ok   bool
	}{
		{"defaults", NetFlow9Config{Writer: w}, true},
		{"no writer", NetFlow9Config{}, false},
		{"too small", NetFlow9Config{Writer: w, MaxMessageSize: 200}, false},
		{"too large", NetFlow9Config{Writer: w, MaxMessageSize: 65536}, false},
		{"ipfix templates", NetFlow9Config{Writer: w, Templates: ipfixSet}, false},
		{"negative options interval", NetFlow9Config{Writer: w, Options: &OptionsConfig{Interval: -1}}, false},
	}
	for _, tt := range tests {
		_, err := NewNetFlow9(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestNetFlow9FromNames exports a user layout and decodes it.
func TestNetFlow9FromNames(t *testing.T) {
	set, err := templates.FromNames(templates.NetFlowV9, []string{"sourceIPv4Address", "octetDeltaCount", "flowEndMilliseconds", "ipVersion"})
	if err != nil {
		t.Fatal(err)
	}
	w := &captureWriter{}
	clk := &ipfixClock{v9Boot}
	e, err := NewNetFlow9(NetFlow9Config{Writer: w, Templates: set, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	clk.now = testEpoch
	flows := sampleFlows()
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	got := gfFlows(gfDecodeAll(t, w.msgs))
	want := v9InWireOrder(flows)
	for i := range want {
		_, all := wantV9(&want[i], v9BootMillis)
		ver := byte(6)
		src := all[27]
		if want[i].Key.IsIPv4() {
			ver, src = 4, all[8]
		}
		w := map[uint16][]byte{1: all[1], 21: all[21], 60: {ver}}
		if ver == 4 {
			w[8] = src
		} else {
			w[27] = src
		}
		if len(got[i].Values) != 4 {
			t.Errorf("record %d: %d fields", i, len(got[i].Values))
		}
		for typ, v := range w {
			if !bytes.Equal(got[i].Values[typ], v) {
				t.Errorf("record %d: field %d = %x, want %x", i, typ, got[i].Values[typ], v)
			}
		}
	}
}

func TestNetFlow9Allocs(t *testing.T) {
	e, _ := newTestNetFlow9(t, MessageWriterFunc(func([]byte) error { return nil }), 0, nil)
	flows := randomFlows(300, 1)
	if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("Export of %d flows allocates %v times", len(flows), a)
	}
}

// FuzzNetFlow9Encode encodes one arbitrary flow, decodes it with goflow2
// and requires the values RFC 3954 says.
func FuzzNetFlow9Encode(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, true, uint8(0), uint16(40000), uint16(443), uint8(6), uint8(0), uint8(0),
		uint32(2), uint16(0), uint64(12), uint64(3456), int64(1714564800000), int64(1714564830000), uint16(0x1b))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, []byte{0xff, 0x02, 15: 1}, false, uint8(1), uint16(0), uint16(0), uint8(58), uint8(135), uint8(0),
		uint32(5), uint16(4094), uint64(1), uint64(72), int64(0), int64(-5), uint16(0))
	f.Add([]byte{}, []byte{1}, true, uint8(0xff), uint16(1), uint16(2), uint8(1), uint8(8), uint8(0),
		uint32(math.MaxUint32), uint16(math.MaxUint16), uint64(math.MaxUint64), uint64(0), int64(math.MinInt64/2), int64(math.MaxInt64/2), uint16(math.MaxUint16))
	f.Fuzz(func(t *testing.T, src, dst []byte, ipv4 bool, dir uint8, sport, dport uint16, proto, icmpType, icmpCode uint8,
		ifindex uint32, vlan uint16, packets, octets uint64, startMs, endMs int64, flags uint16) {
		var k bpf.NetFlowId
		if ipv4 {
			k.EthProtocol = 0x0800
			var s4, d4 [4]byte
			copy(s4[:], src)
			copy(d4[:], dst)
			k.SrcIp, k.DstIp = netip.AddrFrom4(s4).As16(), netip.AddrFrom4(d4).As16()
		} else {
			k.EthProtocol = 0x86dd
			copy(k.SrcIp[:], src)
			copy(k.DstIp[:], dst)
		}
		k.Direction, k.SrcPort, k.DstPort, k.TransportProtocol = dir, sport, dport, proto
		k.IcmpType, k.IcmpCode, k.IfIndex, k.VlanId = icmpType, icmpCode, ifindex, vlan
		fl := Flow{Key: KeyOf(k), Packets: packets, Bytes: octets, Start: time.UnixMilli(startMs), End: time.UnixMilli(endMs), TCPFlags: flags}
		w := &captureWriter{}
		e, _ := newTestNetFlow9(t, w, 0, nil)
		if err := e.Export([]Flow{fl}); err != nil {
			t.Fatal(err)
		}
		if err := checkFramingV9(w.msgs[0]); err != nil {
			t.Fatal(err)
		}
		recs := gfFlows(gfDecodeAll(t, w.msgs))
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		checkV9Record(t, recs[0], &fl, v9BootMillis)
	})
}

// BenchmarkNetFlow9Encode encodes batches of 256 flows of all templates
// into 1400-byte packets for a writer that discards them.
func BenchmarkNetFlow9Encode(b *testing.B) {
	flows := randomFlows(256, 2)
	e, _ := newTestNetFlow9(b, MessageWriterFunc(func([]byte) error { return nil }), 0, nil)
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

// TestNetFlow9UptimeMonotonic steps the wall clock back between two
// exports: sysUptime keeps counting on the monotonic clock, unix_secs
// follows the wall clock, and FIRST/LAST_SWITCHED stay consistent with
// both, so a collector still places the flows at their wall times.
func TestNetFlow9UptimeMonotonic(t *testing.T) {
	w := &captureWriter{}
	clk := newFakeClock()
	e, err := NewNetFlow9(NetFlow9Config{Writer: w, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	c := newGFCollector()
	for _, s := range []struct {
		name       string
		wallStep   time.Duration
		monoStep   time.Duration
		wantUptime uint32
	}{
		{"start", 0, 10 * time.Second, 10_000},
		{"wall back an hour", -time.Hour, 5 * time.Second, 15_000},
		{"wall forward a day", 24 * time.Hour, time.Second, 16_000},
	} {
		clk.epoch = clk.epoch.Add(s.wallStep)
		clk.advance(s.monoStep)
		now := clk.Now()
		f := testFlow(flowKey("198.18.0.1", "198.18.0.2", 1000, 2000, 17, 0, 2), 1, 100, 0, 0)
		f.Start, f.End = now.Add(-3*time.Second), now.Add(-time.Second)
		w.msgs = nil
		if err := e.Export([]Flow{f}); err != nil {
			t.Fatal(err)
		}
		m, err := c.decode(w.msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		if m.Uptime != s.wantUptime || m.UnixSecs != uint32(now.Unix()) {
			t.Errorf("%s: sysUptime %d unix_secs %d, want %d and %d", s.name, m.Uptime, m.UnixSecs, s.wantUptime, now.Unix())
		}
		if len(m.Flows) != 1 {
			t.Fatalf("%s: %d flows", s.name, len(m.Flows))
		}
		first := binary.BigEndian.Uint32(m.Flows[0].Values[templates.IEFlowStartSysUpTime])
		last := binary.BigEndian.Uint32(m.Flows[0].Values[templates.IEFlowEndSysUpTime])
		if first != s.wantUptime-3000 || last != s.wantUptime-1000 {
			t.Errorf("%s: FIRST_SWITCHED %d LAST_SWITCHED %d, want %d and %d", s.name, first, last, s.wantUptime-3000, s.wantUptime-1000)
		}
	}
}

// TestTemplateRefreshOff: with both refreshes off (a TCP or TLS stream),
// templates go in the first message and then only when ResendTemplates
// asks (a new connection), however much time and how many messages pass.
func TestTemplateRefreshOff(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			w := &captureWriter{}
			clk := &ipfixClock{testEpoch}
			var e interface {
				Export([]Flow) error
				ResendTemplates()
			}
			var err error
			if proto == templates.NetFlowV9 {
				e, err = NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			} else {
				e, err = NewIPFIX(IPFIXConfig{Writer: w, Now: clk.Now, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			}
			if err != nil {
				t.Fatal(err)
			}
			c := newGFCollector()
			var with []int
			for i := range 60 {
				if i == 40 {
					e.ResendTemplates()
				}
				w.msgs = nil
				if err := e.Export(sampleFlows()[:2]); err != nil {
					t.Fatal(err)
				}
				m, err := c.decode(w.msgs[0])
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Templates) > 0 {
					with = append(with, i)
				}
				clk.Advance(time.Hour)
			}
			if len(with) != 2 || with[0] != 0 || with[1] != 40 {
				t.Errorf("templates in exports %v, want [0 40]", with)
			}
		})
	}
}

// TestWriteTemplatesInsideWriter calls WriteTemplates from inside the
// writer, as a stream transport's hook does when a write reconnects: the
// templates go first and the sequence numbers stay right (IPFIX counts
// data records, v9 packets).
func TestWriteTemplatesInsideWriter(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			var msgs [][]byte
			var e interface {
				Export([]Flow) error
				WriteTemplates() error
			}
			writes := 0
			w := MessageWriterFunc(func(b []byte) error {
				writes++
				if writes == 2 { // a reconnect in the second write
					if err := e.WriteTemplates(); err != nil {
						t.Fatal(err)
					}
				}
				msgs = append(msgs, append([]byte(nil), b...))
				return nil
			})
			var err error
			if proto == templates.NetFlowV9 {
				e, err = NewNetFlow9(NetFlow9Config{Writer: w, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			} else {
				e, err = NewIPFIX(IPFIXConfig{Writer: w, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			}
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := e.Export(sampleFlows()[:2]); err != nil {
					t.Fatal(err)
				}
			}
			c := newGFCollector()
			var got []string
			for _, m := range msgs {
				d, err := c.decode(m)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("t%d f%d s%d", len(d.Templates), len(d.Flows), d.Seq))
			}
			want := []string{"t8 f2 s0", "t8 f0 s2", "t0 f2 s2"}
			if proto == templates.NetFlowV9 {
				want = []string{"t8 f2 s0", "t8 f0 s1", "t0 f2 s2"}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("messages %v, want %v", got, want)
			}
		})
	}
}
