package exporter

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestUDPBatchShortSendNotUnreachable: a short sendmmsg (the socket
// buffer filled) followed by a send that works is no ICMP error; a short
// send followed by ECONNREFUSED is one.
func TestUDPBatchShortSendNotUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name        string
		answers     []sendAnswer
		unreachable uint64
	}{
		{name: "room again", answers: []sendAnswer{{sent: 1}}, unreachable: 0},
		{name: "refused", answers: []sendAnswer{{sent: 1}, {errno: unix.ECONNREFUSED}}, unreachable: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _, _ := udpPair(t, UDPConfig{Batch: 8, NoGSO: true})
			scriptSendmmsg(t, tc.answers...)
			for i := range 3 {
				if err := u.WriteMessageRecords(testMsg(uint32(i+1), 100), 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := u.Flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}
			if st := u.Stats(); st.Messages != 3 || st.Lost != 0 || st.Unreachable != tc.unreachable {
				t.Errorf("stats %+v, want 3 sent, %d unreachable", st, tc.unreachable)
			}
		})
	}
}
