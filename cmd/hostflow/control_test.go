package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/control"
)

// recordingSink keeps what it was given.
type recordingSink struct {
	mu    sync.Mutex
	flows []exporter.Flow
}

func (s *recordingSink) Export(f []exporter.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flows = append(s.flows, f...)
	return nil
}
func (s *recordingSink) Close() error { return nil }
func (s *recordingSink) taken() []exporter.Flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]exporter.Flow(nil), s.flows...)
}

func udpKey(sport uint16, ifindex uint32) bpf.NetFlowId {
	var id bpf.NetFlowId
	id.EthProtocol, id.TransportProtocol, id.IfIndex, id.Direction = 0x0800, 17, ifindex, bpf.DirectionEgress
	id.SrcIp = [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 1}
	id.DstIp = [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 2}
	id.SrcPort, id.DstPort = sport, 7
	return id
}

// TestControlThroughLoop: the commands are run by the loop goroutine on
// its cache: flows lists the cached flows without exporting them, stats
// counts, expire exports them all at once as forced end; the stop log
// line labels the counts by end reason.
func TestControlThroughLoop(t *testing.T) {
	f := newFakeFetcher(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	d := testDaemon(t, f, "--control-socket", sock, "--idle-timeout", "1h")
	var logs bytes.Buffer
	var logMu sync.Mutex
	d.log = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	rec := &recordingSink{}
	d.sinks = sinkSet{{key: "rec", sink: rec}}
	d.cache.AddOne(udpKey(1000, 3), &bpf.NetFlowMetrics{Packets: 10, Bytes: 1280, StartMonoTimeTs: 1, EndMonoTimeTs: 2})
	d.cache.AddOne(udpKey(1001, 3), &bpf.NetFlowMetrics{Packets: 20, Bytes: 2000, StartMonoTimeTs: 1, EndMonoTimeTs: 2})
	if err := d.startControl(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	defer func() {
		cancel()
		<-done
	}()

	c := &control.Client{Path: sock}
	flows, err := c.Flows(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 2 || flows[0].Packets+flows[1].Packets != 30 || flows[0].Direction != "egress" || flows[0].IfIndex != 3 {
		t.Fatalf("flows: %+v", flows)
	}
	if n := len(rec.taken()); n != 0 {
		t.Errorf("flows exported %d records: a listing exports nothing", n)
	}
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.FlowsActive != 2 || st.Packets != 0 || st.PacketsSeen != 30 || st.BytesSeen != 3280 {
		t.Errorf("stats before expire: %+v", st)
	}
	n, err := c.Expire(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	got := rec.taken()
	if len(got) != 2 || got[0].EndReason != exporter.EndForced || got[1].EndReason != exporter.EndForced {
		t.Errorf("expire exported %+v, want 2 forced-end records", got)
	}
	st, err = c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.FlowsActive != 0 || st.Packets != 30 || st.Bytes != 3280 || st.PacketsSeen != 30 || st.FlowsExported["forced"] != 2 {
		t.Errorf("stats after expire: %+v", st)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	done <- nil
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if !strings.Contains(out, "flows_idle=0 flows_active=0 flows_end=0 flows_forced=2 flows_lack=0 packets=30") {
		t.Errorf("stop line lacks the labelled counts:\n%s", out)
	}
	// Stopped: the socket is gone, a command says there is no daemon.
	if _, err := c.Stats(context.Background()); err == nil || !strings.Contains(err.Error(), "no daemon at") {
		t.Errorf("after stop: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestStartControlFailures: a live daemon's socket stops the start; a
// socket that cannot be created (its directory is a file) is logged, and
// the daemon runs without one.
func TestStartControlFailures(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	srv, err := control.Listen(live, control.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(nil)
	defer srv.Close()
	d := testDaemon(t, newFakeFetcher(t), "--control-socket", live)
	if err := d.startControl(); err == nil || !strings.Contains(err.Error(), "another hostflow is running") {
		t.Errorf("socket of a live daemon: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d = testDaemon(t, newFakeFetcher(t), "--control-socket", filepath.Join(file, "ctl.sock"))
	var logs bytes.Buffer
	d.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := d.startControl(); err != nil || d.ctl != nil {
		t.Errorf("unusable path: %v, server %v; want no error and no server", err, d.ctl)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"control socket: the commands flows, stats and expire will not reach this daemon\"") {
		t.Errorf("unusable path not logged:\n%s", logs.String())
	}
	d.stopControl()
}
