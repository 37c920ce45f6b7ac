package main

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/metrics"
	"github.com/hostflow/hostflow/templates"
)

// udpMessages receives the datagrams of a collector on 127.0.0.1.
func udpMessages(t *testing.T) (string, <-chan []byte) {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan []byte, 1024)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- append([]byte(nil), buf[:n]...)
		}
	}()
	return "ipfix+udp://" + c.LocalAddr().String(), ch
}

// freeTCPAddr returns an address of 127.0.0.1 nothing listens on now.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestNotSentPerCollector: each collector's reliability options record
// reports its own notSentFlowTotalCount (RFC 7011 section 4.3), not the sum
// over every collector: a healthy collector reports 0 while another one
// is down and drops, and the one that dropped reports its own drops when
// it is back.
func TestNotSentPerCollector(t *testing.T) {
	udpURL, udp := udpMessages(t)
	tcpAddr := freeTCPAddr(t)
	d := testDaemon(t, newFakeFetcher(t), "--collector", udpURL, "--collector", "ipfix+tcp://"+tcpAddr,
		"--collector-queue", "1", "--template-refresh", "1ms")
	defer func() { d.sinks.Close() }()
	healthy, down := d.sinks[0], d.sinks[1]

	flow := []exporter.Flow{{Packets: 1, Bytes: 60, Start: time.Now(), End: time.Now()}}
	// One batch at a time, each sent to the healthy collector before the
	// next: it loses nothing.
	var exported uint64
	export := func() {
		d.export(append(d.out[:0], flow...))
		exported++
		waitStats(t, healthy, func(s metrics.CollectorStats) bool { return s.Records == exported })
	}
	for deadline := time.Now().Add(20 * time.Second); down.stats().DroppedRecords == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the collector that is down never dropped: %+v", down.stats())
		}
		export()
	}
	// Messages to the healthy collector after the other one dropped: each
	// carries the options (refreshed every millisecond).
	for range 3 {
		export()
	}

	r := newIPFIXReader(templates.IENotSentFlowTotal)
	var seen int
	for n := len(udp); n > 0; n-- {
		vals, err := r.message(<-udp)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			seen++
			if v != 0 {
				t.Errorf("healthy collector: notSentFlowTotalCount %d, the other collector's losses", v)
			}
		}
	}
	t.Logf("%d reliability records at the healthy collector, down: %+v", seen, down.stats())
	if seen == 0 {
		t.Fatal("no reliability options record reached the healthy collector")
	}

	// The collector comes up: the first options on the new connection
	// count what this collector lost, and only that.
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r = newIPFIXReader(templates.IENotSentFlowTotal)
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[2:]))
		copy(msg, hdr[:])
		if _, err := io.ReadFull(conn, msg[16:]); err != nil {
			t.Fatal(err)
		}
		vals, err := r.message(msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(vals) == 0 {
			continue
		}
		st := down.stats()
		if want := st.DroppedRecords + st.RecordsLost; vals[0] != want {
			t.Errorf("collector back up: notSentFlowTotalCount %d, want its own losses %d", vals[0], want)
		}
		return
	}
}

// waitStats waits until cond holds on s's counters; the bound only guards
// against a hang.
func waitStats(t *testing.T, s *collectorSink, cond func(metrics.CollectorStats) bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(s.stats()); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened: %+v", s.name(), s.stats())
		}
	}
}

// TestCollectorStatsBatchLosses: the records of messages a batching UDP
// writer accepted and then lost leave records_total for
// records_lost_total, and notSentFlowTotalCount counts them.
func TestCollectorStatsBatchLosses(t *testing.T) {
	e := exporter.ExportStats{Messages: 10, Records: 100, SendErrors: 1, RecordsLost: 4}
	q := exporter.CollectorStats{DroppedRecords: 3, ExportWaitTimeouts: 2,
		Transport: exporter.TransportStats{Messages: 8, Lost: 3, RecordsLost: 7, Connected: true}}
	s := collectorStats("ipfix+udp://198.18.0.1:4739", e, q, true)
	if s.Records != 93 || s.RecordsLost != 11 || s.Messages != 8 || s.SendErrors != 3 || s.DroppedRecords != 3 || s.Stalls != 2 {
		t.Errorf("stats %+v, want 93 records sent, 11 lost, 8 messages, 3 send errors, 3 dropped, 2 stalls", s)
	}
	var l collectorLosses
	l.set(func() metrics.CollectorStats { return s })
	if got := l.counters(nil)().NotSentFlows; got != 14 {
		t.Errorf("notSentFlowTotalCount %d, want 14 (3 dropped + 11 lost)", got)
	}
}
