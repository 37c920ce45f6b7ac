package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/templates"
)

// streamRecorder accepts one TCP connection and keeps every byte of it.
type streamRecorder struct {
	ln   net.Listener
	done chan struct{}
	buf  bytes.Buffer
	err  error
}

func newStreamRecorder(t *testing.T, ln net.Listener) *streamRecorder {
	t.Helper()
	r := &streamRecorder{ln: ln, done: make(chan struct{})}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		defer close(r.done)
		conn, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, r.err = io.Copy(&r.buf, conn)
	}()
	return r
}

// wait returns the stream once the exporter has closed the connection.
func (r *streamRecorder) wait(t *testing.T, limit time.Duration) []byte {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(limit):
		t.Fatalf("stream not closed within %v", limit)
	}
	if r.err != nil {
		t.Fatalf("record stream: %v", r.err)
	}
	return r.buf.Bytes()
}

// ipfixSet is one set of an IPFIX message.
type ipfixSet struct {
	id   uint16
	body []byte
}

// splitIPFIX cuts a stream into messages (by their length field) and
// each message into sets, strictly.
func splitIPFIX(stream []byte) ([][]byte, [][]ipfixSet, error) {
	be := binary.BigEndian
	var msgs [][]byte
	var sets [][]ipfixSet
	for len(stream) > 0 {
		if len(stream) < 16 || be.Uint16(stream) != 10 {
			return nil, nil, fmt.Errorf("message %d: bad header % x", len(msgs), stream[:min(16, len(stream))])
		}
		n := int(be.Uint16(stream[2:]))
		if n < 16 || n > len(stream) {
			return nil, nil, fmt.Errorf("message %d: length %d, %d bytes left", len(msgs), n, len(stream))
		}
		msg := stream[:n]
		var ss []ipfixSet
		for rest := msg[16:]; len(rest) > 0; {
			if len(rest) < 4 {
				return nil, nil, fmt.Errorf("message %d: %d stray bytes", len(msgs), len(rest))
			}
			id, l := be.Uint16(rest), int(be.Uint16(rest[2:]))
			if l < 4 || l > len(rest) {
				return nil, nil, fmt.Errorf("message %d: set %d length %d, %d left", len(msgs), id, l, len(rest))
			}
			ss = append(ss, ipfixSet{id: id, body: rest[4:l]})
			rest = rest[l:]
		}
		msgs = append(msgs, msg)
		sets = append(sets, ss)
		stream = stream[n:]
	}
	return msgs, sets, nil
}

// templateIDs returns the IDs a template (2) or options template (3) set
// defines.
func templateIDs(s ipfixSet) []uint16 {
	be := binary.BigEndian
	var ids []uint16
	b := s.body
	for len(b) >= 4 {
		id, count := be.Uint16(b), int(be.Uint16(b[2:]))
		hdr := 4
		if s.id == 3 {
			hdr = 6
		}
		if id < 256 || len(b) < hdr {
			break // padding
		}
		b = b[hdr:]
		for range count {
			if len(b) < 4 {
				return ids
			}
			enterprise := be.Uint16(b)&0x8000 != 0
			b = b[4:]
			if enterprise {
				b = b[4:]
			}
		}
		ids = append(ids, id)
	}
	return ids
}

// TestPeerIPFIXDumpTCP records an IPFIX-over-TCP export (StreamTransport,
// templates sent on connect) byte for byte, checks that templates come
// before any data on the stream, and has libfixbuf's ipfixDump read it as
// an IPFIX file: no warning, every record.
func TestPeerIPFIXDumpTCP(t *testing.T) {
	testutil.RequireTool(t, "ipfixDump")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newStreamRecorder(t, ln)
	now := peerClock()
	flows := peerFlows(now)
	cs, es := exportStream(t, ln.Addr().String(), nil, now, flows, nil)
	if es.Records != uint64(len(flows)) || es.RecordsLost != 0 || cs.Transport.Lost != 0 {
		t.Fatalf("export: %+v, collector %+v", es, cs)
	}
	stream := rec.wait(t, 10*time.Second)

	msgs, sets, err := splitIPFIX(stream)
	if err != nil {
		t.Fatalf("stream of %d bytes: %v", len(stream), err)
	}
	if len(msgs) != int(es.Messages) {
		t.Errorf("stream holds %d messages, exporter sent %d", len(msgs), es.Messages)
	}
	// Templates first: the first set is the template set, and no data set
	// comes before its template.
	if len(sets) == 0 || len(sets[0]) == 0 || sets[0][0].id != 2 {
		t.Fatalf("stream does not start with a template set: %v", sets)
	}
	known := map[uint16]bool{}
	var dataSets int
	for i, ss := range sets {
		for _, s := range ss {
			switch {
			case s.id == 2 || s.id == 3:
				for _, id := range templateIDs(s) {
					known[id] = true
				}
			case s.id >= 256:
				dataSets++
				if !known[s.id] {
					t.Errorf("message %d: data set %d before its template", i, s.id)
				}
			default:
				t.Errorf("message %d: set ID %d", i, s.id)
			}
		}
	}
	for _, id := range []uint16{256, 257, 258, 259, 260, 261, 262} {
		if !known[id] {
			t.Errorf("template %d never sent", id)
		}
	}

	path := filepath.Join(t.TempDir(), "stream.ipfix")
	if err := os.WriteFile(path, stream, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("ipfixDump", "--in", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ipfixDump: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Errorf("ipfixDump stderr:\n%s", s)
	}
	warnings := regexp.MustCompile(`(?i)warn|error|unknown|illegal|malformed`).FindAllString(out, -1)
	if len(warnings) > 0 {
		t.Errorf("ipfixDump output has %d warnings: %v", len(warnings), warnings)
	}
	// 12 flows, 3 interfaces, one sampling and one reliability record.
	wantRecords := len(flows) + len(peerInterfaces) + 2
	if n := strings.Count(out, "--- data record"); n != wantRecords {
		t.Errorf("ipfixDump printed %d data records, want %d", n, wantRecords)
	}
	if n := strings.Count(out, "--- template record"); n != templates.NumTemplates {
		t.Errorf("ipfixDump printed %d template records, want %d", n, templates.NumTemplates)
	}
	if n := strings.Count(out, "--- options template record"); n != 3 {
		t.Errorf("ipfixDump printed %d options template records, want 3", n)
	}
	for _, want := range []string{"interfaceName", "veth-c1", "uplink to rack switch", "7000000123", "5000001", "2001:0db8:ffff::0002", "flowEndReason"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipfixDump output lacks %q", want)
		}
	}
	t.Logf("ipfixDump: %d messages, %d data sets, %d bytes; %d data records, 0 warnings", len(msgs), dataSets, len(stream), wantRecords)
	if t.Failed() {
		t.Logf("ipfixDump output:\n%s", out)
	}
}
