package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descPackets = prometheus.NewDesc("hostflow_packets_total",
		"Packets in exported flow records.", nil, nil)
	descBytes = prometheus.NewDesc("hostflow_bytes_total",
		"IP bytes in exported flow records.", nil, nil)
	descObservedPackets = prometheus.NewDesc("hostflow_observed_packets_total",
		"Packets the eBPF programs counted, read from the kernel by the polls: seen, not yet necessarily exported.", nil, nil)
	descObservedBytes = prometheus.NewDesc("hostflow_observed_bytes_total",
		"IP bytes the eBPF programs counted, read from the kernel by the polls: seen, not yet necessarily exported.", nil, nil)
	descActive = prometheus.NewDesc("hostflow_flows_active",
		"Flows in the user-space cache.", nil, nil)
	descExported = prometheus.NewDesc("hostflow_flows_exported_total",
		"Flow records exported, by flowEndReason.", []string{"reason"}, nil)
	descDirect = prometheus.NewDesc("hostflow_ringbuf_records_total",
		"Packets read one by one from the ring buffer because the kernel map was full.", nil, nil)
	descDrainErrors = prometheus.NewDesc("hostflow_drain_errors_total",
		"Failed reads of the kernel flow map or ring buffer.", nil, nil)
	descExportErrors = prometheus.NewDesc("hostflow_export_errors_total",
		"Exports that failed on at least one collector.", nil, nil)
	descReaderWaits = prometheus.NewDesc("hostflow_ringbuf_reader_waits_total",
		"Times the ring-buffer reader found its queue to the flow cache full and waited (meanwhile the kernel counts what the ring buffer cannot hold).", nil, nil)
	descEnrichDropped = prometheus.NewDesc("hostflow_enrich_dropped_records_total",
		"Flow records lost because the router mode's enrich queue was full (enrichment slower than flows end).", nil, nil)
	descEnrichQueued = prometheus.NewDesc("hostflow_enrich_queued_batches",
		"Batches of flow records waiting for router mode's enrichment.", nil, nil)
	descUnmatchedFates = prometheus.NewDesc("hostflow_fate_unmatched_packets_total",
		"Router mode: packets whose fate (forwarded, dropped) was counted with no arrival left to match it: read too long after their arrival, exported as consumed as well, or whose arrival was not counted.", nil, nil)

	descEarlySettled = prometheus.NewDesc("hostflow_fate_early_settled_arrivals_total",
		"Router mode: arrival keys settled before their hold because the fate bookkeeping held max_flows keys when a new one came (a flood of new flows): their fates read later count as unmatched.", nil, nil)

	descKernel = map[string]*prometheus.Desc{
		"map_full":     prometheus.NewDesc("hostflow_kernel_map_full_total", "Packets diverted to the ring buffer because the kernel flow map was full (not lost).", nil, nil),
		"ringbuf_full": prometheus.NewDesc("hostflow_kernel_ringbuf_full_total", "Packets lost because the ring buffer was full.", nil, nil),
		"not_ip":       prometheus.NewDesc("hostflow_kernel_not_ip_total", "Frames without an IPv4 or IPv6 packet (ARP, LLDP, ...).", nil, nil),
		"malformed":    prometheus.NewDesc("hostflow_kernel_malformed_total", "Frames too short or broken to parse.", nil, nil),
		"no_map":       prometheus.NewDesc("hostflow_kernel_no_map_total", "Packets seen while no aggregation map was installed.", nil, nil),
		"sampled_out":  prometheus.NewDesc("hostflow_kernel_sampled_out_total", "Packets skipped by sampling.", nil, nil),
		"fate_malformed": prometheus.NewDesc("hostflow_kernel_fate_malformed_total",
			"Router mode: forwarded or dropped packets whose fate was not counted because their headers could not be read (their arrival is).", nil, nil),
	}

	descMessages = prometheus.NewDesc("hostflow_collector_messages_total",
		"Messages sent to the collector.", []string{"collector"}, nil)
	descRecords = prometheus.NewDesc("hostflow_collector_records_total",
		"Flow records sent to the collector.", []string{"collector"}, nil)
	descSendErrors = prometheus.NewDesc("hostflow_collector_send_errors_total",
		"Messages that failed to send.", []string{"collector"}, nil)
	descRecordsLost = prometheus.NewDesc("hostflow_collector_records_lost_total",
		"Flow records in messages that failed to send.", []string{"collector"}, nil)
	descDropped = prometheus.NewDesc("hostflow_collector_dropped_records_total",
		"Flow records dropped because the collector's queue was full.", []string{"collector"}, nil)
	descReconnects = prometheus.NewDesc("hostflow_collector_reconnects_total",
		"New TCP/TLS connections to the collector after the first.", []string{"collector"}, nil)

	descStalls = prometheus.NewDesc("hostflow_collector_stalls_total",
		"Batches queued without waiting for the collector to hand a buffer back: after a wait of 50 ms in vain (the collector is stalled; its queue then fills without waits until it catches up), or because the waits of this second already took 100 ms (it is slower than flows end).", []string{"collector"}, nil)

	descUnreachable = prometheus.NewDesc("hostflow_collector_unreachable_total",
		"ICMP errors (port unreachable: nothing listening) reported for earlier UDP datagrams to the collector. They cost no message: the datagram in hand is sent again.", []string{"collector"}, nil)

	descAttached = prometheus.NewDesc("hostflow_interface_attached",
		"1 if the eBPF programs are attached to the selected interface, else 0.", []string{"interface", "mode"}, nil)

	descReloads = prometheus.NewDesc("hostflow_config_reloads_total",
		"Configuration reloads (SIGHUP), by result.", []string{"result"}, nil)
	descLastReload = prometheus.NewDesc("hostflow_config_last_reload_success_timestamp_seconds",
		"When the configuration was last loaded successfully.", nil, nil)
)

// kernelOrder fixes the order kernel counters are collected in.
var kernelOrder = []string{"map_full", "ringbuf_full", "not_ip", "malformed", "no_map", "sampled_out", "fate_malformed"}

// collector reads a Source at scrape time.
type collector struct {
	src Source
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descObservedPackets, descObservedBytes, descActive, descExported, descDirect,
		descDrainErrors, descExportErrors, descReaderWaits, descEnrichDropped, descEnrichQueued, descUnmatchedFates, descEarlySettled, descMessages, descRecords, descSendErrors, descRecordsLost,
		descDropped, descReconnects, descStalls, descUnreachable, descAttached, descReloads, descLastReload} {
		ch <- d
	}
	for _, k := range kernelOrder {
		ch <- descKernel[k]
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	f := c.src.Flows()
	counter(descPackets, f.Packets)
	counter(descBytes, f.Bytes)
	counter(descObservedPackets, f.ObservedPackets)
	counter(descObservedBytes, f.ObservedBytes)
	gauge(descActive, float64(f.Active))
	reasons := make([]string, 0, len(f.Exported))
	for r := range f.Exported {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		counter(descExported, f.Exported[r], r)
	}
	counter(descDirect, f.DirectRecords)
	counter(descDrainErrors, f.DrainErrors)
	counter(descExportErrors, f.ExportErrors)
	counter(descReaderWaits, f.RingBufReaderWaits)
	counter(descEnrichDropped, f.EnrichDroppedRecords)
	gauge(descEnrichQueued, float64(f.EnrichQueued))
	counter(descUnmatchedFates, f.UnmatchedFatePackets)
	counter(descEarlySettled, f.EarlySettledArrivals)

	if k, err := c.src.Kernel(); err != nil {
		for _, name := range kernelOrder {
			ch <- prometheus.NewInvalidMetric(descKernel[name], err)
		}
	} else {
		vals := map[string]uint64{"map_full": k.MapFull, "ringbuf_full": k.RingBufFull, "not_ip": k.NotIP,
			"malformed": k.Malformed, "no_map": k.NoMap, "sampled_out": k.SampledOut, "fate_malformed": k.FateMalformed}
		for _, name := range kernelOrder {
			counter(descKernel[name], vals[name])
		}
	}

	for _, s := range c.src.Collectors() {
		counter(descMessages, s.Messages, s.URL)
		counter(descRecords, s.Records, s.URL)
		counter(descSendErrors, s.SendErrors, s.URL)
		counter(descRecordsLost, s.RecordsLost, s.URL)
		counter(descDropped, s.DroppedRecords, s.URL)
		counter(descReconnects, s.Reconnects, s.URL)
		counter(descStalls, s.Stalls, s.URL)
		counter(descUnreachable, s.Unreachable, s.URL)
	}

	for _, i := range c.src.Interfaces() {
		v := 0.0
		if i.Attached {
			v = 1
		}
		gauge(descAttached, v, i.Name, i.Mode)
	}

	r := c.src.Reloads()
	counter(descReloads, r.Success, "success")
	counter(descReloads, r.Failure, "failure")
	if !r.LastSuccess.IsZero() {
		gauge(descLastReload, float64(r.LastSuccess.UnixNano())/1e9)
	}
}
