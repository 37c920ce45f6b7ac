package exporter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

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

func TestIPFIXSendTemplates(t *testing.T) {
	w := &captureWriter{}
	e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
	flows := sampleFlows()[:2]
	_ = e.Export(flows)
	_ = e.Export(flows)
	if err := e.SendTemplates(); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range decodeAll(t, w.msgs) {
		got = append(got, len(m.Templates), len(m.Records))
	}
	if fmt.Sprint(got) != "[8 2 0 2 8 0]" {
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
