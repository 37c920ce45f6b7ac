package main

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// fateFetcher is a fakeFetcher that counts fates.
type fateFetcher struct{ *fakeFetcher }

func (fateFetcher) Fate() bool { return true }

// recordSink keeps a copy of every exported record.
type recordSink struct{ flows []exporter.Flow }

func (s *recordSink) Export(flows []exporter.Flow) error {
	s.flows = append(s.flows, flows...)
	return nil
}
func (s *recordSink) Close() error { return nil }

// TestSourceFates: only a source that says it counts fates does; the
// others (an older kernel, the socket capture) fall back.
func TestSourceFates(t *testing.T) {
	f := newFakeFetcher(t)
	if sourceFates(f) {
		t.Error("a fetcher without Fates counts fates")
	}
	if !sourceFates(fateFetcher{f}) {
		t.Error("a fetcher whose Fate says true does not count fates")
	}
}

// TestLoadFates: router mode asks for fates; a kernel that cannot count
// them makes it load again without, and say why; other loads fail as
// they are.
func TestLoadFates(t *testing.T) {
	errOld := errors.New("fate: kernel too old")
	for _, tt := range []struct {
		name      string
		fate      bool
		fails     []error // load's error, call by call
		wantLoads []bool  // Fate of each load
		wantFate  error
		wantErr   error
	}{
		{"fates", true, []error{nil}, []bool{true}, nil, nil},
		{"fallback", true, []error{errOld, nil}, []bool{true, false}, errOld, nil},
		{"fallback fails too", true, []error{errOld, errInjected}, []bool{true, false}, errOld, errInjected},
		{"host mode", false, []error{errInjected}, []bool{false}, nil, errInjected},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var loads []bool
			src, fateErr, err := loadFates(bpf.FetcherOptions{Fate: tt.fate}, func(o bpf.FetcherOptions) (flowSource, error) {
				loads = append(loads, o.Fate)
				if e := tt.fails[len(loads)-1]; e != nil {
					return nil, e
				}
				return newFakeFetcher(t), nil
			})
			if !slices.Equal(loads, tt.wantLoads) || fateErr != tt.wantFate || err != tt.wantErr || (err == nil) != (src != nil) {
				t.Errorf("loads %v, fate err %v, err %v, source %v; want %v, %v, %v", loads, fateErr, err, src, tt.wantLoads, tt.wantFate, tt.wantErr)
			}
		})
	}
}

// TestDaemonRouterFates: in router mode with fates, the drains' arrivals
// and fates go through the cache's fate bookkeeping: the exported records
// are one per fate, consumed ones derived, and add up to the arrivals,
// which alone are observed (a packet counted with its arrival and its
// fate is one packet).
func TestDaemonRouterFates(t *testing.T) {
	f := newFakeFetcher(t)
	d := &daemon{log: slog.New(slog.DiscardHandler), fetcher: fateFetcher{f}, fates: true}
	sink := &recordSink{}
	d.sinks = sinkSet{{sink: sink}}
	cfg := sinkConfig(t, "--mode", "router", "--active-timeout", "1h", "--idle-timeout", "1h")
	cc := d.cacheConfig(cfg)
	if cc.FateHold != exporter.DefaultFateHold {
		t.Errorf("fate hold %v at a 1 s poll interval, want %v", cc.FateHold, exporter.DefaultFateHold)
	}
	cc.FateHold = time.Nanosecond // arrivals settle at the next poll
	var err error
	if d.cache, err = exporter.NewCache(cc, exporter.SystemClock{}); err != nil {
		t.Fatal(err)
	}
	arrival := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 1, DstPort: 2, IfIndex: 2,
		SrcIp: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 15: 2}, DstIp: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 15: 2}}
	withFate := func(fate uint8) bpf.NetFlowId { id := arrival; id.Fate = fate; return id }
	// Stamped now, on the cache's clock: a poll also expires flows.
	now := uint64(exporter.SystemClock{}.Monotonic())
	m := func(packets uint64, out uint32) []bpf.NetFlowMetrics {
		return []bpf.NetFlowMetrics{{Packets: packets, Bytes: packets * 100, StartMonoTimeTs: now, EndMonoTimeTs: now, OutIfIndex: out}}
	}
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{arrival: m(10, 0), withFate(64): m(6, 3), withFate(130): m(1, 0)}
	d.poll()
	f.kernel = map[bpf.NetFlowId][]bpf.NetFlowMetrics{arrival: m(2, 0), withFate(64): m(1, 3)}
	d.drain() // an early drain, or a control command's: no settling
	if n := d.cache.Len(); n != 2 {
		t.Errorf("%d flows cached after a poll and a drain, want 2: forwarded, dropped", n)
	}
	d.poll()
	// The first poll's arrivals settled at the second: 10 - 8 fated.
	if n := d.cache.Len(); n != 3 {
		t.Errorf("%d flows cached after two polls, want 3: forwarded, dropped, consumed", n)
	}
	d.expire()
	d.flushLast(d.sinks)

	got := map[uint8]uint64{}
	for _, r := range sink.flows {
		got[r.ForwardingStatus] += r.Packets
		if r.Key.Fate != r.ForwardingStatus || (r.ForwardingStatus == 64) != (r.EgressIfIndex == 3) {
			t.Errorf("record %v: status %d egress %d", r.Key, r.ForwardingStatus, r.EgressIfIndex)
		}
	}
	want := map[uint8]uint64{64: 7, 130: 1, exporter.FateConsumed: 4}
	if len(got) != len(want) || got[64] != 7 || got[130] != 1 || got[exporter.FateConsumed] != 4 {
		t.Errorf("exported packets by status %v, want %v", got, want)
	}
	if s := d.Flows(); s.ObservedPackets != 12 || s.Packets != 12 {
		t.Errorf("observed %d, exported %d packets; want the 12 that arrived", s.ObservedPackets, s.Packets)
	}
}
