package exporter

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// TestFillBits checks the bitset operations of the search against a
// set of offsets kept as bools.
func TestFillBits(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	set := func(b *fillBits, ref []bool) {
		for i := range ref {
			if ref[i] {
				b[i/64] |= 1 << (i % 64)
			}
		}
	}
	check := func(what string, b *fillBits, ref []bool) {
		t.Helper()
		for i := range ref {
			if b.has(i) != ref[i] {
				t.Fatalf("%s: offset %d: %v, want %v", what, i, b.has(i), ref[i])
			}
		}
	}
	for range 200 {
		ref := make([]bool, fillWindow+1)
		for i := range ref {
			ref[i] = r.IntN(8) == 0
		}
		var a fillBits
		set(&a, ref)
		check("set", &a, ref)
		if a.has(-1) || a.has(fillWindow+1) {
			t.Fatal("has: offset out of the window")
		}
		for _, s := range []int{0, 1, 3, 54, 63, 64, 65, 127, 128, 200, fillWindow, fillWindow + 1, 300} {
			b := fillBits{}
			b.orShifted(&a, s)
			want := make([]bool, len(ref))
			for i := range ref {
				if i-s >= 0 && ref[i-s] {
					want[i] = true
				}
			}
			check("orShifted", &b, want)
		}
		for n := range 4 {
			b := a
			b.smear(n)
			want := make([]bool, len(ref))
			for i := range ref {
				for p := 0; p <= n; p++ {
					want[i] = want[i] || i-p >= 0 && ref[i-p]
				}
			}
			check("smear", &b, want)
		}
		for _, i := range []int{0, 1, 63, 64, 100, fillWindow, fillWindow + 5} {
			want := -1
			for j := min(i, fillWindow); j >= 0; j-- {
				if ref[j] {
					want = j
					break
				}
			}
			if got := a.below(i); got != want {
				t.Fatalf("below(%d) = %d, want %d", i, got, want)
			}
		}
	}
}

// onlyVariants returns the flows whose template index is set in mask.
func onlyVariants(flows []Flow, mask uint8) []Flow {
	var out []Flow
	for _, f := range flows {
		if mask>>f.Key.variant()&1 != 0 {
			out = append(out, f)
		}
	}
	return out
}

var (
	v4Transport = uint8(1<<templates.Variant(true, false, false) | 1<<templates.Variant(true, true, false))
	v6Transport = uint8(1<<templates.Variant(false, false, false) | 1<<templates.Variant(false, true, false))
)

// realisticFlows is traffic as a host sees it: mostly IPv4 TCP and UDP in
// both directions, some IPv6, a little ICMP.
func realisticFlows(n int, seed uint64) []Flow {
	r := rand.New(rand.NewPCG(seed, 9))
	all := randomFlows(4*n, seed)
	var out []Flow
	for _, f := range all {
		v, keep := f.Key.variant(), false
		switch {
		case v4Transport>>v&1 != 0:
			keep = r.IntN(100) < 80
		case v6Transport>>v&1 != 0:
			keep = r.IntN(100) < 30
		default:
			keep = r.IntN(100) < 5
		}
		if keep && len(out) < n {
			out = append(out, f)
		}
	}
	return out
}

var fillCases = []struct {
	name    string
	max     int
	batches [][]Flow
	// misses is how many messages of all exports may be neither L,
	// nor their export's last, nor carry templates.
	misses int
	// full: L is the maximum size.
	full bool
}{
	{"benchmark 256 flows", 1400, slices.Repeat([][]Flow{randomFlows(256, 2)}, 4), 0, true},
	{"1000 flows", 1400, [][]Flow{randomFlows(1000, 7), randomFlows(1000, 8)}, 1, true},
	{"5000 flows", 1400, [][]Flow{randomFlows(5000, 5)}, 0, true},
	{"small messages", 600, [][]Flow{randomFlows(300, 11), randomFlows(40, 12)}, 3, true},
	{"odd size", 1203, [][]Flow{append(sampleFlows(), randomFlows(500, 13)...)}, 0, true},
	{"jumbo", 8950, [][]Flow{randomFlows(2000, 15)}, 1, true},
	{"one template", 1400, [][]Flow{slices.Repeat(sampleFlows()[:1], 100)}, 0, false},
	{"ipv4 both directions", 1400, [][]Flow{onlyVariants(randomFlows(2000, 16), v4Transport)}, 0, false},
	{"realistic", 1400, [][]Flow{realisticFlows(1000, 17), realisticFlows(1000, 18), realisticFlows(300, 19)}, 3, true},
	{"one message", 1400, [][]Flow{randomFlows(5, 14)}, 0, false},
}

// fillExports exports each batch in turn to a fresh IPFIX exporter of
// max-byte messages on a writer reporting gso, with PadForGSO if pad.
func fillExports(t testing.TB, gso, pad bool, max int, batches ...[]Flow) *gsoCapture {
	t.Helper()
	w := &gsoCapture{gso: gso}
	clk := &ipfixClock{testEpoch}
	e, err := NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, MaxMessageSize: max, Now: clk.Now, PadForGSO: pad})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := e.Export(b); err != nil {
			t.Fatal(err)
		}
		w.ends = append(w.ends, len(w.msgs))
		clk.now = clk.now.Add(time.Second)
	}
	return w
}

// checkFilled decodes the messages of fillExports with the reference
// decoder (strict RFC 7011 framing: padding zero and shorter than a
// record) and requires every flow of the batches exactly once, each
// template's in the order given, sequence numbers counting the records
// of the messages before, every message within max and, unless pad,
// no data set with more than maxSetPad octets of padding.
func checkFilled(t testing.TB, w *gsoCapture, max int, pad bool, batches [][]Flow) []decodedMsg {
	t.Helper()
	dm := decodeAll(t, w.msgs)
	var want [templates.NumTemplates][]Flow
	for _, b := range batches {
		for i := range b {
			v := b[i].Key.variant()
			want[v] = append(want[v], b[i])
		}
	}
	var got [templates.NumTemplates][]decodedRecord
	for i, m := range dm {
		if len(w.msgs[i]) > max {
			t.Fatalf("message %d: %d bytes, over %d", i, len(w.msgs[i]), max)
		}
		if i > 0 && m.Seq != dm[i-1].Seq+uint32(len(dm[i-1].Records)) {
			t.Fatalf("message %d: sequence %d, want %d", i, m.Seq, dm[i-1].Seq+uint32(len(dm[i-1].Records)))
		}
		for _, r := range m.Records {
			v := int(r.TemplateID - templates.IPv4Ingress)
			got[v] = append(got[v], r)
		}
		if !pad {
			for _, p := range setPadding(t, w.msgs[i]) {
				if p > maxSetPad {
					t.Fatalf("message %d: a data set has %d octets of padding", i, p)
				}
			}
		}
	}
	for v := range want {
		if len(got[v]) != len(want[v]) {
			t.Fatalf("template %d: %d records, want %d", int(templates.IPv4Ingress)+v, len(got[v]), len(want[v]))
		}
		for i := range got[v] {
			checkRecord(t, got[v][i], &want[v][i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return dm
}

// setPadding returns the padding octets of each data set of an IPFIX
// message of the default templates.
func setPadding(t testing.TB, m []byte) []int {
	t.Helper()
	lens := map[uint16]int{}
	for _, ct := range newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0).compiled {
		lens[ct.t.ID] = ct.recLen
	}
	var pads []int
	for o := 16; o+4 <= len(m); {
		id, l := binary.BigEndian.Uint16(m[o:]), int(binary.BigEndian.Uint16(m[o+2:]))
		if r := lens[id]; r > 0 {
			pads = append(pads, (l-setHeaderLen)%r)
		}
		if l < 4 {
			break
		}
		o += l
	}
	return pads
}

// fillTarget is the length L of an export's messages: that of its first
// message without templates, if it has one besides its last.
func fillTarget(msgs [][]byte) int {
	for _, m := range msgs[:max(len(msgs)-1, 0)] {
		if !hasTemplates(m) {
			return len(m)
		}
	}
	return 0
}

// hasTemplates reports whether an IPFIX message starts with a template set.
func hasTemplates(m []byte) bool {
	return len(m) >= 18 && binary.BigEndian.Uint16(m[16:]) == 2
}

// fillMisses counts the messages of each export that are not L, not the
// export's last and carry no templates.
func fillMisses(w *gsoCapture) (misses int, targets []int) {
	from := 0
	for _, end := range w.ends {
		msgs := w.msgs[from:end]
		l := fillTarget(msgs)
		targets = append(targets, l)
		for _, m := range msgs[:max(len(msgs)-1, 0)] {
			if len(m) != l && !hasTemplates(m) {
				misses++
			}
		}
		from = end
	}
	return misses, targets
}

// gsoSends is how many sends a UDPWriter with GSO makes of messages of
// these lengths: mmsgBatch.build's headers.
func gsoSends(lens []int) int {
	b := newMmsgBatch(len(lens), &UDPWriter{}, true)
	for _, l := range lens {
		b.add(make([]byte, l), 0)
	}
	b.build(0, true)
	return b.entries
}

func exportLens(w *gsoCapture) [][]int {
	var out [][]int
	from := 0
	for _, end := range w.ends {
		var ls []int
		for _, m := range w.msgs[from:end] {
			ls = append(ls, len(m))
		}
		out = append(out, ls)
		from = end
	}
	return out
}

// TestIPFIXExactFill: for a writer with GSO, every message of an export
// is L bytes long but for the last, those carrying templates and a few
// the remaining mix cannot fill (misses, a bound per case), with every
// record once, set padding of at most 3 octets, and L the maximum size
// for mixed traffic.
func TestIPFIXExactFill(t *testing.T) {
	for _, tc := range fillCases {
		t.Run(tc.name, func(t *testing.T) {
			w := fillExports(t, true, false, tc.max, tc.batches...)
			checkFilled(t, w, tc.max, false, tc.batches)
			misses, targets := fillMisses(w)
			if misses > tc.misses {
				t.Errorf("%d messages neither L nor last, want at most %d: %v", misses, tc.misses, exportLens(w))
			}
			for x, l := range targets {
				if tc.full && l != 0 && l != tc.max {
					t.Errorf("export %d: L = %d, want the maximum size %d", x, l, tc.max)
				}
			}
			plain := fillExports(t, false, false, tc.max, tc.batches...)
			var sends, plainSends int
			for x, ls := range exportLens(w) {
				sends += gsoSends(ls)
				plainSends += gsoSends(exportLens(plain)[x])
			}
			if sends > plainSends {
				t.Errorf("%d GSO sends, %d without exact fill", sends, plainSends)
			}
			t.Logf("%d exports, %d messages (%d without exact fill), GSO sends %d (%d without), L %v",
				len(w.ends), len(w.msgs), len(plain.msgs), sends, plainSends, targets)
		})
	}
}

// TestIPFIXExactFillBenchmarkSends: each export of the benchmark's 256
// flows of all eight templates (BenchmarkEncodeHostflowVsGoIPFIX) is one
// GSO send, those that carry templates too; without exact fill each
// takes several.
func TestIPFIXExactFillBenchmarkSends(t *testing.T) {
	flows := randomFlows(256, 2)
	batches := slices.Repeat([][]Flow{flows}, 30) // across template refreshes
	w := fillExports(t, true, false, 1400, batches...)
	checkFilled(t, w, 1400, false, batches)
	plain := fillExports(t, false, false, 1400, batches...)
	pl := exportLens(plain)
	for x, ls := range exportLens(w) {
		if n := gsoSends(ls); n != 1 {
			t.Errorf("export %d: %d GSO sends, want 1: %v", x, n, ls)
		}
		if x < 2 {
			t.Logf("export %d: %d messages, 1 send; without exact fill %d messages, %d sends: %v", x, len(ls), len(pl[x]), gsoSends(pl[x]), pl[x])
		}
	}
}

// TestIPFIXExactFillOnlyGSO: without a writer reporting GSO, and for
// NetFlow v9 whatever the writer, messages are what the packer always
// made (records in template order, each message as full as it goes).
func TestIPFIXExactFillOnlyGSO(t *testing.T) {
	flows := randomFlows(700, 3)
	for _, pad := range []bool{false, true} {
		noGSO := fillExports(t, false, pad, 1400, flows)
		capture := &captureWriter{}
		e := newTestIPFIX(t, capture, &ipfixClock{testEpoch}, 1400)
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(noGSO.msgs, capture.msgs, bytes.Equal) {
			t.Errorf("PadForGSO %v, no GSO: messages differ from a plain writer's", pad)
		}
		if got := records(decodeAll(t, noGSO.msgs)); len(got) != len(flows) {
			t.Fatalf("%d records, want %d", len(got), len(flows))
		}
	}
	v9 := func(w MessageWriter) {
		e, _ := newTestNetFlow9(t, w, 1400, nil)
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
	}
	gso, plain := &gsoCapture{gso: true}, &captureWriter{}
	v9(gso)
	v9(plain)
	if !slices.EqualFunc(gso.msgs, plain.msgs, bytes.Equal) {
		t.Error("NetFlow v9: messages to a GSO writer differ")
	}
}

// TestIPFIXExactFillAllocs: exact fill allocates nothing per export.
func TestIPFIXExactFillAllocs(t *testing.T) {
	flows := randomFlows(300, 1)
	for _, pad := range []bool{false, true} {
		e, err := NewIPFIX(IPFIXConfig{Writer: gsoDiscard{}, MaxMessageSize: 1400, PadForGSO: pad})
		if err != nil {
			t.Fatal(err)
		}
		if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
			t.Errorf("PadForGSO %v: Export of %d flows allocates %v times", pad, len(flows), a)
		}
	}
}

// gsoDiscard discards messages and reports GSO.
type gsoDiscard struct{}

func (gsoDiscard) WriteMessage([]byte) error { return nil }
func (gsoDiscard) GSO() bool                 { return true }

// FuzzIPFIXExactFill exports random mixes of templates (mask: which of
// the eight; 0 all) in two exports to a GSO writer and requires what
// checkFilled checks (every record once, in order per template, strict
// framing, set padding of at most 3 octets, sequence numbers), and every
// record from goflow2's decoder too.
func FuzzIPFIXExactFill(f *testing.F) {
	f.Add(uint16(256), uint64(2), uint16(800), uint8(0))
	f.Add(uint16(40), uint64(5), uint16(0), uint8(0x03))
	f.Add(uint16(900), uint64(9), uint16(603), uint8(0x41))
	f.Add(uint16(1500), uint64(4), uint16(20), uint8(0xc8))
	f.Fuzz(func(t *testing.T, n uint16, seed uint64, max uint16, mask uint8) {
		flows := randomFlows(int(n%3000), seed)
		if mask != 0 {
			flows = onlyVariants(flows, mask)
		}
		size := 600 + int(max%1500)
		half := len(flows) / 3
		batches := [][]Flow{flows[:half], flows[half:]}
		w := fillExports(t, true, false, size, batches...)
		checkFilled(t, w, size, false, batches)
		if got := goflow2Records(t, w.msgs); got != len(flows) {
			t.Fatalf("goflow2: %d records, want %d", got, len(flows))
		}
	})
}

// TestFillPlan checks plan alone on random record lengths (1 to 600
// bytes, beyond the search's window), counts and rooms: the plan takes
// no more records than there are, pads no set by more than it may, and
// takes exactly the bytes it reports, never more than room.
func TestFillPlan(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	e := newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0)
	f := &e.fill
	for range 20000 {
		for i := range e.compiled {
			e.compiled[i].recLen = 1 + r.IntN(600)
			if r.IntN(2) == 0 {
				e.compiled[i].recLen = 50 + r.IntN(40)
			}
			f.avail[i] = 0
			if r.IntN(3) > 0 {
				f.avail[i] = r.IntN(40)
			}
		}
		f.lastRoom = -1
		room := r.IntN(3000)
		got := e.plan(room, room)
		if got < 0 || got > room {
			t.Fatalf("plan(%d) = %d", room, got)
		}
		bytes := 0
		for i, c := range f.count {
			rl := e.compiled[i].recLen
			if c < 0 || c > f.avail[i] || f.pad[i] < 0 || f.pad[i] > setPad(rl) || c == 0 && f.pad[i] != 0 {
				t.Fatalf("template %d (%d bytes, %d left): %d records, %d padding", i, rl, f.avail[i], c, f.pad[i])
			}
			if c > 0 {
				bytes += setHeaderLen + c*rl + f.pad[i]
			}
		}
		if bytes != got {
			t.Fatalf("plan(%d) = %d, its records and padding take %d", room, got, bytes)
		}
	}
}

// TestIPFIXExactFillSmallMessagesRefreshEveryMessage: exact fill with
// templates in every message (TemplateRefreshMessages 1) and a maximum
// size that the template block fills alone makes progress, as the packer
// without GSO does: every flow is exported once, in a bounded number of
// messages, with PadForGSO too.
func TestIPFIXExactFillSmallMessagesRefreshEveryMessage(t *testing.T) {
	probe := newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0)
	least := probe.wire.headerLen() + len(probe.templateBlock)
	flows := randomFlows(50, 21)
	for _, c := range []struct{ gso, pad bool }{{false, false}, {true, false}, {true, true}} {
		gso := c.gso
		w := &gsoCapture{gso: gso}
		w.fail = func(i int) bool {
			if i > 10*len(flows) {
				t.Fatalf("GSO %v, PadForGSO %v: %d messages for %d flows: no progress", gso, c.pad, i, len(flows))
			}
			return false
		}
		clk := &ipfixClock{testEpoch}
		e, err := NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, MaxMessageSize: least, Now: clk.Now, TemplateRefreshMessages: 1, PadForGSO: c.pad})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if got := records(decodeAll(t, w.msgs)); len(got) != len(flows) {
			t.Fatalf("GSO %v: %d records, want %d", gso, len(got), len(flows))
		}
	}
}
