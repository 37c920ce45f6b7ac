package exporter

import (
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// sendAnswer is one scripted sendmmsg answer: send the first sent headers
// (all of them if sent < 0), or fail with errno if sent is 0.
type sendAnswer struct {
	sent  int
	errno syscall.Errno
}

// scriptSendmmsg makes sendmmsg give the answers in turn (then send
// everything) for the rest of the test; it returns how many calls were
// made.
func scriptSendmmsg(t *testing.T, answers ...sendAnswer) *int {
	t.Helper()
	calls := 0
	prev := sendmmsgCall
	t.Cleanup(func() { sendmmsgCall = prev })
	sendmmsgCall = func(_ uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
		a := sendAnswer{sent: -1}
		if calls < len(answers) {
			a = answers[calls]
		}
		calls++
		if a.sent == 0 {
			return 0, a.errno
		}
		if a.sent < 0 || a.sent > len(hdrs) {
			a.sent = len(hdrs)
		}
		for i := range hdrs[:a.sent] {
			hdrs[i].Len = uint32(hdrs[i].Hdr.Iov.Len)
		}
		return a.sent, 0
	}
	return &calls
}

// TestUDPBatchRecordsLost: when sendmmsg sends the first message of a
// batch and fails on the second, the records of the second are counted
// lost by the transport (the encoder counted them sent when the batch
// accepted them), and the others are not.
func TestUDPBatchRecordsLost(t *testing.T) {
	u, _, _ := udpPair(t, UDPConfig{Batch: 8, NoGSO: true})
	scriptSendmmsg(t, sendAnswer{sent: 1}, sendAnswer{errno: unix.EMSGSIZE})
	for i, recs := range []int{3, 5, 7} {
		if err := u.WriteMessageRecords(testMsg(uint32(i+1), 100), recs); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Flush(); !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("flush: %v, want EMSGSIZE", err)
	}
	if st := u.Stats(); st.Messages != 2 || st.Lost != 1 || st.RecordsLost != 5 {
		t.Errorf("stats %+v, want 2 messages sent, 1 lost with its 5 records", st)
	}
	// A batch lost at Close counts its records too.
	u.writeThrough = false
	if err := u.WriteMessageRecords(testMsg(4, 100), 11); err != nil {
		t.Fatal(err)
	}
	u.closed.Store(true)
	if err := u.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("flush after close: %v, want ErrClosed", err)
	}
	if st := u.Stats(); st.Lost != 2 || st.RecordsLost != 16 {
		t.Errorf("stats %+v, want 2 lost with 16 records", st)
	}
}

// recordCounter is a RecordWriter that adds up the records it is told of.
type recordCounter struct{ messages, records int }

func (w *recordCounter) WriteMessage([]byte) error { w.messages++; return nil }

func (w *recordCounter) WriteMessageRecords(_ []byte, n int) error {
	w.messages++
	w.records += n
	return nil
}

// TestEncoderTellsRecords: the encoders give a RecordWriter the flow
// records of each message, so that a transport losing an accepted message
// knows how many records went with it.
func TestEncoderTellsRecords(t *testing.T) {
	for _, name := range []string{"ipfix", "netflow9"} {
		t.Run(name, func(t *testing.T) {
			w := &recordCounter{}
			var enc Sink
			var err error
			if name == "ipfix" {
				enc, err = NewIPFIX(IPFIXConfig{Writer: w, MaxMessageSize: 640})
			} else {
				enc, err = NewNetFlow9(NetFlow9Config{Writer: w, MaxMessageSize: 640})
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := enc.Export(testFlows(40)); err != nil {
				t.Fatal(err)
			}
			if w.records != 40 || w.messages < 3 {
				t.Errorf("told of %d records in %d messages, want 40 in several", w.records, w.messages)
			}
		})
	}
}
