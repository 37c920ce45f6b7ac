package main

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/exporter"
)

// ipfixStream is a TCP collector that frames IPFIX messages by their
// length field and keeps, per connection, the set IDs of every message.
type ipfixStream struct {
	ln    net.Listener
	mu    sync.Mutex
	conns [][][]uint16 // connection, message, set IDs
	wg    sync.WaitGroup
}

func newIPFIXStream(t *testing.T) *ipfixStream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &ipfixStream{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nil)
			i := len(s.conns) - 1
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.read(c, i)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *ipfixStream) read(c net.Conn, i int) {
	for {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(h[2:]))
		copy(msg, h[:])
		if _, err := io.ReadFull(c, msg[16:]); err != nil {
			return
		}
		var ids []uint16
		for off := 16; off+4 <= len(msg); {
			ids = append(ids, binary.BigEndian.Uint16(msg[off:]))
			n := int(binary.BigEndian.Uint16(msg[off+2:]))
			if n < 4 {
				break
			}
			off += n
		}
		s.mu.Lock()
		s.conns[i] = append(s.conns[i], ids)
		s.mu.Unlock()
	}
}

// templateSets counts the template sets (set ID 2) each connection got.
func (s *ipfixStream) templateSets() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, len(s.conns))
	for i, msgs := range s.conns {
		for _, ids := range msgs {
			for _, id := range ids {
				if id == 2 {
					out[i]++
				}
			}
		}
	}
	return out
}

func (s *ipfixStream) messages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.conns {
		n += len(m)
	}
	return n
}

func streamFlows(n int) []exporter.Flow {
	now := time.Now()
	out := make([]exporter.Flow, n)
	for i := range out {
		k := exporter.FlowKey{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
			Proto: 17, SrcPort: uint16(1000 + i), DstPort: 53}
		out[i] = exporter.Flow{Key: k, Packets: 1, Bytes: 100, Start: now, End: now}
	}
	return out
}

// TestStreamSendsTemplatesOnce: over TCP, templates go once per
// connection (RFC 7011 section 8), whatever template_refresh and
// template_refresh_messages say: they are for UDP.
func TestStreamSendsTemplatesOnce(t *testing.T) {
	srv := newIPFIXStream(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := sinkConfig(t, "--collector", "ipfix+tcp://"+srv.ln.Addr().String(),
		"--template-refresh", "1s", "--template-refresh-messages", "1")
	c, err := newCollectorSink(cfg, cfg.Collectors[0], sinkEnv{log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if i == 3 {
			time.Sleep(1100 * time.Millisecond) // past template_refresh
		}
		// 100 flows: several messages per export.
		if err := c.sink.Export(streamFlows(100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.sink.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.messages() < 12 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.messages(); n < 12 {
		t.Fatalf("collector got %d messages, want at least 12", n)
	}
	if got := srv.templateSets(); len(got) != 1 || got[0] != 1 {
		t.Errorf("template sets per connection: %v, want [1]", got)
	}
}
