package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// TestRouterFates: fates are asked of the fetcher in router mode with the
// tc capture only when every packet is counted; otherwise the reason is
// given (the daemon warns with it and runs the fallback).
func TestRouterFates(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		want    bool
		sampled bool // the reason is the sampling
		reason  bool
	}{
		{[]string{"--mode", "host"}, false, false, false},
		{[]string{"--mode", "router"}, true, false, false},
		{[]string{"--mode", "router", "--sampling", "1"}, true, false, false},
		{[]string{"--mode", "router", "--sampling", "2"}, false, true, true},
		{[]string{"--mode", "router", "--capture", "socket"}, false, false, true},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			want, err := routerFates(sinkConfig(t, tt.args...))
			if want != tt.want || errors.Is(err, errFatesSampled) != tt.sampled || (err != nil) != tt.reason {
				t.Errorf("fates %v, err %v; want %v, sampled reason %v, a reason %v", want, err, tt.want, tt.sampled, tt.reason)
			}
		})
	}
}

// TestCacheConfigFateHold: arrivals wait the longer of 5 s and two poll
// intervals for their fates; host mode does not follow fates.
func TestCacheConfigFateHold(t *testing.T) {
	for _, tt := range []struct {
		fates bool
		poll  string
		want  time.Duration
	}{
		{true, "1s", 5 * time.Second},
		{true, "10s", 20 * time.Second},
		{false, "10s", 0},
	} {
		d := &daemon{fates: tt.fates}
		c := d.cacheConfig(sinkConfig(t, "--mode", "router", "--poll-interval", tt.poll))
		if c.Fates != tt.fates || c.FateHold != tt.want {
			t.Errorf("fates %v, poll %s: cache fates %v hold %v, want hold %v", tt.fates, tt.poll, c.Fates, c.FateHold, tt.want)
		}
	}
}

// TestReloadFateSampling: in router mode, a reload that would change the
// sampling between unsampled (0, 1) and sampled is rejected with an error
// that says a restart is needed, before the kernel's rate is touched; the
// changes that keep every packet counted, or keep sampling, apply.
func TestReloadFateSampling(t *testing.T) {
	for _, tt := range []struct {
		name           string
		fates, sampled bool
		from, to       string
		wantErr        bool
	}{
		{"fates, 0 to 4", true, false, "0", "4", true},
		{"fates, 1 to 2", true, false, "1", "2", true},
		{"fates, 0 to 1", true, false, "0", "1", false},
		{"sampled, 4 to 1", false, true, "4", "1", true},
		{"sampled, 4 to 0", false, true, "4", "0", true},
		{"sampled, 4 to 8", false, true, "4", "8", false},
		{"no fates (old kernel), 0 to 4", false, false, "0", "4", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFetcher(t)
			d := testDaemon(t, f, "--mode", "router", "--sampling", tt.from)
			defer func() { d.sinks.Close() }()
			d.fates, d.sampledNoFates = tt.fates, tt.sampled
			err := d.apply(sinkConfig(t, "--mode", "router", "--sampling", tt.to))
			if (err != nil) != tt.wantErr {
				t.Fatalf("apply: %v, want error %v", err, tt.wantErr)
			}
			calls := strings.Join(f.Calls(), " ")
			if tt.wantErr {
				if !strings.Contains(err.Error(), "restart hostflow") {
					t.Errorf("error %q does not say a restart is needed", err)
				}
				if d.cfg.Sampling != sinkConfig(t, "--sampling", tt.from).Sampling || strings.Contains(calls, "SetSampling") {
					t.Errorf("rejected, but sampling now %d; fetcher calls %s", d.cfg.Sampling, calls)
				}
			} else if tt.from != tt.to && tt.from != "0" && !strings.Contains(calls, "SetSampling") {
				t.Errorf("applied without changing the kernel's sampling: %s", calls)
			}
		})
	}
}

// TestReloadKeepsFates: a reload that replaces the cache (new timeouts)
// while the kernel keeps counting exports the cached flows but not the
// arrivals whose fates have not been read: a packet read arriving before
// the reload and forwarded after it is exported once, forwarded, never
// consumed as well.
func TestReloadKeepsFates(t *testing.T) {
	var out bytes.Buffer
	f := newFakeFetcher(t)
	args := []string{"--mode", "router", "--active-timeout", "1h", "--idle-timeout", "1h"}
	d := &daemon{stdout: &out, fetcher: fateFetcher{f}, fates: true}
	setUpDaemon(t, d, f, args...)
	arrival := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 1, DstPort: 2, IfIndex: 2,
		SrcIp: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 15: 2}, DstIp: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 15: 2}}
	fwd := arrival
	fwd.Fate = exporter.FateForwarded
	now := uint64(time.Second)
	m := func(packets uint64) []bpf.NetFlowMetrics {
		return []bpf.NetFlowMetrics{{Packets: packets, Bytes: packets * 100, StartMonoTimeTs: now, EndMonoTimeTs: now, OutIfIndex: 3}}
	}
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{arrival: m(5), fwd: m(2)}
	d.poll()
	// The reload drains nothing new: 3 packets are still in flight.
	if err := d.apply(sinkConfig(t, "--mode", "router", "--active-timeout", "2h", "--idle-timeout", "1h")); err != nil {
		t.Fatal(err)
	}
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{fwd: m(3)}
	d.poll()
	d.flushLast(d.sinks)
	d.sinks.Close()

	got := map[int]uint64{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r struct {
			Packets uint64 `json:"packets"`
			Status  int    `json:"forwarding_status"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", sc.Bytes(), err)
		}
		got[r.Status] += r.Packets
	}
	if len(got) != 1 || got[64] != 5 {
		t.Errorf("exported packets by status %v, want the 5 that arrived, all forwarded", got)
	}
	if n := d.cache.Stats().UnmatchedFatePackets; n != 0 {
		t.Errorf("%d unmatched fate packets", n)
	}
}

// TestDaemonUnmatchedFates: fate packets no arrival matched reach
// /metrics (hostflow_fate_unmatched_packets_total) through Flows.
func TestDaemonUnmatchedFates(t *testing.T) {
	f := newFakeFetcher(t)
	d := &daemon{log: slog.New(slog.DiscardHandler), fetcher: fateFetcher{f}, fates: true}
	d.sinks = sinkSet{{sink: &recordSink{}}}
	var err error
	if d.cache, err = exporter.NewCache(d.cacheConfig(sinkConfig(t, "--mode", "router")), exporter.SystemClock{}); err != nil {
		t.Fatal(err)
	}
	id := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 1, DstPort: 2, IfIndex: 2, Fate: 131}
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{id: {{Packets: 4, Bytes: 400, StartMonoTimeTs: 1, EndMonoTimeTs: 1}}}
	d.poll()
	d.flushLast(d.sinks)
	d.updateActive()
	if n := d.Flows().UnmatchedFatePackets; n != 4 {
		t.Errorf("unmatched fate packets %d, want the 4 dropped without arrival", n)
	}
}
