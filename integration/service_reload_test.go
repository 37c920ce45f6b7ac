package integration

// hostflow as a service: SIGHUP reload without losing a count.

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadKeepsCounts runs hostflow from a config file, sends traffic,
// rewrites the file (other collector, new interface, other timeouts,
// sampling) and sends SIGHUP, sends more traffic, then an invalid file and
// SIGHUP again, and more traffic. The records both collectors received
// must add up exactly to the veth's counters, and each UDP flow must be in
// exactly one record with its exact count.
func TestReloadKeepsCounts(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "nfcapd", "nfdump", "sysctl")
	bin := buildHostflow(t)

	a := newNamespace(t, "hf-rl-a")
	b := newNamespace(t, "hf-rl-b")
	p := newVethPair(t, a, b, "hfr0", "hfr1")
	a.run(t, "ip", "link", "add", "hfd0", "type", "veth", "peer", "name", "hfd1")
	a.run(t, "ip", "link", "set", "hfd0", "up")
	a.run(t, "ip", "link", "set", "hfd1", "up")

	dir1, dir2 := t.TempDir(), t.TempDir()
	nf1 := start(t, a.command("nfcapd", "-w", dir1, "-b", "127.0.0.1", "-p", "4739", "-t", "3600", "-I", "one", "-v"))
	nf2 := start(t, a.command("nfcapd", "-w", dir2, "-b", "127.0.0.1", "-p", "4740", "-t", "3600", "-I", "two", "-v"))
	nf1.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	nf2.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
	a.waitQuiet(t, "hfr0", time.Second, 20*time.Second)

	conf := filepath.Join(t.TempDir(), "hostflow.yaml")
	common := "poll_interval: 200ms\nstate_dir: " + t.TempDir() + "\nmetrics:\n  listen: 127.0.0.1:9740\n" +
		"control_socket: " + filepath.Join(t.TempDir(), "ctl.sock") + "\n"
	svcConfig(t, conf, common+`
interfaces: [hfr0]
collectors: [ipfix+udp://127.0.0.1:4739]
active_timeout: 60s
idle_timeout: 15s
`)
	hf := start(t, a.command(bin, "--config", conf))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	before := a.stats(t, "hfr0")

	// Before the reload: to collector one.
	const n, size = 10, 100
	u1c, u1s := udpEcho(t, a, b, p.v4A, p.v4B, n, size)
	tcpTransfer(t, a, b, p.v4A, p.v4B, 100_000)

	svcConfig(t, conf, common+`
interfaces: [hfr0, hfd0]
collectors: [ipfix+udp://127.0.0.1:4740]
active_timeout: 30s
idle_timeout: 10s
sampling: 1
`)
	svcSignal(t, hf, syscall.SIGHUP)
	svcWaitCount(t, hf, "msg=reloaded", 1, 10*time.Second)

	// After it: to collector two.
	u2c, u2s := udpEcho(t, a, b, p.v6A, p.v6B, n, size)
	tcpTransfer(t, a, b, p.v6A, p.v6B, 100_000)

	// An invalid file changes nothing.
	svcConfig(t, conf, common+"interfaces: [hfr0]\ncollectors: [ipfix+udp://127.0.0.1:4739]\nidle_timout: 1s\n")
	svcSignal(t, hf, syscall.SIGHUP)
	svcWaitCount(t, hf, "msg=\"reload rejected", 1, 10*time.Second)
	if !strings.Contains(hf.output.String(), "idle_timout") {
		t.Errorf("the rejection does not name the unknown key:\n%s", hf.output.String())
	}
	u3c, u3s := udpEcho(t, a, b, p.v4A, p.v4B, n, size)

	m := svcScrape(t, a, "127.0.0.1:9740")
	for sample, want := range map[string]string{
		`hostflow_config_reloads_total{result="success"}`:                              "1",
		`hostflow_config_reloads_total{result="failure"}`:                              "1",
		`hostflow_interface_attached{interface="hfr0",mode="tcx"}`:                     "1",
		`hostflow_interface_attached{interface="hfd0",mode="tcx"}`:                     "1",
		`hostflow_collector_send_errors_total{collector="ipfix+udp://127.0.0.1:4740"}`: "0",
	} {
		if got := svcMetric(m, sample); got != want {
			t.Errorf("%s = %q, want %s", sample, got, want)
		}
	}
	if strings.Contains(m, `collector="ipfix+udp://127.0.0.1:4739"`) {
		t.Error("metrics still list the collector the reload removed")
	}
	if strings.Contains(hf.output.String(), "level=ERROR") && !strings.Contains(hf.output.String(), "reload rejected") {
		t.Errorf("errors logged:\n%s", hf.output.String())
	}

	after := a.waitQuiet(t, "hfr0", 500*time.Millisecond, 10*time.Second)
	hf.stop(t, 20*time.Second)
	a.waitUDPQueueEmpty(t, 4739, 10*time.Second) // nfcapd has read every datagram
	a.waitUDPQueueEmpty(t, 4740, 10*time.Second)
	nf1.stop(t, 10*time.Second)
	nf2.stop(t, 10*time.Second)

	recs1, recs2 := svcRecords(t, dir1), svcRecords(t, dir2)
	var egress, ingress linkStats
	idx := ifindex(t, a, "hfr0")
	for _, r := range append(append([]nfRecord(nil), recs1...), recs2...) {
		if r.Direction == nil {
			t.Fatalf("record without direction: %s", r)
		}
		// hfd0, attached by the reload, has traffic of its own (IPv6
		// link-up chatter): only hfr0's records meet its counters.
		if (*r.Direction == 1 && (r.Output == nil || *r.Output != idx)) ||
			(*r.Direction == 0 && (r.Input == nil || *r.Input != idx)) {
			continue
		}
		if *r.Direction == 1 {
			egress.TxPackets += r.Packets
			egress.TxBytes += r.Bytes
		} else {
			ingress.RxPackets += r.Packets
			ingress.RxBytes += r.Bytes
		}
	}
	txPk, txBy := after.TxPackets-before.TxPackets, after.TxBytes-before.TxBytes
	rxPk, rxBy := after.RxPackets-before.RxPackets, after.RxBytes-before.RxBytes
	t.Logf("collector one %d records, two %d; hfr0 sent %d frames, received %d; exported egress %d, ingress %d",
		len(recs1), len(recs2), txPk, rxPk, egress.TxPackets, ingress.RxPackets)
	if egress.TxPackets != txPk || egress.TxBytes != txBy-14*txPk {
		t.Errorf("egress: exported %d pkts %d bytes, hfr0 sent %d frames = %d IP bytes", egress.TxPackets, egress.TxBytes, txPk, txBy-14*txPk)
	}
	if ingress.RxPackets != rxPk || ingress.RxBytes != rxBy-14*rxPk {
		t.Errorf("ingress: exported %d pkts %d bytes, hfr0 received %d frames = %d IP bytes", ingress.RxPackets, ingress.RxBytes, rxPk, rxBy-14*rxPk)
	}

	for _, w := range []struct {
		name         string
		recs, others []nfRecord
		src          string
		sport, dport int
		bytes        uint64
	}{
		{"udp4 before the reload", recs1, recs2, p.v4A, u1c, u1s, n * (20 + 8 + size)},
		{"udp6 after the reload", recs2, recs1, p.v6A, u2c, u2s, n * (40 + 8 + size)},
		{"udp4 after the rejected reload", recs2, recs1, p.v4A, u3c, u3s, n * (20 + 8 + size)},
	} {
		match := func(recs []nfRecord) []nfRecord {
			var out []nfRecord
			for _, r := range recs {
				if r.Proto == 17 && r.SrcAddress == w.src && r.SrcPort == w.sport && r.DstPort == w.dport {
					out = append(out, r)
				}
			}
			return out
		}
		got, elsewhere := match(w.recs), match(w.others)
		if len(got) != 1 || len(elsewhere) != 0 {
			t.Errorf("%s: %d records at the expected collector, %d at the other: %v %v", w.name, len(got), len(elsewhere), got, elsewhere)
			continue
		}
		if got[0].Packets != n || got[0].Bytes != w.bytes {
			t.Errorf("%s: %d pkts %d bytes, sent %d pkts %d bytes", w.name, got[0].Packets, got[0].Bytes, n, w.bytes)
		}
	}
}
