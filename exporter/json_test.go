package exporter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestJSONLines(t *testing.T) {
	var buf bytes.Buffer
	s := NewJSONLinesWith(&buf, JSONOptions{InterfaceName: func(i uint32) string {
		return map[uint32]string{2: "eth0"}[i]
	}})
	flows := sampleFlows()
	if err := s.Export(flows[:2]); err != nil {
		t.Fatal(err)
	}
	// Export flushes: lines are out before Close.
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines after Export, want 2:\n%s", n, buf.String())
	}
	if err := s.Export(flows[2:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var lines []map[string]any
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != len(flows) {
		t.Fatalf("%d lines, want %d", len(lines), len(flows))
	}

	// sampleFlows()[0] is TCP over IPv4, ingress; [6] is ICMPv6 egress
	// with a VLAN.
	tests := []struct {
		line int
		want map[string]any
	}{
		{0, map[string]any{
			"src": "192.0.2.1", "dst": "198.51.100.7", "src_port": 40000.0, "dst_port": 443.0,
			"proto": 6.0, "ethertype": 2048.0, "ifindex": 2.0, "ifname": "eth0", "direction": "ingress", "vlan": 0.0,
			"icmp_type": 0.0, "icmp_code": 0.0, "tos": 184.0, "packets": 12.0, "bytes": 3456.0,
			"start": "2024-05-01T11:59:30.000Z", "end": "2024-05-01T11:59:59.123Z",
			"tcp_flags": 27.0, "end_reason": "end",
		}},
		{6, map[string]any{
			"src": "fe80::1", "dst": "ff02::1", "src_port": 0.0, "dst_port": 0.0,
			"proto": 58.0, "ethertype": 34525.0, "ifindex": 5.0, "ifname": "", "direction": "egress", "vlan": 4094.0,
			"icmp_type": 135.0, "icmp_code": 0.0, "tos": 0.0, "packets": 1.0, "bytes": 72.0,
			"start": "2024-05-01T12:00:00.000Z", "end": "2024-05-01T12:00:00.000Z",
			"tcp_flags": 0.0, "end_reason": "lack-of-resources",
		}},
	}
	for _, tt := range tests {
		got := lines[tt.line]
		if len(got) != len(tt.want) {
			t.Errorf("line %d: %d fields, want %d: %v", tt.line, len(got), len(tt.want), got)
		}
		for k, w := range tt.want {
			if got[k] != w {
				t.Errorf("line %d: %s = %v, want %v", tt.line, k, got[k], w)
			}
		}
	}
}

type failingWriter struct{}

var errWrite = errors.New("disk full")

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestJSONLinesWriteError(t *testing.T) {
	s := NewJSONLines(failingWriter{})
	if err := s.Export(sampleFlows()); !errors.Is(err, errWrite) {
		t.Errorf("Export error %v, want %v", err, errWrite)
	}
}

// TestJSONLinesSampling: a sampled flow says its rate, an unsampled one
// has no sampling key.
func TestJSONLinesSampling(t *testing.T) {
	for _, tt := range []struct {
		n    uint32
		want string
	}{{0, ""}, {1, ""}, {64, `"sampling":64`}} {
		var b strings.Builder
		s := NewJSONLines(&b)
		f := Flow{Key: flowKey("198.18.0.1", "198.18.0.2", 1, 2, 17, 0, 3), Packets: 1, SamplingInterval: tt.n}
		if err := s.Export([]Flow{f}); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if (tt.want == "" && strings.Contains(got, "sampling")) || !strings.Contains(got, tt.want) {
			t.Errorf("sampling %d: %s", tt.n, got)
		}
	}
}

// TestJSONLinesFate: router records show their forwarding status and
// fate, forwarded ones their egress interface and next hop; others show
// none of it.
func TestJSONLinesFate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  uint8
		out     uint32
		nh      string
		want    string
		wantNot string
	}{
		{"host mode", 0, 0, "", `"end_reason":"idle"}`, "forwarding_status"},
		{"forwarded", 64, 4, "198.18.0.9", `"forwarding_status":64,"fate":"forwarded","egress_ifindex":4,"next_hop":"198.18.0.9"}`, ""},
		{"forwarded, next hop unknown", 64, 4, "", `"forwarding_status":64,"fate":"forwarded","egress_ifindex":4}`, "next_hop"},
		{"dropped bad TTL", 137, 0, "", `"forwarding_status":137,"fate":"dropped"}`, "egress_ifindex"},
		{"consumed for us", 195, 0, "", `"forwarding_status":195,"fate":"consumed"}`, "egress_ifindex"},
	} {
		var b strings.Builder
		s := NewJSONLines(&b)
		f := Flow{Key: flowKey("198.18.0.1", "198.19.0.2", 1, 2, 17, 0, 3), Packets: 1, EndReason: EndIdleTimeout,
			ForwardingStatus: tt.status, EgressIfIndex: tt.out}
		f.Key.Fate = tt.status
		if tt.nh != "" {
			f.NextHop = netip.MustParseAddr(tt.nh)
		}
		if err := s.Export([]Flow{f}); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if !strings.Contains(got, tt.want) || (tt.wantNot != "" && strings.Contains(got, tt.wantNot)) {
			t.Errorf("%s: %s", tt.name, got)
		}
	}
}

// writeSizes records the size of each write.
type writeSizes struct{ sizes []int }

func (w *writeSizes) Write(b []byte) (int, error) {
	w.sizes = append(w.sizes, len(b))
	return len(b), nil
}

// A batch goes out in writes of jsonBufferSize (the last one shorter),
// not of bufio's default 4 KiB: a flood exports a batch per 4096 flows.
func TestJSONLinesWritesLargeChunks(t *testing.T) {
	var w writeSizes
	s := NewJSONLines(&w)
	flows := make([]Flow, 4096)
	for i := range flows {
		flows[i] = Flow{Key: flowKey("198.18.0.1", "198.19.0.2", uint16(i), 2, 17, 0, 3), Packets: 1, EndReason: EndLackOfResources}
	}
	if err := s.Export(flows); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range w.sizes {
		total += n
	}
	if want := (total + jsonBufferSize - 1) / jsonBufferSize; len(w.sizes) != want {
		t.Fatalf("%d bytes in %d writes, want %d (sizes %v)", total, len(w.sizes), want, w.sizes[:min(len(w.sizes), 8)])
	}
}

// jsonTimes renders what AppendFormat renders, whether the minute is
// the one it kept or another, before 1970, in other years and zones.
func TestJSONTimesMatchAppendFormat(t *testing.T) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	times := []time.Time{
		time.Unix(0, 0),
		time.Unix(-1, 999_999_999),
		time.Unix(-61, 0),
		time.Unix(59, 999_000_000),
		time.Unix(60, 0),
		time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(2024, 3, 1, 0, 0, 0, 1, time.UTC),
		time.Date(2026, 11, 30, 6, 45, 1, 500_000_000, zone),
		time.Date(2026, 11, 30, 6, 45, 2, 7_000_000, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(12345, 6, 7, 8, 9, 10, 11_000_000, time.UTC),
		time.Date(-5, 6, 7, 8, 9, 10, 11_000_000, time.UTC),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)))
	}
	var c jsonTimes
	for _, tm := range times {
		for range 2 { // a new minute, then the kept one
			want := tm.UTC().AppendFormat(nil, jsonTimeLayout)
			if got := c.append(nil, tm); string(got) != string(want) {
				t.Fatalf("%v: got %s, want %s", tm, got, want)
			}
		}
	}
}
