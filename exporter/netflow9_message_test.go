package exporter

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

func TestNetFlow9TemplateRefresh(t *testing.T) {
	flows := sampleFlows()[:2]
	t.Run("by time", func(t *testing.T) {
		w := &captureWriter{}
		clk := &ipfixClock{testEpoch}
		e, err := NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefresh: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		c := newGFCollector()
		for _, s := range []struct {
			at   time.Duration
			want bool
		}{{0, true}, {time.Second, false}, {59 * time.Second, false}, {time.Minute, true}, {90 * time.Second, false}, {121 * time.Second, true}} {
			clk.now = testEpoch.Add(s.at)
			w.msgs = nil
			if err := e.Export(flows); err != nil {
				t.Fatal(err)
			}
			m, err := c.decode(w.msgs[0])
			if err != nil {
				t.Fatal(err)
			}
			if got := len(m.Templates) > 0; got != s.want {
				t.Errorf("at %v: templates %v, want %v", s.at, got, s.want)
			}
			if m.Uptime != uint32(s.at/time.Millisecond) {
				t.Errorf("at %v: sysUptime %d", s.at, m.Uptime)
			}
		}
	})
	t.Run("by count", func(t *testing.T) {
		for _, n := range []int{1, 3, 20} {
			w := &captureWriter{}
			clk := &ipfixClock{testEpoch}
			e, err := NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefreshMessages: n})
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				if err := e.Export(flows); err != nil {
					t.Fatal(err)
				}
			}
			c := newGFCollector()
			for i, msg := range w.msgs {
				m, err := c.decode(msg)
				if err != nil {
					t.Fatal(err)
				}
				if want := i%n == 0; want != (len(m.Templates) > 0) {
					t.Errorf("every %d: packet %d: templates %v", n, i, !want)
				}
			}
		}
	})
	t.Run("count off", func(t *testing.T) {
		w := &captureWriter{}
		e, err := NewNetFlow9(NetFlow9Config{Writer: w, TemplateRefreshMessages: -1, Now: (&ipfixClock{testEpoch}).Now})
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			_ = e.Export(flows)
		}
		for i, m := range gfDecodeAll(t, w.msgs) {
			if (i == 0) != (len(m.Templates) > 0) {
				t.Errorf("packet %d: %d templates", i, len(m.Templates))
			}
		}
	})

}

func TestNetFlow9SendErrors(t *testing.T) {
	w := &captureWriter{fail: func(i int) bool { return i%2 == 1 }}
	e, _ := newTestNetFlow9(t, w, 600, nil)
	err := e.Export(randomFlows(100, 5))
	if !errors.Is(err, errInjected) {
		t.Fatalf("error %v", err)
	}
	s := e.Stats()
	if s.Records+s.RecordsLost != 100 || s.SendErrors != uint64(w.writes)-s.Messages {
		t.Errorf("stats %+v", s)
	}
	// Failed packets leave gaps in the packet sequence.
	for i, m := range gfDecodeAll(t, w.msgs) {
		if m.Seq != uint32(2*i) {
			t.Errorf("packet %d: sequence %d, want %d", i, m.Seq, 2*i)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(randomFlows(1, 1)); err == nil {
		t.Error("Export after Close")
	}
}

func TestNetFlow9Config(t *testing.T) {
	w := &captureWriter{}
	ipfixSet := templates.DefaultSet(templates.IPFIX)
	tests := []struct {
		name string
		cfg  NetFlow9Config
		ok   bool
	}{
		{"defaults", NetFlow9Config{Writer: w}, true},
		{"no writer", NetFlow9Config{}, false},
		{"too small", NetFlow9Config{Writer: w, MaxMessageSize: 200}, false},
		{"too large", NetFlow9Config{Writer: w, MaxMessageSize: 65536}, false},
		{"ipfix templates", NetFlow9Config{Writer: w, Templates: ipfixSet}, false},
		{"negative options interval", NetFlow9Config{Writer: w, Options: &OptionsConfig{Interval: -1}}, false},
	}
	for _, tt := range tests {
		_, err := NewNetFlow9(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestNetFlow9FromNames exports a user layout and decodes it.
func TestNetFlow9FromNames(t *testing.T) {
	set, err := templates.FromNames(templates.NetFlowV9, []string{"sourceIPv4Address", "octetDeltaCount", "flowEndMilliseconds", "ipVersion"})
	if err != nil {
		t.Fatal(err)
	}
	w := &captureWriter{}
	clk := &ipfixClock{v9Boot}
	e, err := NewNetFlow9(NetFlow9Config{Writer: w, Templates: set, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	clk.now = testEpoch
	flows := sampleFlows()
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	got := gfFlows(gfDecodeAll(t, w.msgs))
	want := v9InWireOrder(flows)
	for i := range want {
		_, all := wantV9(&want[i], v9BootMillis)
		ver := byte(6)
		src := all[27]
		if want[i].Key.IsIPv4() {
			ver, src = 4, all[8]
		}
		w := map[uint16][]byte{1: all[1], 21: all[21], 60: {ver}}
		if ver == 4 {
			w[8] = src
		} else {
			w[27] = src
		}
		if len(got[i].Values) != 4 {
			t.Errorf("record %d: %d fields", i, len(got[i].Values))
		}
		for typ, v := range w {
			if !bytes.Equal(got[i].Values[typ], v) {
				t.Errorf("record %d: field %d = %x, want %x", i, typ, got[i].Values[typ], v)
			}
		}
	}
}

func TestNetFlow9Allocs(t *testing.T) {
	e, _ := newTestNetFlow9(t, MessageWriterFunc(func([]byte) error { return nil }), 0, nil)
	flows := randomFlows(300, 1)
	if a := testing.AllocsPerRun(50, func() { _ = e.Export(flows) }); a != 0 {
		t.Errorf("Export of %d flows allocates %v times", len(flows), a)
	}
}
