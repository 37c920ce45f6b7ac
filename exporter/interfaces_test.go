package exporter

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/templates"
)

func TestNewInterfacesValidates(t *testing.T) {
	for _, tc := range []struct {
		overrides map[string]uint32
		err       string
	}{
		{map[string]uint32{"eth0": 3, "eth1": 4}, ""},
		{map[string]uint32{"eth0": 0}, "0 is no index"},
		{map[string]uint32{"eth0": 3, "eth1": 3}, "interface index 3: given to eth0 and eth1"},
	} {
		_, err := NewInterfaces(InterfacesConfig{Overrides: tc.overrides})
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: error %v, want %q", tc.overrides, err, tc.err)
		}
	}
}

// TestInterfacesResolve: names and exported indexes come from the last
// Update; an unknown ifindex lists the links again, at most once per
// MissInterval; an override equal to another link's ifindex is warned of
// once.
func TestInterfacesResolve(t *testing.T) {
	now := testEpoch
	lookups := 0
	links := []InterfaceInfo{{Index: 2, Name: "eth0"}, {Index: 3, Name: "veth1"}}
	var logs bytes.Buffer
	ifs, err := NewInterfaces(InterfacesConfig{
		Overrides: map[string]uint32{"eth0": 3},
		Lookup:    func() []InterfaceInfo { lookups++; return links },
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		Now:       func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := ifs.Name(2); got != "eth0" || lookups != 1 {
		t.Errorf("Name(2) %q after %d lookups, want eth0 after 1", got, lookups)
	}
	if got := ifs.Index(2); got != 3 {
		t.Errorf("Index(2) = %d, want the override 3", got)
	}
	if got := ifs.Index(3); got != 3 {
		t.Errorf("Index(3) = %d, want its own 3", got)
	}
	if n := strings.Count(logs.String(), "eth0 exports 3, the ifindex of veth1"); n != 1 {
		t.Errorf("conflict warned %d times, want 1:\n%s", n, logs.String())
	}
	if got := ifs.Name(9); got != "" || lookups != 1 {
		t.Errorf("Name(9) %q after %d lookups: a miss within MissInterval must not list again", got, lookups)
	}
	now = now.Add(MissInterval)
	links = append(links, InterfaceInfo{Index: 9, Name: "wg0"})
	if got := ifs.Name(9); got != "wg0" || lookups != 2 {
		t.Errorf("Name(9) %q after %d lookups, want wg0 after 2", got, lookups)
	}
	if n := strings.Count(logs.String(), "conflicts"); n != 1 {
		t.Errorf("same conflict warned again:\n%s", logs.String())
	}
	if got := ifs.Index(0); got != 0 {
		t.Errorf("Index(0) = %d: unknown stays 0", got)
	}
	var none *Interfaces
	if none.Name(2) != "" || none.Index(2) != 2 {
		t.Error("a nil Interfaces must name nothing and keep indexes")
	}
}

// ifNameExport exports sampleFlows with interfaceName and the ingress and
// egress interface in the records, eth0 (ifindex 2) exported as 30.
func ifNameExport(t *testing.T, proto templates.ExportProtocol) [][]byte {
	t.Helper()
	set, err := templates.FromNames(proto, []string{"sourceIPv4Address", "destinationIPv4Address", "octetDeltaCount", "ingressInterface", "interfaceName"})
	if err != nil {
		t.Fatal(err)
	}
	ifs, err := NewInterfaces(InterfacesConfig{Overrides: map[string]uint32{"eth0": 30}})
	if err != nil {
		t.Fatal(err)
	}
	ifs.Update(testInterfaces())
	w := &captureWriter{}
	clk := &ipfixClock{v9Boot}
	var e Sink
	if proto == templates.NetFlowV9 {
		e, err = NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, Templates: set, Options: testOptions(), Interfaces: ifs})
	} else {
		e, err = NewIPFIX(IPFIXConfig{Writer: w, Now: clk.Now, Templates: set, Options: testOptions(), Interfaces: ifs})
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(sampleFlows()); err != nil {
		t.Fatal(err)
	}
	return w.msgs
}

// TestInterfaceNameDecoded: goflow2's decoder reads interfaceName (82,
// v9 IF_NAME) of each record as the name of its interface, NUL-padded to
// 16 bytes, and the overridden index in the records and in the options
// interface table.
func TestInterfaceNameDecoded(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			msgs := ifNameExport(t, proto)
			// Interface 5 is no link: it has no name.
			names := map[uint32]string{1: "lo", 2: "eth0", 3: "veth-with-a-very", 4: "wg0", 5: ""}
			exported := map[uint32]uint32{1: 1, 2: 30, 3: 3, 4: 4, 5: 5}
			var flows, eth0, opts int
			for _, m := range gfDecodeAll(t, msgs) {
				for _, r := range m.Flows {
					flows++
					name := r.Values[templates.IEInterfaceName]
					if len(name) != templates.InterfaceNameLen {
						t.Fatalf("record %d: interfaceName of %d bytes", flows, len(name))
					}
					idx := binary.BigEndian.Uint32(append(r.Values[templates.IEIngressInterface], r.Values[templates.IEEgressInterface]...))
					var kernel uint32
					for k, x := range exported {
						if x == idx {
							kernel = k
						}
					}
					if got := string(bytes.TrimRight(name, "\x00")); kernel == 0 || got != names[kernel] {
						t.Errorf("record %d: interface %d named %q", flows, idx, got)
					}
					if kernel == 2 {
						eth0++
					}
				}
				for _, r := range m.Options {
					if n := r.Values[templates.IEInterfaceName]; n != nil && string(bytes.TrimRight(n, "\x00")) == "eth0" {
						opts++
						if got := binary.BigEndian.Uint32(r.Values[templates.IEIngressInterface]); got != 30 {
							t.Errorf("options: eth0 has index %d, want 30", got)
						}
					}
				}
			}
			if flows != len(sampleFlows()) || eth0 == 0 || opts != 1 {
				t.Errorf("decoded %d records (%d on eth0), %d eth0 options rows; want %d, some, 1", flows, eth0, opts, len(sampleFlows()))
			}
		})
	}
}

// TestTsharkInterfaceName: Wireshark decodes interfaceName in data records
// of both protocols, with the overridden index, and finds nothing
// malformed.
func TestTsharkInterfaceName(t *testing.T) {
	tshark := testutil.RequireTool(t, "tshark")
	for _, tc := range []struct {
		proto templates.ExportProtocol
		port  uint16
	}{{templates.IPFIX, 4739}, {templates.NetFlowV9, 2055}} {
		t.Run(tc.proto.String(), func(t *testing.T) {
			pcap := writePcap(t, ifNameExport(t, tc.proto), tc.port)
			out := runTool(t, tshark, "-r", pcap, "-d", "udp.port=="+strconv.Itoa(int(tc.port))+",cflow", "-V", "-Y", "cflow")
			for _, bad := range []string{"Malformed", "Expert Info (Warning", "Expert Info (Error", "Unknown"} {
				if i := strings.Index(out, bad); i >= 0 {
					t.Errorf("tshark output has %q:\n%s", bad, surrounding(out, i))
				}
			}
			// A data record: the interface, then its name.
			for _, want := range []string{"InputInt: 30\n            IfName: eth0\n", "IfName: wg0\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("tshark output lacks %q", want)
				}
			}
		})
	}
}

// TestInterfaceNameAllocs: interfaceName and overridden indexes keep the
// encoder at zero allocations per Export, misses included (the miss limit
// keeps unknown ifindexes from listing links per record).
func TestInterfaceNameAllocs(t *testing.T) {
	set, err := templates.FromNames(templates.IPFIX, []string{"sourceIPv4Address", "ingressInterface", "interfaceName", "octetDeltaCount"})
	if err != nil {
		t.Fatal(err)
	}
	ifs, err := NewInterfaces(InterfacesConfig{Overrides: map[string]uint32{"eth0": 30}, Lookup: testInterfaces, Now: func() time.Time { return testEpoch }})
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewIPFIX(IPFIXConfig{Writer: MessageWriterFunc(func([]byte) error { return nil }), Now: (&ipfixClock{testEpoch}).Now, Templates: set, Interfaces: ifs})
	if err != nil {
		t.Fatal(err)
	}
	flows := randomFlows(300, 1)
	_ = e.Export(flows)
	if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("%v allocations per Export", a)
	}
}

// BenchmarkInterfaceName compares a layout with the kernel's ifindex to the
// same with interfaceName and an overridden index, in one run.
func BenchmarkInterfaceName(b *testing.B) {
	for _, tc := range []struct {
		name   string
		fields []string
		ifs    map[string]uint32
		maxIf  uint32 // ifindexes 1 to maxIf; testInterfaces has 1 to 4
	}{
		{"kernel-index", []string{"sourceIPv4Address", "destinationIPv4Address", "octetDeltaCount", "ingressInterface"}, nil, 4},
		{"name-and-override", []string{"sourceIPv4Address", "destinationIPv4Address", "octetDeltaCount", "ingressInterface", "interfaceName"}, map[string]uint32{"eth0": 30}, 4},
		{"name-and-override-unknown-ifindexes", []string{"sourceIPv4Address", "destinationIPv4Address", "octetDeltaCount", "ingressInterface", "interfaceName"}, map[string]uint32{"eth0": 30}, 64},
	} {
		b.Run(tc.name, func(b *testing.B) {
			set, err := templates.FromNames(templates.IPFIX, tc.fields)
			if err != nil {
				b.Fatal(err)
			}
			ifs, err := NewInterfaces(InterfacesConfig{Overrides: tc.ifs, Lookup: testInterfaces})
			if err != nil {
				b.Fatal(err)
			}
			ifs.Update(testInterfaces())
			e, err := NewIPFIX(IPFIXConfig{Writer: MessageWriterFunc(func([]byte) error { return nil }), Templates: set, Interfaces: ifs})
			if err != nil {
				b.Fatal(err)
			}
			flows := randomFlows(1000, 1)
			for i := range flows {
				flows[i].Key.IfIndex = 1 + uint32(i)%tc.maxIf
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = e.Export(flows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(flows)), "ns/record")
		})
	}
}
