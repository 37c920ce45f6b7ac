package metrics

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeSource struct {
	kernelErr error
}

func (fakeSource) Flows() FlowStats {
	return FlowStats{Packets: 10, Bytes: 1000, ObservedPackets: 12, ObservedBytes: 1300, Active: 3, DirectRecords: 2, DrainErrors: 1, ExportErrors: 4,
		RingBufReaderWaits: 8, EnrichDroppedRecords: 7, EnrichQueued: 2, UnmatchedFatePackets: 11, EarlySettledArrivals: 12, Exported: map[string]uint64{"idle": 5, "active": 1, "forced": 0}}
}

func (f fakeSource) Kernel() (KernelStats, error) {
	return KernelStats{MapFull: 1, RingBufFull: 2, NotIP: 3, Malformed: 4, NoMap: 5, SampledOut: 6, FateMalformed: 7}, f.kernelErr
}

func (fakeSource) Collectors() []CollectorStats {
	return []CollectorStats{{URL: "ipfix+udp://127.0.0.1:4739", Messages: 7, Records: 70, SendErrors: 1, RecordsLost: 9, Unreachable: 3, Stalls: 2}}
}

func (fakeSource) Interfaces() []InterfaceState {
	return []InterfaceState{{Name: "eth0", Mode: "tcx", Attached: true}, {Name: "eth1", Mode: "tcx"}}
}

func (fakeSource) Reloads() ReloadStats {
	return ReloadStats{Success: 2, Failure: 1, LastSuccess: time.Unix(1700000000, 0)}
}

const want = `
# HELP hostflow_build_info Always 1; labels say which build is running.
# TYPE hostflow_build_info gauge
hostflow_build_info{goversion="go1.x",version="1.2.3"} 1
# HELP hostflow_bytes_total IP bytes in exported flow records.
# TYPE hostflow_bytes_total counter
hostflow_bytes_total 1000
# HELP hostflow_collector_messages_total Messages sent to the collector.
# TYPE hostflow_collector_messages_total counter
hostflow_collector_messages_total{collector="ipfix+udp://127.0.0.1:4739"} 7
# HELP hostflow_collector_records_lost_total Flow records in messages that failed to send.
# TYPE hostflow_collector_records_lost_total counter
hostflow_collector_records_lost_total{collector="ipfix+udp://127.0.0.1:4739"} 9
# HELP hostflow_collector_records_total Flow records sent to the collector.
# TYPE hostflow_collector_records_total counter
hostflow_collector_records_total{collector="ipfix+udp://127.0.0.1:4739"} 70
# HELP hostflow_collector_send_errors_total Messages that failed to send.
# TYPE hostflow_collector_send_errors_total counter
hostflow_collector_send_errors_total{collector="ipfix+udp://127.0.0.1:4739"} 1
# HELP hostflow_collector_stalls_total Batches queued without waiting for the collector to hand a buffer back: after a wait of 50 ms in vain (the collector is stalled; its queue then fills without waits until it catches up), or because the waits of this second already took 100 ms (it is slower than flows end).
# TYPE hostflow_collector_stalls_total counter
hostflow_collector_stalls_total{collector="ipfix+udp://127.0.0.1:4739"} 2
# HELP hostflow_collector_unreachable_total ICMP errors (port unreachable: nothing listening) reported for earlier UDP datagrams to the collector. They cost no message: the datagram in hand is sent again.
# TYPE hostflow_collector_unreachable_total counter
hostflow_collector_unreachable_total{collector="ipfix+udp://127.0.0.1:4739"} 3
# HELP hostflow_config_last_reload_success_timestamp_seconds When the configuration was last loaded successfully.
# TYPE hostflow_config_last_reload_success_timestamp_seconds gauge
hostflow_config_last_reload_success_timestamp_seconds 1.7e+09
# HELP hostflow_config_reloads_total Configuration reloads (SIGHUP), by result.
# TYPE hostflow_config_reloads_total counter
hostflow_config_reloads_total{result="failure"} 1
hostflow_config_reloads_total{result="success"} 2
# HELP hostflow_drain_errors_total Failed reads of the kernel flow map or ring buffer.
# TYPE hostflow_drain_errors_total counter
hostflow_drain_errors_total 1
# HELP hostflow_enrich_dropped_records_total Flow records lost because the router mode's enrich queue was full (enrichment slower than flows end).
# TYPE hostflow_enrich_dropped_records_total counter
hostflow_enrich_dropped_records_total 7
# HELP hostflow_enrich_queued_batches Batches of flow records waiting for router mode's enrichment.
# TYPE hostflow_enrich_queued_batches gauge
hostflow_enrich_queued_batches 2
# HELP hostflow_export_errors_total Exports that failed on at least one collector.
# TYPE hostflow_export_errors_total counter
hostflow_export_errors_total 4
# HELP hostflow_fate_early_settled_arrivals_total Router mode: arrival keys settled before their hold because the fate bookkeeping held max_flows keys when a new one came (a flood of new flows): their fates read later count as unmatched.
# TYPE hostflow_fate_early_settled_arrivals_total counter
hostflow_fate_early_settled_arrivals_total 12
# HELP hostflow_fate_unmatched_packets_total Router mode: packets whose fate (forwarded, dropped) was counted with no arrival left to match it: read too long after their arrival, exported as consumed as well, or whose arrival was not counted.
# TYPE hostflow_fate_unmatched_packets_total counter
hostflow_fate_unmatched_packets_total 11
# HELP hostflow_flows_active Flows in the user-space cache.
# TYPE hostflow_flows_active gauge
hostflow_flows_active 3
# HELP hostflow_flows_exported_total Flow records exported, by flowEndReason.
# TYPE hostflow_flows_exported_total counter
hostflow_flows_exported_total{reason="active"} 1
hostflow_flows_exported_total{reason="forced"} 0
hostflow_flows_exported_total{reason="idle"} 5
# HELP hostflow_interface_attached 1 if the eBPF programs are attached to the selected interface, else 0.
# TYPE hostflow_interface_attached gauge
hostflow_interface_attached{interface="eth0",mode="tcx"} 1
hostflow_interface_attached{interface="eth1",mode="tcx"} 0
# HELP hostflow_kernel_fate_malformed_total Router mode: forwarded or dropped packets whose fate was not counted because their headers could not be read (their arrival is).
# TYPE hostflow_kernel_fate_malformed_total counter
hostflow_kernel_fate_malformed_total 7
# HELP hostflow_kernel_malformed_total Frames too short or broken to parse.
# TYPE hostflow_kernel_malformed_total counter
hostflow_kernel_malformed_total 4
# HELP hostflow_kernel_map_full_total Packets diverted to the ring buffer because the kernel flow map was full (not lost).
# TYPE hostflow_kernel_map_full_total counter
hostflow_kernel_map_full_total 1
# HELP hostflow_kernel_no_map_total Packets seen while no aggregation map was installed.
# TYPE hostflow_kernel_no_map_total counter
hostflow_kernel_no_map_total 5
# HELP hostflow_kernel_not_ip_total Frames without an IPv4 or IPv6 packet (ARP, LLDP, ...).
# TYPE hostflow_kernel_not_ip_total counter
hostflow_kernel_not_ip_total 3
# HELP hostflow_kernel_ringbuf_full_total Packets lost because the ring buffer was full.
# TYPE hostflow_kernel_ringbuf_full_total counter
hostflow_kernel_ringbuf_full_total 2
# HELP hostflow_kernel_sampled_out_total Packets skipped by sampling.
# TYPE hostflow_kernel_sampled_out_total counter
hostflow_kernel_sampled_out_total 6
# HELP hostflow_observed_bytes_total IP bytes the eBPF programs counted, read from the kernel by the polls: seen, not yet necessarily exported.
# TYPE hostflow_observed_bytes_total counter
hostflow_observed_bytes_total 1300
# HELP hostflow_observed_packets_total Packets the eBPF programs counted, read from the kernel by the polls: seen, not yet necessarily exported.
# TYPE hostflow_observed_packets_total counter
hostflow_observed_packets_total 12
# HELP hostflow_packets_total Packets in exported flow records.
# TYPE hostflow_packets_total counter
hostflow_packets_total 10
# HELP hostflow_ringbuf_reader_waits_total Times the ring-buffer reader found its queue to the flow cache full and waited (meanwhile the kernel counts what the ring buffer cannot hold).
# TYPE hostflow_ringbuf_reader_waits_total counter
hostflow_ringbuf_reader_waits_total 8
# HELP hostflow_ringbuf_records_total Packets read one by one from the ring buffer because the kernel map was full.
# TYPE hostflow_ringbuf_records_total counter
hostflow_ringbuf_records_total 2
`

func hostflowNames() []string {
	var names []string
	for _, l := range strings.Split(want, "\n") {
		if rest, ok := strings.CutPrefix(l, "# TYPE "); ok {
			names = append(names, strings.Fields(rest)[0])
		}
	}
	return names
}

func TestCollect(t *testing.T) {
	reg := NewRegistry(fakeSource{}, BuildInfo{Version: "1.2.3", GoVersion: "go1.x"})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), hostflowNames()...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestReadAtScrape: each scrape asks the source again.
func TestReadAtScrape(t *testing.T) {
	src := &countingSource{}
	reg := NewRegistry(src, BuildInfo{})
	for i := 1; i <= 3; i++ {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		if src.n != i {
			t.Fatalf("after %d scrapes the source was read %d times", i, src.n)
		}
	}
	want := "# HELP hostflow_packets_total Packets in exported flow records.\n# TYPE hostflow_packets_total counter\nhostflow_packets_total 4\n"
	if err := testutil.CollectAndCompare(collector{src: src}, strings.NewReader(want), "hostflow_packets_total"); err != nil {
		t.Error(err)
	}
}

type countingSource struct {
	fakeSource
	n int
}

func (c *countingSource) Flows() FlowStats { c.n++; return FlowStats{Packets: uint64(c.n)} }

// TestKernelError: a failed kernel read fails those metrics, not the
// scrape of the others.
func TestKernelError(t *testing.T) {
	reg := NewRegistry(fakeSource{kernelErr: errors.New("map gone")}, BuildInfo{})
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Errorf("gather error %v: want the kernel error", err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "hostflow_packets_total" {
			found = true
		}
	}
	if !found {
		t.Error("other metrics missing when the kernel read fails")
	}
}

func TestServer(t *testing.T) {
	reg := NewRegistry(fakeSource{}, BuildInfo{Version: "1.2.3"})
	srv, err := Listen("127.0.0.1:0", reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "hostflow_packets_total 10") ||
		!strings.Contains(string(body), "go_goroutines") || !strings.Contains(string(body), "process_") {
		t.Errorf("GET /metrics: %d\n%s", resp.StatusCode, body)
	}
	if _, err := Listen(srv.Addr().String(), reg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("listening twice on one port: no error")
	}
}

// TestServerPprof: /debug/pprof/ is served only when asked for.
func TestServerPprof(t *testing.T) {
	reg := NewRegistry(fakeSource{}, BuildInfo{Version: "1.2.3"})
	for _, on := range []bool{false, true} {
		srv, err := ListenWith("127.0.0.1:0", reg, slog.New(slog.DiscardHandler), ServerOptions{Pprof: on})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + srv.Addr().String() + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		served := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "heap profile")
		if served != on {
			t.Errorf("pprof %v: GET /debug/pprof/heap: %d, profile served %v", on, resp.StatusCode, served)
		}
	}
}
