package exporter

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// gsoCapture captures messages like captureWriter and reports GSO as a
// UDPWriter with GSO does. With pad, newOptionsExporter turns on
// PadForGSO.
type gsoCapture struct {
	captureWriter
	gso, pad bool
	// ends holds len(msgs) after each export.
	ends []int
}

func (g *gsoCapture) GSO() bool { return g.gso }

// padRoom is how many more octets of padding the flow data sets of an
// IPFIX message of the default templates can take: fewer than a record
// in all.
func padRoom(t testing.TB, m []byte) int {
	t.Helper()
	lens := map[uint16]int{}
	for _, ct := range newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0).compiled {
		lens[ct.t.ID] = ct.recLen
	}
	room := 0
	for o := 16; o+4 <= len(m); {
		id, l := binary.BigEndian.Uint16(m[o:]), int(binary.BigEndian.Uint16(m[o+2:]))
		if r := lens[id]; r > 0 {
			room += r - 1 - (l-setHeaderLen)%r
		}
		if l < 4 {
			break
		}
		o += l
	}
	return room
}

// checkPadLengths requires every message of each export but the last to
// be size bytes long, or else shorter with flow data sets that cannot take
// the gap. It returns how many are short.
func checkPadLengths(t testing.TB, w *gsoCapture, size int) int {
	t.Helper()
	short, from := 0, 0
	for x, end := range w.ends {
		msgs := w.msgs[from:end]
		for i, m := range msgs[:max(len(msgs)-1, 0)] {
			switch {
			case len(m) > size:
				t.Fatalf("export %d: message %d is %d bytes, over %d", x, i, len(m), size)
			case len(m) < size:
				if gap, room := size-len(m), padRoom(t, m); gap <= room {
					t.Fatalf("export %d: message %d is %d bytes, not %d: its sets could take %d octets", x, i, len(m), size, room)
				}
				short++
			}
		}
		from = end
	}
	return short
}

// TestIPFIXPadEqualLengths: with PadForGSO, every message of an export
// but the last is the maximum size, exact fill's or padded: in all the
// cases, the single-template ones included.
func TestIPFIXPadEqualLengths(t *testing.T) {
	for _, tc := range fillCases {
		t.Run(tc.name, func(t *testing.T) {
			padded := fillExports(t, true, true, tc.max, tc.batches...)
			if short := checkPadLengths(t, padded, tc.max); short > 0 {
				t.Errorf("%d messages short of %d: %v", short, tc.max, exportLens(padded))
			}
		})
	}
}

// TestIPFIXPadDecodes: padded messages decode, with the reference decoder
// (strict RFC 7011 framing: padding zero and shorter than a record;
// go-ipfix's field decoding) and with goflow2's, to every record once;
// padding beyond exact fill's 3 octets a set shows up where exact fill
// alone falls short.
func TestIPFIXPadDecodes(t *testing.T) {
	bigPads := 0
	for _, tc := range fillCases {
		t.Run(tc.name, func(t *testing.T) {
			padded := fillExports(t, true, true, tc.max, tc.batches...)
			checkFilled(t, padded, tc.max, true, tc.batches)
			want := 0
			for _, b := range tc.batches {
				want += len(b)
			}
			if got := goflow2Records(t, padded.msgs); got != want {
				t.Errorf("goflow2: %d records, want %d", got, want)
			}
			for _, m := range padded.msgs {
				for _, p := range setPadding(t, m) {
					if p > maxSetPad {
						bigPads++
					}
				}
			}
		})
	}
	if bigPads == 0 {
		t.Error("no set padded beyond exact fill's: padding untested")
	}
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

// maxSetPadding is the most padding octets of any data set of msgs
// (templates of the default set only; options sets are never padded).
func maxSetPadding(t *testing.T, msgs [][]byte) int {
	t.Helper()
	most := 0
	for _, m := range msgs {
		for _, p := range setPadding(t, m) {
			most = max(most, p)
		}
	}
	return most
}

// FuzzIPFIXPad exports random mixes of templates (mask: which of the
// eight; 0 all) with PadForGSO to a GSO writer and requires what
// checkFilled checks (strict padding checks included) and
// checkPadLengths, and every record from goflow2.
func FuzzIPFIXPad(f *testing.F) {
	f.Add(uint16(256), uint64(2), uint16(1400), uint8(0))
	f.Add(uint16(40), uint64(5), uint16(600), uint8(0x0c))
	f.Add(uint16(900), uint64(9), uint16(1203), uint8(0xa8))
	f.Add(uint16(2), uint64(5), uint16(487), uint8(0x34)) // an empty export
	f.Fuzz(func(t *testing.T, n uint16, seed uint64, max uint16, mask uint8) {
		flows := randomFlows(int(n%2000), seed)
		if mask != 0 {
			flows = onlyVariants(flows, mask)
		}
		size := 600 + int(max%1500)
		half := len(flows) / 3
		batches := [][]Flow{flows[:half], flows[half:]}
		w := fillExports(t, true, true, size, batches...)
		checkFilled(t, w, size, true, batches)
		checkPadLengths(t, w, size)
		if got := goflow2Records(t, w.msgs); got != len(flows) {
			t.Fatalf("goflow2: %d records, want %d", got, len(flows))
		}
	})
}
