package exporter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hostflow/hostflow/templates"
)

// testInterfaces has a short name, a non-ASCII description, and one longer
// than any field so cutting shows.
func testInterfaces() []InterfaceInfo {
	return []InterfaceInfo{
		{Index: 1, Name: "lo", Description: "loopback"},
		{Index: 2, Name: "eth0", Description: "uplink – rack 7"},
		{Index: 3, Name: "veth-with-a-very-long-name", Description: strings.Repeat("é", 100)},
		{Index: 4, Name: "wg0"}, // no alias: the description is the name
	}
}

func testOptions() *OptionsConfig {
	return &OptionsConfig{
		Interval:   10 * time.Minute,
		Interfaces: testInterfaces,
		Counters:   func() OptionsCounters { return OptionsCounters{IgnoredPackets: 7, NotSentFlows: 3} },
	}
}

// newOptionsExporter returns an IPFIX or v9 exporter with testOptions,
// started at v9Boot, its clock reading testEpoch.
func newOptionsExporter(t testing.TB, proto templates.ExportProtocol, w MessageWriter, maxSize int, opts *OptionsConfig) (interface {
	Export([]Flow) error
}, *ipfixClock) {
	t.Helper()
	clk := &ipfixClock{v9Boot}
	var e interface{ Export([]Flow) error }
	var err error
	if proto == templates.NetFlowV9 {
		e, err = NewNetFlow9(NetFlow9Config{Writer: w, SourceID: 42, MaxMessageSize: maxSize, Now: clk.Now, Options: opts})
	} else {
		// A gsoCapture writer may ask for padding (see pad_test.go).
		g, ok := w.(*gsoCapture)
		pad := ok && g.pad
		e, err = NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, MaxMessageSize: maxSize, Now: clk.Now, Options: opts, PadForGSO: pad})
	}
	if err != nil {
		t.Fatal(err)
	}
	clk.now = testEpoch
	return e, clk
}

// wantOptions is the options records a collector should decode, by
// template, written from RFC 7011/3954 and the IANA registry: scope and
// option values as raw bytes by element ID. messages and records are the
// exporter's counts before the message.
func wantOptions(proto templates.ExportProtocol, messages, records uint64) []gfRecord {
	be := binary.BigEndian
	u64 := func(v uint64) []byte { return be.AppendUint64(nil, v) }
	var out []gfRecord
	for _, ifc := range testInterfaces() {
		// Fixed 16 and 64 bytes, NUL-padded, cut at a rune; the
		// description is the alias, else the name.
		fix := func(s string, n int) []byte {
			b := []byte(s)
			if len(b) > n {
				b = b[:n]
				for !utf8.Valid(b) {
					b = b[:len(b)-1]
				}
			}
			return append(bytes.Clone(b), make([]byte, n-len(b))...)
		}
		desc := ifc.Description
		if desc == "" {
			desc = ifc.Name
		}
		idx := be.AppendUint32(nil, ifc.Index)
		scope := map[uint16][]byte{10: idx}
		if proto == templates.NetFlowV9 {
			scope = map[uint16][]byte{2: idx}
		}
		out = append(out, gfRecord{TemplateID: templates.OptionsInterfaces, Scope: scope, Values: map[uint16][]byte{10: idx, 82: fix(ifc.Name, 16), 83: fix(desc, 64)}})
	}
	if proto == templates.NetFlowV9 {
		sys := map[uint16][]byte{1: {0, 0, 0, 42}}
		return append(out,
			gfRecord{TemplateID: templates.OptionsSampling, Scope: sys, Values: map[uint16][]byte{34: {0, 0, 0, 1}, 49: {2}}},
			gfRecord{TemplateID: templates.OptionsReliability, Scope: sys, Values: map[uint16][]byte{41: u64(messages), 42: u64(records)}})
	}
	dom := map[uint16][]byte{149: {0, 0, 0, 42}}
	return append(out,
		// Random sampling of 1 in 1: uniform probabilistic (4) with
		// probability 1.0, interval 1; no samplingAlgorithm (35), which
		// nfdump 1.7.1 does not take with 34 (see templates.Options).
		gfRecord{TemplateID: templates.OptionsSampling, Scope: dom, Values: map[uint16][]byte{304: {0, 4}, 311: u64(math.Float64bits(1)), 34: {0, 0, 0, 1}}},
		gfRecord{TemplateID: templates.OptionsReliability, Scope: dom, Values: map[uint16][]byte{
			41: u64(messages), 42: u64(records), 164: u64(7), 166: u64(3), 160: u64(uint64(v9Boot.UnixMilli())),
		}})
}

func checkOptions(t *testing.T, got, want []gfRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d options records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.TemplateID != w.TemplateID {
			t.Errorf("options record %d: template %d, want %d", i, g.TemplateID, w.TemplateID)
			continue
		}
		for _, m := range [][2]map[uint16][]byte{{g.Scope, w.Scope}, {g.Values, w.Values}} {
			if len(m[0]) != len(m[1]) {
				t.Errorf("options record %d: %d fields, want %d", i, len(m[0]), len(m[1]))
			}
			for id, v := range m[1] {
				if !bytes.Equal(m[0][id], v) {
					t.Errorf("options record %d (%d): element %d = %x, want %x", i, w.TemplateID, id, m[0][id], v)
				}
			}
		}
	}
}

// TestOptions checks the options templates and data of both protocols:
// golden bytes of the first message, goflow2's decoding of it, and when
// options are sent again.
func TestOptions(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			w := &captureWriter{}
			e, clk := newOptionsExporter(t, proto, w, 0, testOptions())
			flows := sampleFlows()[:2]
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			if len(w.msgs) != 1 {
				t.Fatalf("%d messages", len(w.msgs))
			}
			golden := checkGolden(t, proto.String()+"-options.golden", w.msgs[0])
			c := newGFCollector()
			m, err := c.decode(golden)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(m.Templates, m.OptionTemplates) != "[256 257 258 259 260 261 262 263] [264 265 266]" {
				t.Errorf("templates %v, options templates %v", m.Templates, m.OptionTemplates)
			}
			if proto == templates.NetFlowV9 {
				if err := checkFramingV9(golden); err != nil {
					t.Error(err)
				}
				if want := templates.NumTemplates + 3 + 6 + 2; int(m.Count) != want {
					t.Errorf("count %d, want %d", m.Count, want)
				}
			}
			checkOptions(t, m.Options, wantOptions(proto, 0, 0))
			if len(m.Flows) != 2 {
				t.Errorf("%d flow records", len(m.Flows))
			}

			// Within the interval: no options; after it, options with
			// the counts so far.
			clk.Advance(9 * time.Minute)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			if m, err := c.decode(w.msgs[1]); err != nil || len(m.Options) != 0 {
				t.Errorf("options inside the interval: %v, %d records", err, len(m.Options))
			}
			clk.Advance(time.Minute)
			if err := e.Export(nil); err != nil {
				t.Fatal(err)
			}
			if len(w.msgs) != 3 {
				t.Fatalf("Export(nil) with options due sent %d messages", len(w.msgs)-2)
			}
			m, err = c.decode(w.msgs[2])
			if err != nil {
				t.Fatal(err)
			}
			checkOptions(t, m.Options, wantOptions(proto, 2, 4))
			if err := e.Export(nil); err != nil || len(w.msgs) != 3 {
				t.Errorf("Export(nil) with nothing due: %v, %d messages", err, len(w.msgs))
			}
		})
	}
}

// TestOptionsSpill sends an interface table larger than a message: it
// spreads over messages, each decodable, none over the limit.
func TestOptionsSpill(t *testing.T) {
	var ifaces []InterfaceInfo
	for i := range 300 {
		ifaces = append(ifaces, InterfaceInfo{Index: uint32(i), Name: fmt.Sprintf("veth%d", i), Description: strings.Repeat("x", i%200)})
	}
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			w := &captureWriter{}
			opts := &OptionsConfig{Interfaces: func() []InterfaceInfo { return ifaces }}
			e, _ := newOptionsExporter(t, proto, w, 640, opts)
			if err := e.Export(randomFlows(50, 3)); err != nil {
				t.Fatal(err)
			}
			var n, flows int
			for i, m := range gfDecodeAll(t, w.msgs) {
				if len(w.msgs[i]) > 640 {
					t.Errorf("message %d: %d bytes", i, len(w.msgs[i]))
				}
				for _, r := range m.Options {
					if r.TemplateID == templates.OptionsInterfaces {
						n++
					}
				}
				flows += len(m.Flows)
			}
			if n != 300 || flows != 50 {
				t.Errorf("%d interfaces, %d flows; want 300, 50", n, flows)
			}
		})
	}
}
