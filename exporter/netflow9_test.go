package exporter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

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
