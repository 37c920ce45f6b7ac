package main

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
)

// padTestMax is the max_message_size of TestSinkGSOPadding: small, so
// that one export is many messages.
const padTestMax = 700

// padFlows are n flows of the IPv4 and IPv6 templates, TCP and UDP and
// ICMP, so that full messages of different templates differ in length.
func padFlows(n int) []exporter.Flow {
	now := time.Now()
	out := make([]exporter.Flow, n)
	for i := range out {
		k := exporter.FlowKey{Src: netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), Dst: netip.AddrFrom4([4]byte{198, 18, 1, 1}),
			Proto: []uint8{6, 17, 1}[i%3], SrcPort: uint16(1000 + i), DstPort: 53}
		if i%2 == 1 {
			k.Src, k.Dst = netip.MustParseAddr("fd00::"+strconv.Itoa(i)), netip.MustParseAddr("fd00::1:1")
		}
		out[i] = exporter.Flow{Key: k, Packets: 1, Bytes: 100, Start: now, End: now}
	}
	return out
}

// collectExport reads datagrams from c until the data records of the
// export (packetDeltaCount) number n, and returns the messages that
// hold them, in order.
func collectExport(t *testing.T, c net.PacketConn, n int) [][]byte {
	t.Helper()
	r := newIPFIXReader(2) // packetDeltaCount
	var msgs [][]byte
	got := 0
	buf := make([]byte, 65536)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for got < n {
		l, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%d of %d records: %v", got, n, err)
		}
		vals, err := r.message(buf[:l])
		if err != nil {
			t.Fatalf("message %d: %v", len(msgs), err)
		}
		if len(vals) > 0 {
			msgs = append(msgs, append([]byte(nil), buf[:l]...))
			got += len(vals)
		}
	}
	if got != n {
		t.Fatalf("%d records, want %d", got, n)
	}
	return msgs
}

// TestSinkGSOPadding: a collector URL with ?gso_padding=true gets IPFIX
// messages padded for GSO (every message of an export but the last is
// max_message_size bytes, and decodes to the same records); the same
// export to a collector without it is not padded. Changing the option
// rebuilds the collector's exporter on reload.
func TestSinkGSOPadding(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var lns [2]net.PacketConn
	for i := range lns {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		lns[i] = c
	}
	plain := "ipfix+udp://" + lns[0].LocalAddr().String()
	padded := "ipfix+udp://" + lns[1].LocalAddr().String() + "?gso_padding=true"
	sinks, _, _, err := buildSinks(sinkConfig(t, "--collector", plain, "--collector", padded,
		"--max-message-size", strconv.Itoa(padTestMax)), nil, sinkEnv{stdout: io.Discard, log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { sinks.Close() }()

	const n = 400
	if err := sinks.Export(padFlows(n)); err != nil {
		t.Fatal(err)
	}
	plainMsgs, paddedMsgs := collectExport(t, lns[0], n), collectExport(t, lns[1], n)

	if len(paddedMsgs) < 5 {
		t.Fatalf("%d messages: want an export of many", len(paddedMsgs))
	}
	for i, m := range paddedMsgs[:len(paddedMsgs)-1] {
		if len(m) != padTestMax {
			t.Errorf("gso_padding: message %d of %d is %d bytes, want %d", i, len(paddedMsgs), len(m), padTestMax)
		}
	}
	if l := len(paddedMsgs[len(paddedMsgs)-1]); l > padTestMax {
		t.Errorf("gso_padding: last message %d bytes, over %d", l, padTestMax)
	}
	short := 0
	for _, m := range plainMsgs[:len(plainMsgs)-1] {
		if len(m) < padTestMax {
			short++
		}
	}
	if short == 0 {
		t.Errorf("without gso_padding: every full message is %d bytes; the flows do not tell padding apart", padTestMax)
	}

	// A reload that turns the option on or off rebuilds that
	// collector only.
	for _, pair := range [][2]string{
		{plain + "?gso_padding=true", padded},
		{plain + "?gso_padding=true", "ipfix+udp://" + lns[1].LocalAddr().String()},
	} {
		next, unused, created, err := buildSinks(sinkConfig(t, "--collector", pair[0], "--collector", pair[1],
			"--max-message-size", strconv.Itoa(padTestMax)), sinks, sinkEnv{stdout: io.Discard, log: log})
		if err != nil {
			t.Fatal(err)
		}
		if len(created) != 1 || len(unused) != 1 || unused[0].url == created[0].url {
			t.Errorf("%v: created %v, unused %v: want one collector rebuilt", pair, urls(created), urls(unused))
		}
		unused.Close()
		sinks = next
	}
}
