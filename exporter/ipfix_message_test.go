package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/templates"
)

func TestIPFIXSequence(t *testing.T) {
	w := &captureWriter{}
	clk := &ipfixClock{testEpoch}
	// 400 bytes: the template set and a few records, so every Export
	// spans several messages.
	e := newTestIPFIX(t, w, clk, 600)
	var sent uint32
	for i, n := range []int{1, 37, 100, 5} {
		if err := e.Export(randomFlows(n, uint64(i))); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	msgs := decodeAll(t, w.msgs)
	if len(msgs) < 10 {
		t.Fatalf("only %d messages: the test needs several per Export", len(msgs))
	}
	for i, m := range msgs {
		// Records before this message; template records do not count.
		if m.Seq != sent {
			t.Errorf("message %d: sequence %d, want %d", i, m.Seq, sent)
		}
		sent += uint32(len(m.Records))
	}
	if sent != 143 {
		t.Errorf("%d records, want 143", sent)
	}

	t.Run("wraps modulo 2^32", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 600)
		e.seq = math.MaxUint32 - 2
		if err := e.Export(randomFlows(20, 3)); err != nil {
			t.Fatal(err)
		}
		if err := e.Export(randomFlows(1, 4)); err != nil {
			t.Fatal(err)
		}
		msgs := decodeAll(t, w.msgs)
		seq := uint32(math.MaxUint32 - 2)
		for i, m := range msgs {
			if m.Seq != seq {
				t.Errorf("message %d: sequence %d, want %d", i, m.Seq, seq)
			}
			seq += uint32(len(m.Records))
		}
		if last := msgs[len(msgs)-1].Seq; last != 17 {
			t.Errorf("last sequence %d, want 17 (20 records from 2^32-3)", last)
		}
	})
}

func TestIPFIXTemplateRefresh(t *testing.T) {
	w := &captureWriter{}
	clk := &ipfixClock{testEpoch}
	e, err := NewIPFIX(IPFIXConfig{Writer: w, Now: clk.Now, TemplateRefresh: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	flows := sampleFlows()[:2]
	// Elapsed time since the start at each Export, and whether that
	// Export must carry templates.
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{time.Second, false},
		{59 * time.Second, false},
		{59*time.Second + 999*time.Millisecond, false},
		{60 * time.Second, true}, // TemplateRefresh after the first
		{61 * time.Second, false},
		{119 * time.Second, false},
		{125 * time.Second, true},
		{126 * time.Second, false},
	}
	// One collector throughout, which keeps the templates it has seen.
	c := newCollector()
	for _, s := range steps {
		clk.now = testEpoch.Add(s.at)
		w.msgs = nil
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if len(w.msgs) != 1 {
			t.Fatalf("at %v: %d messages", s.at, len(w.msgs))
		}
		m, err := c.decode(w.msgs[0])
		if err != nil {
			t.Fatalf("at %v: %v", s.at, err)
		}
		if got := len(m.Templates) > 0; got != s.want {
			t.Errorf("at %v: templates sent %v, want %v", s.at, got, s.want)
		}
	}

	t.Run("resent after a failed send", func(t *testing.T) {
		w := &captureWriter{fail: func(i int) bool { return i == 0 }}
		clk := &ipfixClock{testEpoch}
		e := newTestIPFIX(t, w, clk, 0)
		if err := e.Export(flows); !errors.Is(err, errInjected) {
			t.Fatalf("Export error %v, want the injected one", err)
		}
		clk.Advance(time.Second)
		if err := e.Export(flows); err != nil {
			t.Fatal(err)
		}
		if m := decodeAll(t, w.msgs); len(m[0].Templates) != templates.NumTemplates {
			t.Errorf("templates not resent after the failed first message")
		}
	})

	t.Run("nothing sent without flows", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
		if err := e.Export(nil); err != nil || w.writes != 0 {
			t.Errorf("Export(nil): err %v, %d writes", err, w.writes)
		}
	})
}

func TestIPFIXPacking(t *testing.T) {
	flows := randomFlows(1000, 11)
	want := inWireOrder(flows)
	least := 16 + 4 + 4*(4+4*15) + 4*(4+4*14) // header + template set
	for _, size := range []int{least, 533, 548, 1000, DefaultMaxMessageSize, 9000, 65535} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			w := &captureWriter{}
			e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, size)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			for i, m := range w.msgs {
				if len(m) > size {
					t.Errorf("message %d: %d bytes > %d", i, len(m), size)
				}
				// Every message but the last was closed because the next
				// record did not fit: at worst a new set of the longest
				// record (4 + 79 bytes).
				if i < len(w.msgs)-1 && len(m)+4+79 <= size {
					t.Errorf("message %d: %d bytes, room left for another record", i, len(m))
				}
			}
			got := records(decodeAll(t, w.msgs))
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				checkRecord(t, got[i], &want[i])
			}
			if s := e.Stats(); s.Messages != uint64(len(w.msgs)) || s.Records != 1000 || s.SendErrors != 0 || s.RecordsLost != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
	t.Run("several sets per message", func(t *testing.T) {
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 9000)
		if err := e.Export(sampleFlows()); err != nil {
			t.Fatal(err)
		}
		m := decodeAll(t, w.msgs)
		if len(m) != 1 || m[0].Sets != 9 {
			t.Errorf("%d messages; want 1 with 9 sets (templates + 8 data)", len(m))
		}
	})
}

func TestIPFIXConfig(t *testing.T) {
	w := &captureWriter{}
	tests := []struct {
		name string
		cfg  IPFIXConfig
		ok   bool
	}{
		{"defaults", IPFIXConfig{Writer: w}, true},
		{"no writer", IPFIXConfig{}, false},
		{"too small for templates", IPFIXConfig{Writer: w, MaxMessageSize: 200}, false},
		{"larger than the length field", IPFIXConfig{Writer: w, MaxMessageSize: 65536}, false},
	}
	for _, tt := range tests {
		e, err := NewIPFIX(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
		if e != nil && (e.max != DefaultMaxMessageSize || e.refresh != DefaultTemplateRefresh) {
			t.Errorf("%s: defaults not applied: %d, %v", tt.name, e.max, e.refresh)
		}
	}
}

func TestIPFIXSendErrors(t *testing.T) {
	// Every other message fails.
	w := &captureWriter{fail: func(i int) bool { return i%2 == 1 }}
	e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 600)
	flows := randomFlows(100, 5)
	err := e.Export(flows)
	if !errors.Is(err, errInjected) {
		t.Fatalf("Export error %v, want the injected one", err)
	}
	s := e.Stats()
	if s.SendErrors == 0 || s.SendErrors != uint64(w.writes)-s.Messages {
		t.Errorf("stats %+v after %d writes", s, w.writes)
	}
	if s.Records+s.RecordsLost != 100 || s.RecordsLost == 0 {
		t.Errorf("stats %+v: records sent and lost must add up to 100", s)
	}
	// Export goes on after failures; once the writer recovers, the
	// sequence shows the collector a gap of exactly the lost records.
	w.fail = nil
	if err := e.Export(flows[:1]); err != nil {
		t.Errorf("Export after failures: %v", err)
	}
	msgs := decodeAll(t, w.msgs)
	var received uint64
	for _, m := range msgs {
		received += uint64(len(m.Records))
	}
	last := msgs[len(msgs)-1]
	if gap := uint64(last.Seq) + uint64(len(last.Records)) - received; gap != s.RecordsLost {
		t.Errorf("sequence gap %d, want %d lost records", gap, s.RecordsLost)
	}
}

func TestIPFIXClose(t *testing.T) {
	u, err := DialUDP("127.0.0.1:9") // discard port; nothing needs to listen
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewIPFIX(IPFIXConfig{Writer: u})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteMessage([]byte{0}); err == nil {
		t.Error("writer still open after Close")
	}
	if err := e.Export(sampleFlows()); err == nil {
		t.Error("Export after Close succeeded")
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestIPFIXUDPRoundTrip(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				testutil.SkipOrFail(t, "no %s: %v", addr, err)
			}
			defer l.Close()
			u, err := DialUDP(l.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			e, err := NewIPFIX(IPFIXConfig{Writer: u, ObservationDomainID: 7})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			flows := append(sampleFlows(), randomFlows(200, 9)...)
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			sent := e.Stats().Messages
			var msgs [][]byte
			buf := make([]byte, 65535)
			if err := l.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			for uint64(len(msgs)) < sent {
				n, from, err := l.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("after %d of %d messages: %v", len(msgs), sent, err)
				}
				if from.String() != u.LocalAddr().String() {
					t.Errorf("datagram from %v, want %v", from, u.LocalAddr())
				}
				if n > DefaultMaxMessageSize {
					t.Errorf("datagram of %d bytes", n)
				}
				msgs = append(msgs, bytes.Clone(buf[:n]))
			}
			got := records(decodeAll(t, msgs))
			want := inWireOrder(flows)
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range want {
				checkRecord(t, got[i], &want[i])
			}

			// With the collector gone, the kernel reports port
			// unreachable on a later write: counted by the
			// transport, and the message is sent all the same.
			l.Close()
			for deadline := time.Now().Add(20 * time.Second); ; { // a guard, not a speed check
				if err := e.Export(flows[:3]); err != nil {
					t.Fatalf("export with the listener closed: %v", err)
				}
				if u.Stats().Unreachable > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			s := e.Stats()
			if ts := u.Stats(); ts.Unreachable == 0 || ts.Lost != 0 || s.SendErrors != 0 {
				t.Errorf("listener closed: transport %+v, encoder %+v: want ICMP errors counted, nothing lost", ts, s)
			}
			if total := uint64(len(flows)) + 3*(s.Messages+s.SendErrors-sent); s.Records+s.RecordsLost != total {
				t.Errorf("stats %+v: sent and lost records do not add up to %d", s, total)
			}
		})
	}
}

// TestIPFIXAllocs holds the encoder to zero allocations per Export once
// warmed up (the first Export differs only by carrying templates).
func TestIPFIXAllocs(t *testing.T) {
	e := newTestIPFIX(t, MessageWriterFunc(func([]byte) error { return nil }), &ipfixClock{testEpoch}, 0)
	flows := randomFlows(300, 1)
	if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("Export of %d flows allocates %v times", len(flows), a)
	}
}
