package integration

// Load tests: the hostflow daemon under the highest packet rate trafgen
// reaches on a veth pair, proving that no packet goes uncounted.
//
// Namespace A (hf-load-a-*) runs trafgen on hfl0; namespace B runs hostflow
// on hfl1, the receiving end, on both hooks. trafgen bypasses the qdisc and
// so the TC egress hook of hfl0: the receiving end's ingress is where every
// frame is seen. The exactness checks compare what the daemon exported with
// hfl1's own counters; rates are logged, never asserted.
//
//	go test -count=1 -run TestLoad -v ./integration/

import (
	"testing"
	"time"
)

const (
	// loadProcs is trafgen's process count: one per core of the 2-core
	// machines this runs on; trafgen caps it at the online CPUs anyway.
	loadProcs = 2
	// loadMaxPPS bounds every run's packet count: no machine this runs
	// on sends 60-byte frames faster than this into a veth.
	loadMaxPPS = 3_000_000
)

// TestLoad measures the generator without hostflow, then with the daemon
// (zero silent loss: exported == counted by the interface), then floods the
// kernel map with more flows per poll interval than it holds (exported +
// counted drops == counted by the interface).
func TestLoad(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "trafgen")
	bin := buildHostflow(t)

	a := newNamespace(t, "hf-load-a")
	b := newNamespace(t, "hf-load-b")
	newVethPair(t, a, b, "hfl0", "hfl1")
	// No IPv6 on the link: nothing but trafgen's frames crosses it, so
	// no stray packet can fall between attaching and the first reading.
	a.run(t, "sysctl", "-qw", "net.ipv6.conf.hfl0.disable_ipv6=1")
	b.run(t, "sysctl", "-qw", "net.ipv6.conf.hfl1.disable_ipv6=1")
	cfg := writeTrafgenConfig(t)
	b.waitQuiet(t, "hfl1", time.Second, 20*time.Second)

	gen := func(d time.Duration) trafgenRun {
		t.Helper()
		return runTrafgen(t, a, "hfl0", cfg, loadProcs, uint64(d.Seconds()*loadMaxPPS), d, b, "hfl1")
	}

	var baseline trafgenRun
	t.Run("baseline", func(t *testing.T) {
		baseline = gen(4 * time.Second)
		t.Logf("WITHOUT hostflow: %s", baseline)
	})

	t.Run("zero-loss", func(t *testing.T) {
		// The kernel map holds every flow of a poll interval.
		run := loadRun(t, a, b, bin, gen, 10*time.Second, "--kernel-map-size", "131072")
		r, k := run.result, run.result.stopped
		t.Logf("WITH hostflow: %s", run.gen)
		if baseline.steadyPPS > 0 {
			t.Logf("rate with hostflow / without: %.2f (received pps while sending %.0f vs %.0f)", run.gen.steadyPPS/baseline.steadyPPS, run.gen.steadyPPS, baseline.steadyPPS)
		}
		if k["kernel_ringbuf_full"] != 0 {
			t.Errorf("kernel_ringbuf_full %d: packets lost with a map large enough for every flow", k["kernel_ringbuf_full"])
		}
		if got, want := r.ingress.RxPackets, run.delta.RxPackets; got != want {
			t.Errorf("ingress: exported %d packets, hfl1 received %d (difference %d)", got, want, int64(got)-int64(want))
		}
		if got, want := r.ingress.RxBytes, run.delta.RxBytes-14*run.delta.RxPackets; got != want {
			t.Errorf("ingress: exported %d IP bytes, hfl1 received %d", got, want)
		}
		if got, want := r.egress.TxPackets, run.delta.TxPackets; got != want {
			t.Errorf("egress: exported %d packets, hfl1 sent %d", got, want)
		}
		// Each trafgen process cycles through every flow in order.
		if run.gen.rx >= 3*loadProcs*loadFlows && r.distinctUDP != loadFlows {
			t.Errorf("exported %d distinct UDP flows, trafgen cycled through %d", r.distinctUDP, loadFlows)
		}
	})

	t.Run("map-flood", func(t *testing.T) {
		// 100,608 flows per 1 s poll interval into a 4096-entry map:
		// most packets go through the ring buffer one by one, and what
		// it cannot hold is counted.
		run := loadRun(t, a, b, bin, gen, 6*time.Second, "--kernel-map-size", "4096")
		r, k := run.result, run.result.stopped
		t.Logf("WITH hostflow, map flood: %s", run.gen)
		if k["kernel_map_full"] == 0 {
			t.Errorf("kernel_map_full 0: the flood did not overflow the 4096-entry map")
		}
		if got, want := r.ingress.RxPackets+k["kernel_ringbuf_full"], run.delta.RxPackets; got != want {
			t.Errorf("exported %d + ring buffer full %d = %d, hfl1 received %d (difference %d)",
				r.ingress.RxPackets, k["kernel_ringbuf_full"], got, want, int64(got)-int64(want))
		}
		if got, want := k["direct_records"], k["kernel_map_full"]-k["kernel_ringbuf_full"]; got != want {
			t.Errorf("direct_records %d, want kernel_map_full - kernel_ringbuf_full = %d", got, want)
		}
		if got, want := r.egress.TxPackets, run.delta.TxPackets; got != want {
			t.Errorf("egress: exported %d packets, hfl1 sent %d", got, want)
		}
	})

	// Other work on the machine moves the rates: a second reading without
	// hostflow brackets the runs with it.
	t.Run("baseline-after", func(t *testing.T) {
		r := gen(3 * time.Second)
		t.Logf("WITHOUT hostflow (again): %s", r)
		if baseline.steadyPPS > 0 {
			t.Logf("received pps while sending without hostflow: %.0f before, %.0f after", baseline.steadyPPS, r.steadyPPS)
		}
	})
}

// loadOutcome is one daemon run under load.
type loadOutcome struct {
	gen    trafgenRun
	delta  linkStats // hfl1's counters from before the load to after it
	result daemonResult
}

// loadRun starts the daemon on hfl1 in b, waits for a quiet link, runs the
// generator for d, waits for quiet again, stops the daemon and checks what
// must hold in every run: no drain, export, parse or decode error.
func loadRun(t *testing.T, a, b *namespace, bin string, gen func(time.Duration) trafgenRun, d time.Duration, extra ...string) loadOutcome {
	t.Helper()
	args := daemonArgs(t, append([]string{"--interfaces", "hfl1", "--direction", "both", "--poll-interval", "1s",
		"--active-timeout", "60s", "--idle-timeout", "60s"}, extra...)...)
	dm := startDaemon(t, b, bin, args...)
	before := b.waitQuiet(t, "hfl1", 500*time.Millisecond, 20*time.Second)
	g := gen(d)
	after := b.waitQuiet(t, "hfl1", 500*time.Millisecond, 20*time.Second)
	res := dm.stop(t, 60*time.Second)
	delta := linkStats{
		RxPackets: after.RxPackets - before.RxPackets, RxBytes: after.RxBytes - before.RxBytes,
		TxPackets: after.TxPackets - before.TxPackets, TxBytes: after.TxBytes - before.TxBytes,
	}
	k := res.stopped
	t.Logf("hfl1 counted rx %d tx %d; exported ingress %d pkts %d bytes, egress %d pkts in %d flow records (%d distinct UDP test flows); "+
		"direct_records %d kernel_map_full %d kernel_ringbuf_full %d kernel_not_ip %d kernel_malformed %d; final drain+export took %v",
		delta.RxPackets, delta.TxPackets, res.ingress.RxPackets, res.ingress.RxBytes, res.egress.TxPackets, res.flows, res.distinctUDP,
		k["direct_records"], k["kernel_map_full"], k["kernel_ringbuf_full"], k["kernel_not_ip"], k["kernel_malformed"], res.stopTime.Round(time.Millisecond))
	for _, c := range []string{"drain_errors", "export_errors", "kernel_not_ip", "kernel_malformed"} {
		if k[c] != 0 {
			t.Errorf("%s %d, want 0", c, k[c])
		}
	}
	// The daemon's own packet count, where its stopped line has one.
	if n, ok := k["packets"]; ok && n != res.ingress.RxPackets+res.egress.TxPackets {
		t.Errorf("stopped line says packets=%d, the JSON lines sum to %d", n, res.ingress.RxPackets+res.egress.TxPackets)
	}
	if delta.RxPackets == 0 {
		t.Fatalf("hfl1 received nothing: trafgen sent no frame")
	}
	return loadOutcome{gen: g, delta: delta, result: res}
}
