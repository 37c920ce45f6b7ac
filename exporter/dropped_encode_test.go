package exporter

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// TestDroppedCountsGolden exports records of each fate in a user layout
// with droppedPacketDeltaCount and droppedOctetDeltaCount, compares the
// message with testdata/dropped-ipv4-ingress.golden and decodes it: the
// dropped counts are the record's counts on dropped records (128 to 191),
// 0 on the others. Regenerate with: go test ./exporter/ -run
// TestDroppedCountsGolden -update, and review the diff.
func TestDroppedCountsGolden(t *testing.T) {
	set, err := templates.FromNames(templates.IPFIX, []string{"sourceIPv4Address", "destinationIPv4Address",
		"packetDeltaCount", "octetDeltaCount", "forwardingStatus", "droppedPacketDeltaCount", "droppedOctetDeltaCount"})
	if err != nil {
		t.Fatal(err)
	}
	k := flowKey("198.18.0.2", "198.19.2.2", 40000, 53, 17, 0, 2)
	tests := []struct {
		name             string
		status           uint8
		packets, bytes   uint64
		dropP, dropBytes uint64
	}{
		{"forwarded", 64, 10, 1000, 0, 0},
		{"dropped, reason unknown", 128, 2, 200, 2, 200},
		{"ACL deny", 129, 3, 300, 3, 300},
		{"bad TTL", 137, 1, 84, 1, 84},
		{"highest dropped code", 191, 5, 500, 5, 500},
		{"consumed", 192, 4, 400, 0, 0},
		{"consumed for us", 195, 6, 600, 0, 0},
		{"unknown", 0, 7, 700, 0, 0},
	}
	var flows []Flow
	for _, tt := range tests {
		f := testFlow(k, tt.packets, tt.bytes, 10*time.Second, time.Second)
		f.Key.Fate, f.ForwardingStatus = tt.status, tt.status
		flows = append(flows, f)
	}
	w := &captureWriter{}
	e, err := NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, Templates: set, Now: (&ipfixClock{testEpoch}).Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	if len(w.msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(w.msgs))
	}
	want := checkGolden(t, "dropped-ipv4-ingress.golden", w.msgs[0])
	got := gfFlows(gfDecodeAll(t, [][]byte{want}))
	if len(got) != len(tests) {
		t.Fatalf("%d records, want %d", len(got), len(tests))
	}
	be := binary.BigEndian
	for i, tt := range tests {
		checkRaw(t, i, got[i], map[uint16][]byte{
			8: {198, 18, 0, 2}, 12: {198, 19, 2, 2},
			2: be.AppendUint64(nil, tt.packets), 1: be.AppendUint64(nil, tt.bytes),
			89:  {tt.status},
			133: be.AppendUint64(nil, tt.dropP), 132: be.AppendUint64(nil, tt.dropBytes),
		})
	}
}
