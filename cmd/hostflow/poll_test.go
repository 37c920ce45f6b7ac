package main

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// simClock is a settable clock for the daemon and its cache.
type simClock struct{ now time.Duration }

func (c *simClock) Now() time.Time           { return time.Unix(0, 0).Add(c.now) }
func (c *simClock) Monotonic() time.Duration { return c.now }

// simPacket is one packet a simKernel counts at time at.
type simPacket struct {
	id bpf.NetFlowId
	at time.Duration
	fl uint16 // TCP flags
}

// simKernel is a flowSource whose Drain hands out, per flow, the packets
// counted before the clock's now since the previous Drain, as the kernel
// map's deltas.
type simKernel struct {
	flowSource
	clk     *simClock
	packets []simPacket // by time
	next    int
	drains  int
}

func (k *simKernel) Drain(fn func(bpf.NetFlowId, []bpf.NetFlowMetrics)) error {
	k.drains++
	delta := map[bpf.NetFlowId]*bpf.NetFlowMetrics{}
	var order []bpf.NetFlowId
	for ; k.next < len(k.packets) && k.packets[k.next].at < k.clk.now; k.next++ {
		p := k.packets[k.next]
		m := bpf.NetFlowMetrics{Packets: 1, Bytes: 100, StartMonoTimeTs: uint64(p.at), EndMonoTimeTs: uint64(p.at), Flags: p.fl}
		if d, ok := delta[p.id]; ok {
			d.Accumulate(&m)
			continue
		}
		delta[p.id] = &m
		order = append(order, p.id)
	}
	for _, id := range order {
		fn(id, []bpf.NetFlowMetrics{*delta[id]})
	}
	return nil
}

// TCPEnds counts the packets with FIN or RST counted before now, as
// COUNTER_TCP_END does.
func (k *simKernel) TCPEnds() (uint64, error) {
	var n uint64
	for _, p := range k.packets {
		if p.at < k.clk.now && p.fl&0x05 != 0 {
			n++
		}
	}
	return n, nil
}

// lineSink keeps "time: key packets reason" of every record.
type lineSink struct {
	clk  *simClock
	recs []string
}

func (s *lineSink) Export(flows []exporter.Flow) error {
	for _, f := range flows {
		s.recs = append(s.recs, fmt.Sprintf("%v: %v %d pkts reason %d", s.clk.now, f.Key, f.Packets, f.EndReason))
	}
	return nil
}
func (s *lineSink) Close() error { return nil }

// A poll that skips the read (nothing could end yet) exports the same
// records at the same polls as one that reads every time, and reads
// less: UDP flows that go idle, one that runs into the active timeout, a
// TCP flow that closes (the 2 s grace), a flow that starts late. Without
// a FIN or RST counted since the last read, a new flow can end no sooner
// than the idle timeout after it, so most polls skip.
func TestDaemonPollSkipsNeedlessReads(t *testing.T) {
	const s = time.Second
	udp := func(port uint16) bpf.NetFlowId {
		return bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: port, DstPort: 53}
	}
	tcp := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 6, SrcPort: 9, DstPort: 80}
	t0 := 1000 * s
	var packets []simPacket
	for ms := time.Duration(0); ms < 90*s; ms += 100 * time.Millisecond {
		at := t0 + ms
		switch {
		case ms < 5*s:
			packets = append(packets, simPacket{id: udp(1), at: at})
		case ms >= 20*s && ms < 21*s:
			packets = append(packets, simPacket{id: udp(2), at: at + 37*time.Millisecond})
		}
		if ms < 80*s { // runs past the 60 s active timeout
			packets = append(packets, simPacket{id: udp(3), at: at + 50*time.Millisecond})
		}
		if ms >= 40*s && ms <= 43*s {
			p := simPacket{id: tcp, at: at + 10*time.Millisecond}
			if ms == 43*s {
				p.fl = 0x01 // FIN
			}
			packets = append(packets, p)
		}
	}
	slices.SortFunc(packets, func(a, b simPacket) int { return int(a.at - b.at) })

	run := func(skip bool) (recs []string, drains int) {
		clk := &simClock{now: t0}
		cache, err := exporter.NewCache(exporter.CacheConfig{ActiveTimeout: 60 * s, IdleTimeout: 15 * s, TCPEndGrace: 2 * s, MaxFlows: 16}, clk)
		if err != nil {
			t.Fatal(err)
		}
		k := &simKernel{clk: clk, packets: packets}
		sink := &lineSink{clk: clk}
		d := &daemon{log: slog.New(slog.DiscardHandler), cache: cache, fetcher: k, sinks: sinkSet{{sink: sink}}, mono: clk.Monotonic}
		for tick := 1; tick <= 120; tick++ {
			clk.now = t0 + time.Duration(tick)*s
			if skip {
				d.poll()
			} else {
				d.drain()
				d.expire()
			}
		}
		d.drain()
		d.flushTo(d.sinks)
		return sink.recs, k.drains
	}
	every, everyDrains := run(false)
	skipping, skippingDrains := run(true)
	if !slices.Equal(every, skipping) {
		t.Errorf("records differ\nreading every poll:\n%v\nskipping:\n%v", every, skipping)
	}
	t.Logf("%d records; %d drains reading every poll, %d skipping", len(every), everyDrains, skippingDrains)
	if len(every) < 5 {
		t.Errorf("%d records: the scenario ends fewer flows than it should\n%v", len(every), every)
	}
	if skippingDrains*4 > everyDrains {
		t.Errorf("%d drains skipping, %d reading every poll: want at most a quarter", skippingDrains, everyDrains)
	}
}
