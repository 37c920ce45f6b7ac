package exporter

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// gsoCapture captures messages like captureWriter and reports GSO as a
// UDPWriter with GSO does.
type gsoCapture struct {
	captureWriter
	gso bool
	// ends holds len(msgs) after each export.
	ends []int
}

func (g *gsoCapture) GSO() bool { return g.gso }

// padExports exports each batch of flows in turn to a fresh IPFIX
// exporter of max-byte messages on w, noting where each export ends.
func padExports(t *testing.T, w *gsoCapture, pad bool, max int, batches ...[]Flow) {
	t.Helper()
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
}

var padCases = []struct {
	name    string
	max     int
	batches [][]Flow
}{
	{"benchmark 256 flows", 1400, [][]Flow{randomFlows(256, 2), randomFlows(256, 2)}},
	{"1000 flows", 1400, [][]Flow{randomFlows(1000, 7)}},
	{"small messages", 600, [][]Flow{randomFlows(300, 11), randomFlows(40, 12)}},
	{"odd size", 1203, [][]Flow{append(sampleFlows(), randomFlows(500, 13)...)}},
	{"one template", 1400, [][]Flow{slices.Repeat(sampleFlows()[:1], 100)}},
	{"one message", 1400, [][]Flow{randomFlows(5, 14)}},
}

// TestIPFIXPadEqualLengths: for a writer with GSO, every message of an
// export but the last is exactly max bytes, so the export is one GSO run.
func TestIPFIXPadEqualLengths(t *testing.T) {
	for _, tc := range padCases {
		t.Run(tc.name, func(t *testing.T) {
			w := &gsoCapture{gso: true}
			padExports(t, w, true, tc.max, tc.batches...)
			from := 0
			for x, end := range w.ends {
				for i := from; i < end-1; i++ {
					if len(w.msgs[i]) != tc.max {
						t.Errorf("export %d: message %d of %d is %d bytes, want %d", x, i-from, end-from, len(w.msgs[i]), tc.max)
					}
				}
				if l := len(w.msgs[end-1]); l > tc.max {
					t.Errorf("export %d: last message is %d bytes, over %d", x, l, tc.max)
				}
				from = end
			}
		})
	}
}

// TestIPFIXPadDecodes: padded messages decode, with the reference decoder
// (strict RFC 7011 framing: padding zero and shorter than a record;
// go-ipfix's field decoding) and with goflow2's, to exactly the records
// of the same export unpadded; padded or not, messages carry the same
// records in the same order. Without GSO, or without PadForGSO, nothing
// is padded.
func TestIPFIXPadDecodes(t *testing.T) {
	for _, tc := range padCases {
		t.Run(tc.name, func(t *testing.T) {
			padded := &gsoCapture{gso: true}
			padExports(t, padded, true, tc.max, tc.batches...)
			plain := &gsoCapture{gso: false}
			padExports(t, plain, true, tc.max, tc.batches...)
			if len(padded.msgs) != len(plain.msgs) {
				t.Fatalf("%d messages padded, %d plain", len(padded.msgs), len(plain.msgs))
			}
			// PadForGSO off (the default): no padding, GSO or not.
			off := &gsoCapture{gso: true}
			padExports(t, off, false, tc.max, tc.batches...)
			if !slices.EqualFunc(off.msgs, plain.msgs, bytes.Equal) {
				t.Errorf("PadForGSO off: messages differ from those without GSO")
			}
			dp, du := decodeAll(t, padded.msgs), decodeAll(t, plain.msgs)
			pad, want := 0, 0
			for i := range dp {
				pad += dp[i].Padding
				if du[i].Padding != 0 {
					t.Errorf("message %d: %d padding octets without GSO", i, du[i].Padding)
				}
				if !slices.EqualFunc(dp[i].Records, du[i].Records, sameRecord) {
					t.Errorf("message %d: padded records differ from plain", i)
				}
				if int(dp[i].Length)-len(plain.msgs[i]) != dp[i].Padding {
					t.Errorf("message %d: %d bytes longer padded, %d padding octets", i, int(dp[i].Length)-len(plain.msgs[i]), dp[i].Padding)
				}
			}
			for _, b := range tc.batches {
				want += len(b)
			}
			if got := len(records(dp)); got != want {
				t.Errorf("reference decoder: %d records, want %d", got, want)
			}
			if got := goflow2Records(t, padded.msgs); got != want {
				t.Errorf("goflow2: %d records, want %d", got, want)
			}
			if len(padded.msgs) > len(tc.batches) && pad == 0 {
				t.Errorf("no padding in %d messages", len(padded.msgs))
			}
		})
	}
}

func sameRecord(a, b decodedRecord) bool {
	if a.TemplateID != b.TemplateID || len(a.Uints) != len(b.Uints) || len(a.Addrs) != len(b.Addrs) {
		return false
	}
	for k, v := range a.Uints {
		if b.Uints[k] != v {
			return false
		}
	}
	for k, v := range a.Addrs {
		if b.Addrs[k] != v {
			return false
		}
	}
	return true
}

// goflow2Records decodes msgs with goflow2's IPFIX decoder and counts the
// data records.
func goflow2Records(t *testing.T, msgs [][]byte) int {
	t.Helper()
	ts := netflow.CreateTemplateSystem()
	n := 0
	for i, msg := range msgs {
		var v9 netflow.NFv9Packet
		var p netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), ts, &v9, &p); err != nil {
			t.Fatalf("goflow2: message %d: %v", i, err)
		}
		for _, fs := range p.FlowSets {
			if ds, ok := fs.(netflow.DataFlowSet); ok {
				n += len(ds.Records)
			}
		}
	}
	return n
}

// paddedMessages reports whether any data set of msgs ends in padding:
// its length, less the header, is no whole number of its records
// (templates of the default set only; options sets are never padded).
func paddedMessages(t *testing.T, msgs [][]byte) bool {
	t.Helper()
	lens := map[uint16]int{}
	for _, ct := range newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0).compiled {
		lens[ct.t.ID] = ct.recLen
	}
	for _, m := range msgs {
		for o := 16; o+4 <= len(m); {
			id, l := binary.BigEndian.Uint16(m[o:]), int(binary.BigEndian.Uint16(m[o+2:]))
			if r := lens[id]; r > 0 && (l-4)%r != 0 {
				return true
			}
			if l < 4 {
				break
			}
			o += l
		}
	}
	return false
}

// FuzzIPFIXPad exports random flows padded and plain and requires the
// same records from the reference decoder (strict padding checks) and
// from goflow2, and every message of an export but the last to be max
// bytes unless its flow data sets cannot take the gap (each fewer octets
// than its record).
func FuzzIPFIXPad(f *testing.F) {
	f.Add(uint16(256), uint64(2), uint16(1400))
	f.Add(uint16(40), uint64(5), uint16(600))
	f.Add(uint16(900), uint64(9), uint16(1203))
	f.Fuzz(func(t *testing.T, n uint16, seed uint64, max uint16) {
		n %= 2000
		max = 600 + max%1500
		flows := randomFlows(int(n), seed)
		padded, plain := &gsoCapture{gso: true}, &gsoCapture{gso: false}
		padExports(t, padded, true, int(max), flows)
		padExports(t, plain, true, int(max), flows)
		if len(padded.msgs) != len(plain.msgs) {
			t.Fatalf("%d messages padded, %d plain", len(padded.msgs), len(plain.msgs))
		}
		dp, du := decodeAll(t, padded.msgs), decodeAll(t, plain.msgs)
		lens := map[uint16]int{}
		for _, ct := range newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0).compiled {
			lens[ct.t.ID] = ct.recLen
		}
		for i := range dp {
			if !slices.EqualFunc(dp[i].Records, du[i].Records, sameRecord) {
				t.Fatalf("message %d: padded records differ from plain", i)
			}
			if i == len(dp)-1 || len(padded.msgs[i]) == int(max) {
				continue
			}
			room := 0
			for _, id := range setIDs(plain.msgs[i]) {
				if r := lens[id]; r > 0 {
					room += r - 1
				}
			}
			if gap := int(max) - len(plain.msgs[i]); gap <= room {
				t.Fatalf("message %d of %d: %d bytes, gap %d fits the sets' %d octets of padding room", i, len(dp), len(padded.msgs[i]), gap, room)
			}
		}
		if got := len(records(dp)); got != len(flows) {
			t.Fatalf("reference decoder: %d records, want %d", got, len(flows))
		}
		if got := goflow2Records(t, padded.msgs); got != len(flows) {
			t.Fatalf("goflow2: %d records, want %d", got, len(flows))
		}
	})
}

// setIDs lists the set IDs of an IPFIX message.
func setIDs(m []byte) []uint16 {
	var ids []uint16
	for o := 16; o+4 <= len(m); {
		l := int(binary.BigEndian.Uint16(m[o+2:]))
		ids = append(ids, binary.BigEndian.Uint16(m[o:]))
		if l < 4 {
			break
		}
		o += l
	}
	return ids
}
