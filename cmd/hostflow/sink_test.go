package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/metrics"
)

func sinkConfig(t *testing.T, args ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(append([]string{"--config", "/dev/null"}, args...), "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func urls(s sinkSet) []string {
	var out []string
	for _, c := range s {
		out = append(out, c.name())
	}
	return out
}

// TestBuildSinksReuse: a reload keeps the exporters of unchanged
// collectors (counters and sequence numbers go on) and closes the others.
func TestBuildSinksReuse(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var stdout bytes.Buffer
	a, b, c := "ipfix+udp://127.0.0.1:47391", "ipfix+udp://127.0.0.1:47392", "ipfix+udp://[::1]:47393"

	first, unused, created, err := buildSinks(sinkConfig(t), nil, sinkEnv{stdout: &stdout, log: log})
	if err != nil || len(first) != 1 || first[0].url != "" || len(unused) != 0 || len(created) != 1 {
		t.Fatalf("no collector: %v %v %v %v", urls(first), unused, created, err)
	}

	second, unused, created, err := buildSinks(sinkConfig(t, "--collector", a, "--collector", b), first, sinkEnv{stdout: &stdout, log: log})
	if err != nil || len(second) != 2 || len(created) != 2 || len(unused) != 1 || unused[0] != first[0] {
		t.Fatalf("to two collectors: %v unused %v created %v %v", urls(second), urls(unused), urls(created), err)
	}

	third, unused, created, err := buildSinks(sinkConfig(t, "--collector", b, "--collector", c), second, sinkEnv{stdout: &stdout, log: log})
	if err != nil {
		t.Fatal(err)
	}
	if third[0] != second[1] {
		t.Error("collector b was rebuilt, not reused")
	}
	if len(created) != 1 || created[0].url != c || len(unused) != 1 || unused[0].url != a {
		t.Errorf("created %v unused %v", urls(created), urls(unused))
	}

	fourth, _, created, err := buildSinks(sinkConfig(t, "--collector", b, "--collector", c, "--observation-domain", "7"), third, sinkEnv{stdout: &stdout, log: log})
	if err != nil || len(created) != 2 || fourth[0] == third[0] {
		t.Errorf("a new observation domain must rebuild every exporter: created %v", urls(created))
	}
	for _, s := range []sinkSet{first, second, third, fourth} {
		s.Close()
	}
}

func TestBuildSinksError(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := sinkConfig(t, "--collector", "ipfix+udp://127.0.0.1:4739", "--collector", "ipfix+udp://no-such-host.invalid:4739")
	if _, _, _, err := buildSinks(cfg, nil, sinkEnv{stdout: io.Discard, log: log}); err == nil {
		t.Error("unresolvable collector: no error")
	}
}

// TestUDPSinkNothingListening: a UDP collector whose port answers ICMP port
// unreachable (nothing listens: a capture-only setup, a collector
// restarting) costs no message: the daemon's counters show every message
// sent, none lost, and the ICMP errors counted.
func TestUDPSinkNothingListening(t *testing.T) {
	ns := testutil.NewNetnsNamed(t, "hf-sinktest-")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var sinks sinkSet
	if err := ns.Do(func() (err error) {
		sinks, _, _, err = buildSinks(sinkConfig(t, "--collector", "ipfix+udp://127.0.0.1:4739"), nil, sinkEnv{stdout: io.Discard, log: log})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sinks.Close()
	now := time.Now()
	for i := range 10 {
		k := exporter.FlowKey{Src: netip.AddrFrom4([4]byte{0, 0, 0, byte(i)}), Dst: netip.IPv4Unspecified(),
			Proto: 17, SrcPort: uint16(1000 + i), DstPort: 53}
		if err := sinks.Export([]exporter.Flow{{Key: k, Packets: 1, Bytes: 100, Start: now, End: now}}); err != nil {
			t.Fatal(err)
		}
	}
	var st metrics.CollectorStats
	waitFor := time.Now().Add(5 * time.Second)
	for time.Now().Before(waitFor) {
		if st = sinks[0].stats(); st.Records == 10 && st.Messages >= 11 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Templates at start, then at least one message per export.
	if st.Records != 10 || st.Messages < 11 || st.SendErrors != 0 || st.RecordsLost != 0 || st.Unreachable == 0 {
		t.Errorf("stats %+v: want 10 records in 11+ messages, none lost, ICMP errors counted", st)
	}
}
