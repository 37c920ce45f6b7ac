package bpf

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func udpFlow(sport uint16, payload int) pkt {
	return v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(sport, 53, bytesN(payload)))
}

// udpFlowTOS is udpFlow with the ToS byte set to the low byte of sport.
func udpFlowTOS(sport uint16, payload int) pkt {
	return v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, tos: uint8(sport)}, udp(sport, 53, bytesN(payload)))
}

// readRecords reads n records from the ring buffer, then checks that no
// further record arrives before a short deadline.
func readRecords(t *testing.T, f *FlowFetcher, n int) []Record {
	t.Helper()
	var out []Record
	for len(out) < n {
		f.rb.SetDeadline(time.Now().Add(5 * time.Second))
		raw, err := f.ReadRingBuf()
		if err != nil {
			t.Fatalf("ReadRingBuf after %d of %d records: %v", len(out), n, err)
		}
		r, err := DecodeRecord(raw.RawSample)
		if err != nil {
			t.Fatalf("DecodeRecord: %v", err)
		}
		out = append(out, r)
	}
	f.rb.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if raw, err := f.ReadRingBuf(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadRingBuf after the %d expected records: %d bytes, err %v; want a deadline error", n, len(raw.RawSample), err)
	}
	return out
}

// TestMapFull fills a 4-entry aggregation map with 10 distinct flows: 4 are
// aggregated, the other 6 arrive one record per packet through the ring
// buffer (ToS included) and are counted as MapFull. Flows already in the
// full map keep aggregating, and the spare map installed by the drain has
// room again.
func TestMapFull(t *testing.T) {
	f := newTestFetcher(t, 4)
	const flows = 10
	const payload = 20
	for i := range flows {
		runFrame(t, f.progs.IngressFlowParse, udpFlowTOS(uint16(1000+i), payload).frame(), nil)
	}
	// A flow that made it into the map still aggregates when it is full.
	runFrame(t, f.progs.IngressFlowParse, udpFlowTOS(1000, payload).frame(), nil)

	recs := readRecords(t, f, flows-4)
	seen := map[uint16]bool{}
	for _, r := range recs {
		if !f.Diverted(&r) {
			t.Errorf("Diverted(%v): false, want true (diverted by the active map)", r.Id)
		}
		if r.Id.SrcPort < 1004 || r.Id.SrcPort >= 1000+flows || seen[r.Id.SrcPort] {
			t.Errorf("unexpected or repeated diverted flow %v", r.Id)
		}
		seen[r.Id.SrcPort] = true
		if r.Id.DstPort != 53 || r.Id.TransportProtocol != protoUDP || r.Id.Direction != DirectionIngress ||
			r.Id.EthProtocol != etherTypeIPv4 || r.Id.SrcIp != ipKey("198.18.0.1") || r.Id.IfIndex != 1 ||
			r.Id.Tos != uint8(r.Id.SrcPort) {
			t.Errorf("diverted key %+v", r.Id)
		}
		if r.Metrics.Packets != 1 || r.Metrics.Bytes != 20+8+payload || r.Metrics.StartMonoTimeTs == 0 ||
			r.Metrics.StartMonoTimeTs != r.Metrics.EndMonoTimeTs {
			t.Errorf("diverted metrics %+v", r.Metrics)
		}
	}

	c := counters(t, f)
	if c.MapFull != flows-4 || c.RingBufFull != 0 {
		t.Errorf("MapFull %d RingBufFull %d, want %d and 0", c.MapFull, c.RingBufFull, flows-4)
	}

	agg := drain(t, f)
	if len(agg) != 4 {
		t.Fatalf("aggregated %d flows, want 4: %v", len(agg), agg)
	}
	for id, m := range agg {
		want := uint64(1)
		if id.SrcPort == 1000 {
			want = 2
		}
		if id.SrcPort < 1000 || id.SrcPort >= 1004 || m.Packets != want || m.Bytes != want*(20+8+payload) {
			t.Errorf("aggregated %v: packets %d bytes %d", id, m.Packets, m.Bytes)
		}
	}

	// The spare map the drain installed is empty and as large.
	for i := range 4 {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(2000+i), payload).frame(), nil)
	}
	if c := counters(t, f); c.MapFull != flows-4 {
		t.Errorf("after the drain MapFull grew to %d: the spare map is not empty or smaller", c.MapFull)
	}
	if agg := drain(t, f); len(agg) != 4 {
		t.Errorf("second cycle aggregated %d flows, want 4", len(agg))
	}
}

// TestDivertedSwitchesFirst: a record diverted by the active map makes the
// next drain switch maps, though the map is not 7/8 full (between polls,
// the reader sees it full before the drain does), and a record diverted
// before that switch no longer calls for one.
func TestDivertedSwitchesFirst(t *testing.T) {
	f := newTestFetcher(t, 64)
	f.maxAge = time.Hour // never switch for age
	for i := range 10 {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(1000+i), 20).frame(), nil)
	}
	r := Record{Metrics: NetFlowMetrics{Packets: 1, Epoch: f.epoch}}
	if !f.Diverted(&r) {
		t.Errorf("Diverted of a record of the active map: false, want true")
	}
	active, switches := f.active, f.switches
	if agg := drain(t, f); len(agg) != 10 {
		t.Errorf("drain: %d flows, want 10: %v", len(agg), agg)
	}
	if f.switches != switches+1 || f.active == active {
		t.Errorf("drain after Diverted: %d switches, active map %d; want %d and %d", f.switches, f.active, switches+1, 1-active)
	}
	if f.Diverted(&r) {
		t.Errorf("Diverted of a record from before the switch: true, want false")
	}
	for i := range 3 {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(2000+i), 20).frame(), nil)
	}
	if agg := drain(t, f); len(agg) != 3 || f.switches != switches+1 {
		t.Errorf("next drain: %d flows, %d switches; want 3 flows, no switch", len(agg), f.switches-switches)
	}
}

// TestFullSwitchesFirst: once a packet found the active map full, Full says
// so (whether or not its record was read) and the next drain switches;
// the new map is not full.
func TestFullSwitchesFirst(t *testing.T) {
	f := newTestFetcher(t, 8)
	f.maxAge = time.Hour
	if full, err := f.Full(); err != nil || full {
		t.Fatalf("Full of an empty map: %v, %v; want false", full, err)
	}
	for i := range 10 { // 8 fit, 2 go to the ring buffer
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(1000+i), 20).frame(), nil)
	}
	if full, err := f.Full(); err != nil || !full {
		t.Fatalf("Full after 2 packets found the map full: %v, %v; want true", full, err)
	}
	switches := f.switches
	if agg := drain(t, f); len(agg) != 8 || f.switches != switches+1 {
		t.Errorf("drain: %d flows, %d switches; want 8 flows and a switch", len(agg), f.switches-switches)
	}
	if full, err := f.Full(); err != nil || full {
		t.Errorf("Full after the switch: %v, %v; want false", full, err)
	}
	for i := range 5 {
		runFrame(t, f.progs.IngressFlowParse, udpFlow(uint16(2000+i), 20).frame(), nil)
	}
	if full, err := f.Full(); err != nil || full {
		t.Errorf("Full with 5 flows in the new 8-entry map: %v, %v; want false", full, err)
	}
	if agg := drain(t, f); len(agg) != 5 || f.switches != switches+1 {
		t.Errorf("next drain: %d flows, %d switches; want 5 flows, no switch", len(agg), f.switches-switches)
	}
	readRecords(t, f, 2)
}

// TestRingBufFull shrinks direct_flows to one page so that diverted records
// overflow it: those packets are counted as RingBufFull, the only real loss.
func TestRingBufFull(t *testing.T) {
	f := newTestFetcher(t, 1, WithRingBufSize(uint32(os.Getpagesize())))
	const n = 200 // 200 records of 88+8 bytes cannot fit in 4 KiB
	for i := range n {
		runFrame(t, f.progs.EgressFlowParse, udpFlow(uint16(3000+i), 0).frame(), nil)
	}
	c := counters(t, f)
	if c.MapFull != n-1 || c.RingBufFull == 0 || c.RingBufFull >= n-1 {
		t.Fatalf("MapFull %d RingBufFull %d, want %d and some but not all", c.MapFull, c.RingBufFull, n-1)
	}
	readRecords(t, f, int(c.MapFull-c.RingBufFull))
}

// drainModes are the three ways Drain reads: from the live map only (the
// common case), reading it then switching maps at every drain (a full or
// old map), or switching first at every drain (Diverted saw the map full).
var drainModes = []drainMode{{"read-live", time.Hour, false}, {"switch-every-drain", 0, false}, {"switch-first", time.Hour, true}}

type drainMode struct {
	name   string
	maxAge time.Duration
	full   bool
}

// drain drains f as the mode says.
func (mode drainMode) drain(t testing.TB, f *FlowFetcher) map[NetFlowId]NetFlowMetrics {
	t.Helper()
	if mode.full {
		f.full.Store(true)
	}
	return drain(t, f)
}

// TestSwap checks that each drain returns exactly the packets since the
// previous one, over enough cycles to use both maps twice.
func TestSwap(t *testing.T) {
	for _, mode := range drainModes {
		t.Run(mode.name, func(t *testing.T) { testSwap(t, mode) })
	}
}

func testSwap(t *testing.T, mode drainMode) {
	f := newTestFetcher(t, 64)
	f.maxAge = mode.maxAge
	a, b, c := udpFlow(1, 10), udpFlow(2, 20), udpFlow(3, 30)
	key := func(p pkt) uint16 { return uint16(p.l3[20])<<8 | uint16(p.l3[21]) }

	cycles := []map[*pkt]int{
		{&a: 3, &b: 2},
		{&a: 4, &c: 1},
		{},
		{&b: 5},
		{&a: 1, &b: 1, &c: 1},
	}
	totals := map[uint16]uint64{}
	wantTotals := map[uint16]uint64{}
	for i, cyc := range cycles {
		for p, n := range cyc {
			for range n {
				runFrame(t, f.progs.IngressFlowParse, p.frame(), nil)
			}
			wantTotals[key(*p)] += uint64(n)
		}
		got := mode.drain(t, f)
		if len(got) != len(cyc) {
			t.Errorf("cycle %d: %d flows, want %d: %v", i, len(got), len(cyc), got)
		}
		for p, n := range cyc {
			var found bool
			for id, m := range got {
				if id.SrcPort != key(*p) {
					continue
				}
				found = true
				if m.Packets != uint64(n) || m.Bytes != uint64(n*len(p.l3)) {
					t.Errorf("cycle %d flow %v: packets %d bytes %d, want %d and %d", i, id, m.Packets, m.Bytes, n, n*len(p.l3))
				}
			}
			if !found {
				t.Errorf("cycle %d: flow with source port %d missing", i, key(*p))
			}
		}
		for id, m := range got {
			totals[id.SrcPort] += m.Packets
		}
	}
	for port, n := range wantTotals {
		if totals[port] != n {
			t.Errorf("port %d: %d packets over all drains, want %d", port, totals[port], n)
		}
	}
	if got := mode.drain(t, f); len(got) != 0 {
		t.Errorf("drain after the last one: %v, want nothing", got)
	}
}

// TestSwapConcurrent drains while programs run on every CPU: the packets
// and bytes of all drains must add up to exactly the runs, none lost, none
// twice. In "one-flow", every worker counts into the same flow, many
// packets per run, and the drains follow each other closely, so that
// reads often find a program between its byte and packet increments.
// On x86 (whose stores are seen in order; the programs add bytes first),
// what was handed out of a flow so far is checked after every drain:
// never a packet without its bytes.
func TestSwapConcurrent(t *testing.T) {
	for _, mode := range drainModes {
		t.Run(mode.name, func(t *testing.T) { testSwapConcurrent(t, mode, false) })
		t.Run(mode.name+"/one-flow", func(t *testing.T) { testSwapConcurrent(t, mode, true) })
	}
}

func testSwapConcurrent(t *testing.T, mode drainMode, oneFlow bool) {
	f := newTestFetcher(t, 1024)
	f.maxAge = mode.maxAge
	workers := max(runtime.NumCPU(), 2)
	const payload, pktBytes = 50, 20 + 8 + 50
	wantDrains, repeat, minTime := 50, uint64(1), time.Duration(0)
	if oneFlow {
		wantDrains, repeat, minTime = 1<<20, 200, 2*time.Second
	}
	port := func(w int) uint16 {
		if oneFlow {
			return 100
		}
		return uint16(100 + w)
	}
	frames := make([][]byte, workers)
	for w := range workers {
		frames[w] = udpFlow(port(w), payload).frame()
	}

	var wg sync.WaitGroup
	runs := make([]uint64, workers)
	// A run interrupted by a signal is run again from the start
	// (ebpf.RunOptions.Reset): up to repeat packets more than runs.
	retries := make([]uint64, workers)
	errs := make([]error, workers)
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prog := f.progs.IngressFlowParse
			if w%2 == 1 {
				prog = f.progs.EgressFlowParse
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				//lint:ignore SA1019 Reset is how a test learns that the kernel ran a Repeat batch again (EINTR), which the packet bound needs.
				opts := &ebpf.RunOptions{Data: frames[w], Repeat: uint32(repeat), Reset: func() { retries[w]++ }}
				if _, err := prog.Run(opts); err != nil {
					errs[w] = err
					return
				}
				runs[w] += repeat
			}
		}()
	}

	type sums struct{ packets, bytes uint64 }
	perFlow := map[uint16]sums{}
	bad, drains := 0, 0
	collect := func() {
		drains++
		for id, m := range mode.drain(t, f) {
			s := perFlow[id.SrcPort]
			s.packets += m.Packets
			s.bytes += m.Bytes
			perFlow[id.SrcPort] = s
			// x86 sees the programs' stores in order (bytes, then
			// packets) and the kernel copies packets before bytes:
			// bytes may be read ahead of their packets (copied
			// later), never behind.
			if runtime.GOARCH == "amd64" && s.bytes < s.packets*pktBytes {
				if bad++; bad <= 5 {
					t.Errorf("drain %d, %v: %d bytes for %d packets handed out so far", drains, id, s.bytes, s.packets)
				}
			}
		}
	}
	begin := time.Now()
	for i := 0; i < wantDrains && (i < 50 || time.Since(begin) < minTime); i++ {
		collect()
		if !oneFlow {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	collect()
	if bad > 0 {
		t.Errorf("%d of %d drains handed out bytes inconsistent with their packets", bad, drains)
	}
	want, extra := map[uint16]uint64{}, map[uint16]uint64{}
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("worker %d: run: %v", w, errs[w])
		}
		want[port(w)] += runs[w]
		extra[port(w)] += retries[w] * repeat
	}
	for p, n := range want {
		got := perFlow[p]
		if got.packets < n || got.packets > n+extra[p] || n == 0 {
			t.Errorf("flow %d: %d packets over %d drains, want %d (up to %d more for runs interrupted and run again)", p, got.packets, drains, n, extra[p])
		}
		if got.bytes != got.packets*pktBytes {
			t.Errorf("flow %d: %d bytes for %d packets over %d drains, want %d", p, got.bytes, got.packets, drains, got.packets*pktBytes)
		}
	}
	t.Logf("%d workers, %v packets (%v runs interrupted), %d drains", workers, runs, retries, drains)
}

// TestDrainIntervals checks that a drain's first-packet time and TCP flags
// are those of the packets since the previous drain only, while the flow
// stays in the same kernel map: the exporter starts a new record from them
// after an active timeout.
func TestDrainIntervals(t *testing.T) {
	for _, mode := range drainModes {
		t.Run(mode.name, func(t *testing.T) {
			f := newTestFetcher(t, 64, WithPreciseTimestamps(true))
			f.maxAge = mode.maxAge
			syn := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP}, tcp(1, 2, tcpSYN, nil, nil))
			ack := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP}, tcp(1, 2, tcpACK, nil, nil))

			runFrame(t, f.progs.IngressFlowParse, syn.frame(), nil)
			first := mode.drain(t, f)
			time.Sleep(20 * time.Millisecond)
			before := monoNow(t)
			runFrame(t, f.progs.IngressFlowParse, ack.frame(), nil)
			runFrame(t, f.progs.IngressFlowParse, ack.frame(), nil)
			after := monoNow(t)
			second := mode.drain(t, f)
			if len(first) != 1 || len(second) != 1 {
				t.Fatalf("drains: %v then %v, want one flow each", first, second)
			}
			for _, m := range first {
				if m.Packets != 1 || m.Flags != tcpSYN {
					t.Errorf("first drain: %+v, want 1 packet with SYN", m)
				}
			}
			for _, m := range second {
				if m.Packets != 2 || m.Flags != tcpACK {
					t.Errorf("second drain: %d packets, flags %#x; want 2 and ACK only", m.Packets, m.Flags)
				}
				if m.StartMonoTimeTs < before || m.EndMonoTimeTs > after || m.StartMonoTimeTs > m.EndMonoTimeTs {
					t.Errorf("second drain: times [%d, %d], want within its packets' [%d, %d]",
						m.StartMonoTimeTs, m.EndMonoTimeTs, before, after)
				}
			}
		})
	}
}

// TestDrainAfterDetach: the drain after a detach (the daemon's last one)
// waits for programs that may still be running, once; other drains read
// the live map without waiting.
func TestDrainAfterDetach(t *testing.T) {
	e := newVethEnv(t)
	f := newTestFetcher(t, 64, WithAttachMode(AttachTCX))
	if err := e.A.Do(func() error { return f.Attach(e.ifA, e.NameA) }); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	drain(t, f)
	if f.waits != 0 {
		t.Fatalf("a drain while attached waited %d times, want 0", f.waits)
	}
	if err := f.Detach(e.ifA); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	drain(t, f)
	drain(t, f)
	if f.waits != 1 {
		t.Errorf("two drains after a detach waited %d times, want 1", f.waits)
	}
}
