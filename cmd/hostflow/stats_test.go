package main

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/metrics"
)

// flakyCollector accepts TCP connections on 127.0.0.1, hangs up the first
// one at once and reads the next ones until stop.
type flakyCollector struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newFlakyCollector(t *testing.T) *flakyCollector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyCollector{ln: ln}
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n == 0 {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(f.stop)
	return f
}

// stop takes the collector down: no listener, no connection.
func (f *flakyCollector) stop() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// waitFor exports one flow at a time to s until cond holds on its own
// counters; it fails after a bound that is only a guard against a hang.
func waitFor(t *testing.T, s *collectorSink, what string, cond func(metrics.CollectorStats) bool) {
	t.Helper()
	flow := []exporter.Flow{{Packets: 1, Bytes: 60, Start: time.Now(), End: time.Now()}}
	for deadline := time.Now().Add(20 * time.Second); !cond(s.stats()); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened: %+v", what, s.stats())
		}
		_ = s.sink.Export(flow)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCollectorLossMetrics: when a TCP collector hangs up, the reconnect
// shows in hostflow_collector_reconnects_total; when it is down and its
// queue is full, the batches dropped show in
// hostflow_collector_dropped_records_total.
func TestCollectorLossMetrics(t *testing.T) {
	col := newFlakyCollector(t)
	url := "ipfix+tcp://" + col.ln.Addr().String()
	d := testDaemon(t, newFakeFetcher(t), "--collector", url, "--collector-queue", "1")
	sinks := d.sinks
	defer sinks.Close()

	waitFor(t, sinks[0], "reconnect after the collector hung up", func(s metrics.CollectorStats) bool { return s.Reconnects > 0 })
	col.stop()
	waitFor(t, sinks[0], "drops while the collector is down", func(s metrics.CollectorStats) bool { return s.DroppedRecords > 0 })

	got := d.Collectors()
	if len(got) != 1 || got[0].URL != url || got[0].Reconnects == 0 || got[0].DroppedRecords == 0 {
		t.Errorf("Collectors() = %+v, want reconnects and dropped records counted", got)
	}
	fams, err := metrics.NewRegistry(d, metrics.BuildInfo{}).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hostflow_collector_reconnects_total", "hostflow_collector_dropped_records_total"} {
		var v float64
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if f.GetName() == name && l.GetValue() == url {
						v = m.GetCounter().GetValue()
					}
				}
			}
		}
		if v == 0 {
			t.Errorf("%s{collector=%q} = 0 after the collector went down", name, url)
		}
	}
}
