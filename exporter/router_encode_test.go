package exporter

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/hostflow/hostflow/templates"
)

// routerSampleFlows is sampleFlows with the router fields filled as
// router.Enricher would: forwarded, dropped and consumed ingress flows,
// NAT on some, and egress flows (whose router fields stay zero). It feeds
// the router golden files: changing it changes them.
func routerSampleFlows() []Flow {
	fs := sampleFlows()
	a := netip.MustParseAddr
	// tcp4, ingress: forwarded via a gateway, masqueraded.
	fs[0].EgressIfIndex, fs[0].NextHop, fs[0].ForwardingStatus = 7, a("192.0.2.254"), 64
	fs[0].SrcPrefixLen, fs[0].DstPrefixLen = 24, 25
	fs[0].PostNATSrc, fs[0].PostNATDst, fs[0].PostNATSrcPort, fs[0].PostNATDstPort = a("203.0.113.1"), a("198.51.100.7"), 61000, 443
	// udp4 is egress: masks only.
	fs[1].SrcPrefixLen, fs[1].DstPrefixLen = 8, 32
	// icmp4, ingress: consumed (a ping to the host).
	fs[2].ForwardingStatus, fs[2].SrcPrefixLen, fs[2].DstPrefixLen = 192, 24, 24
	// tcp6, ingress: forwarded on a connected route, DNAT.
	fs[4].EgressIfIndex, fs[4].NextHop, fs[4].ForwardingStatus = 9, a("2001:db8::2"), 64
	fs[4].SrcPrefixLen, fs[4].DstPrefixLen = 64, 80
	fs[4].PostNATSrc, fs[4].PostNATDst, fs[4].PostNATSrcPort, fs[4].PostNATDstPort = a("2001:db8::1"), a("2001:db8:1::2"), 22, 51001
	// udp6, ingress: dropped (no route).
	fs[5].ForwardingStatus, fs[5].SrcPrefixLen = 128, 64
	// A mismatched family must not leak: an IPv4 next hop on an IPv6
	// flow encodes as ::.
	fs[5].NextHop = a("192.0.2.1")
	return fs
}

// wantRouterRaw is the raw bytes of f's record in a router layout, by
// element ID: the default layout's values (wantIPFIXRaw or wantV9) with
// both interfaces and the router elements, written from the IANA
// definitions.
func wantRouterRaw(f *Flow, base map[uint16][]byte) map[uint16][]byte {
	k := &f.Key
	be := binary.BigEndian
	u16 := func(v uint16) []byte { return be.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return be.AppendUint32(nil, v) }
	v := map[uint16][]byte{}
	for id, b := range base {
		v[id] = b
	}
	in, out := k.IfIndex, f.EgressIfIndex
	if k.Direction == 1 {
		in, out = 0, k.IfIndex
	}
	v[10], v[14] = u32(in), u32(out)
	addr := func(a netip.Addr, n int) []byte {
		b := make([]byte, n)
		if n == 4 && a.Is4() {
			b4 := a.As4()
			copy(b, b4[:])
		}
		if n == 16 && a.Is6() {
			b16 := a.As16()
			copy(b, b16[:])
		}
		return b
	}
	v[89] = []byte{f.ForwardingStatus}
	// ICMP records have no ports, post-NAPT ones included.
	if _, transport := base[7]; transport {
		v[227], v[228] = u16(f.PostNATSrcPort), u16(f.PostNATDstPort)
	}
	if k.EtherType() == 0x0800 {
		v[15] = addr(f.NextHop, 4)
		v[9], v[13] = []byte{f.SrcPrefixLen}, []byte{f.DstPrefixLen}
		v[225], v[226] = addr(f.PostNATSrc, 4), addr(f.PostNATDst, 4)
	} else {
		v[62] = addr(f.NextHop, 16)
		v[29], v[30] = []byte{f.SrcPrefixLen}, []byte{f.DstPrefixLen}
		v[281], v[282] = addr(f.PostNATSrc, 16), addr(f.PostNATDst, 16)
	}
	return v
}

func checkRaw(t *testing.T, i int, got gfRecord, want map[uint16][]byte) {
	t.Helper()
	if len(got.Values) != len(want) {
		t.Errorf("record %d: %d fields, want %d", i, len(got.Values), len(want))
	}
	for id, w := range want {
		if g, ok := got.Values[id]; !ok || !bytes.Equal(g, w) {
			t.Errorf("record %d: element %d = %x, want %x", i, id, g, w)
		}
	}
}

// TestRouterGolden compares one message per router template with
// testdata/[v9-]router-<template>.golden and decodes the golden bytes with
// goflow2. Regenerate with: go test ./exporter/ -run TestRouterGolden
// -update, and review the diff.
func TestRouterGolden(t *testing.T) {
	all := routerSampleFlows()
	for _, p := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		set := templates.RouterSet(p)
		for _, tmpl := range set.Templates() {
			t.Run(p.String()+"/"+tmpl.Name, func(t *testing.T) {
				var flows []Flow
				for _, f := range all {
					if wantRecord(&f).TemplateID == tmpl.ID {
						flows = append(flows, f)
					}
				}
				w := &captureWriter{}
				name := "router-" + tmpl.Name + ".golden"
				if p == templates.IPFIX {
					e, err := NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, Templates: set, Now: (&ipfixClock{testEpoch}).Now})
					if err != nil {
						t.Fatal(err)
					}
					if err := e.Export(flows); err != nil {
						t.Fatal(err)
					}
				} else {
					name = "v9-" + name
					clk := &ipfixClock{v9Boot}
					e, err := NewNetFlow9(NetFlow9Config{Writer: w, SourceID: 42, Templates: set, Now: clk.Now})
					if err != nil {
						t.Fatal(err)
					}
					clk.now = testEpoch
					if err := e.Export(flows); err != nil {
						t.Fatal(err)
					}
				}
				if len(w.msgs) != 1 {
					t.Fatalf("%d messages, want 1", len(w.msgs))
				}
				want := checkGolden(t, name, w.msgs[0])
				if p == templates.NetFlowV9 {
					if err := checkFramingV9(want); err != nil {
						t.Fatal(err)
					}
				}
				m := gfDecodeAll(t, [][]byte{want})[0]
				if len(m.Templates) != templates.NumTemplates || len(m.Flows) != len(flows) {
					t.Fatalf("%d templates, %d records; want %d, %d", len(m.Templates), len(m.Flows), templates.NumTemplates, len(flows))
				}
				for i := range flows {
					f := &flows[i]
					var base map[uint16][]byte
					if p == templates.IPFIX {
						base = wantIPFIXRaw(f)
					} else {
						_, base = wantV9(f, v9BootMillis)
					}
					if m.Flows[i].TemplateID != tmpl.ID {
						t.Errorf("record %d: template %d", i, m.Flows[i].TemplateID)
					}
					checkRaw(t, i, m.Flows[i], wantRouterRaw(f, base))
				}
			})
		}
	}
}

// TestRouterDifferential exports many random flows with random router
// fields in the router layouts and decodes them with goflow2; it also
// checks that the record buffer's reuse leaves no stale bytes where a
// value is unknown.
func TestRouterDifferential(t *testing.T) {
	flows := randomFlows(600, 11)
	for i := range flows {
		f := &flows[i]
		if i%3 == 0 {
			continue // all router fields unknown
		}
		f.EgressIfIndex = uint32(i)
		f.ForwardingStatus = []uint8{64, 128, 192}[i%3]
		f.SrcPrefixLen, f.DstPrefixLen = uint8(i%33), uint8(i%129)
		f.PostNATSrcPort, f.PostNATDstPort = uint16(i*7), uint16(i*13)
		if f.Key.IsIPv4() {
			f.NextHop = netip.AddrFrom4([4]byte{198, 18, byte(i), 1})
			f.PostNATSrc = netip.AddrFrom4([4]byte{198, 19, byte(i), 2})
			f.PostNATDst = netip.AddrFrom4([4]byte{198, 19, byte(i), 3})
		} else {
			f.NextHop = netip.AddrFrom16([16]byte{0xfd, 0, 0x10, 15: byte(i)})
			f.PostNATSrc = netip.AddrFrom16([16]byte{0xfd, 0, 0x20, 15: byte(i)})
			f.PostNATDst = netip.AddrFrom16([16]byte{0xfd, 0, 0x30, 15: byte(i)})
		}
	}
	for _, p := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		w := &captureWriter{}
		set := templates.RouterSet(p)
		var err error
		if p == templates.IPFIX {
			var e *IPFIX
			if e, err = NewIPFIX(IPFIXConfig{Writer: w, Templates: set, Now: (&ipfixClock{testEpoch}).Now}); err == nil {
				err = e.Export(flows)
			}
		} else {
			clk := &ipfixClock{v9Boot}
			var e *NetFlow9
			if e, err = NewNetFlow9(NetFlow9Config{Writer: w, Templates: set, Now: clk.Now}); err == nil {
				clk.now = testEpoch
				err = e.Export(flows)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		got := gfFlows(gfDecodeAll(t, w.msgs))
		want := inWireOrder(flows)
		if len(got) != len(want) {
			t.Fatalf("%v: %d records, want %d", p, len(got), len(want))
		}
		for i := range want {
			var base map[uint16][]byte
			if p == templates.IPFIX {
				base = wantIPFIXRaw(&want[i])
			} else {
				_, base = wantV9(&want[i], v9BootMillis)
			}
			checkRaw(t, i, got[i], wantRouterRaw(&want[i], base))
		}
	}
}

// TestRouterAllocs: router fields encode without allocating, like the
// default ones.
func TestRouterAllocs(t *testing.T) {
	flows := routerSampleFlows()
	e, err := NewIPFIX(IPFIXConfig{Writer: routerDiscardWriter{}, Templates: templates.RouterSet(templates.IPFIX), Now: (&ipfixClock{testEpoch}).Now})
	if err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("Export allocates %v times", a)
	}
}

type routerDiscardWriter struct{}

func (routerDiscardWriter) WriteMessage([]byte) error { return nil }
