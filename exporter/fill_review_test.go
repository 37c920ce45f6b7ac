package exporter

import (
	"testing"
)

// TestIPFIXExactFillSmallMessagesRefreshEveryMessage: exact fill with
// templates in every message (TemplateRefreshMessages 1) and a maximum
// size that the template block fills alone makes progress, as the packer
// without GSO does: every flow is exported once, in a bounded number of
// messages.
func TestIPFIXExactFillSmallMessagesRefreshEveryMessage(t *testing.T) {
	probe := newTestIPFIX(t, &captureWriter{}, &ipfixClock{testEpoch}, 0)
	least := probe.wire.headerLen() + len(probe.templateBlock)
	flows := randomFlows(50, 21)
	for _, gso := range []bool{false, true} {
		w := &gsoCapture{gso: gso}
		w.fail = func(i int) bool {
			if i > 10*len(flows) {
				t.Fatalf("GSO %v: %d messages for %d flows: no progress", gso, i, len(flows))
			}
			return false
		}
		clk := &ipfixClock{testEpoch}
		e, err := NewIPFIX(IPFIXConfig{Writer: w, ObservationDomainID: 42, MaxMessageSize: least, Now: clk.Now, TemplateRefreshMessages: 1})
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
