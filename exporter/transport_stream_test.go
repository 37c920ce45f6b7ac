package exporter

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

// With no collector, the first write fails dialing and the next ones fail
// at once, backing off, with the dial error inside.
func TestStreamBackoffFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tr := newStream(t, StreamConfig{Address: addr, Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
	err = tr.WriteMessage(testMsg(1, 64))
	var ce *ConnError
	if !errors.As(err, &ce) || ce.Op != "dial" {
		t.Fatalf("first write: %v, want a dial error", err)
	}
	for i := 0; i < 100; i++ {
		err = tr.WriteMessage(testMsg(1, 64))
		if !errors.Is(err, ErrBackoff) || !errors.As(err, &ce) {
			t.Fatalf("write while backing off: %v", err)
		}
	}
	var be *BackoffError
	if !errors.As(err, &be) || be.Wait <= 0 || be.Wait > time.Hour {
		t.Errorf("backoff error %+v", be)
	}
	if st := tr.Stats(); st.Lost != 101 || st.Dials != 1 || st.DialErrors != 1 || st.Connected {
		t.Errorf("stats %+v", st)
	}
	// Close aborts a Connect waiting out the backoff.
	done := make(chan error, 1)
	go func() { done <- tr.Connect(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	tr.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("connect after close: %v", err)
		}
	case <-time.After(20 * time.Second): // a guard, not a speed check
		t.Fatal("close did not abort connect")
	}
	if err := tr.WriteMessage(testMsg(1, 64)); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// A collector that stops reading cannot hold a writer: the write times
// out, the message is lost and the connection dropped (a partial message
// would garble the stream).
func TestStreamWriteDeadline(t *testing.T) {
	srv := &msgServer{t: t, arrived: make(chan struct{}, 1), stop: make(chan struct{}), noRead: true}
	srv.listen("127.0.0.1:0")
	t.Cleanup(srv.kill)
	tr := newStream(t, StreamConfig{Address: srv.addr(), WriteTimeout: 50 * time.Millisecond})
	big := testMsg(1, 65535)
	var err error
	for i := 0; i < 2000 && err == nil; i++ { // ~128 MiB at most: far more than socket buffers
		err = tr.WriteMessage(big)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a write deadline error", err)
	}
	if st := tr.Stats(); st.Connected || st.Lost != 1 {
		t.Errorf("stats %+v: want disconnected, 1 lost", st)
	}
}

func TestNewStreamTransportConfig(t *testing.T) {
	for _, cfg := range []StreamConfig{
		{},
		{Address: "no-port"},
		{Address: "127.0.0.1:1", DialTimeout: -1},
		{Address: "127.0.0.1:1", Backoff: Backoff{Min: -1}},
		{Address: "127.0.0.1:1", TLS: &tls.Config{MaxVersion: tls.VersionTLS11}},
	} {
		if _, err := NewStreamTransport(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// UDP to IPv4 and IPv6 collectors: one message, one datagram.
func TestUDPTransport(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "udp6" {
				host = "::1"
			}
			l, err := net.ListenPacket(network, net.JoinHostPort(host, "0"))
			if err != nil {
				testutil.SkipOrFail(t, "no %s loopback: %v", network, err)
			}
			defer l.Close()
			u, err := DialUDP(l.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			var tr Transport = u
			if err := tr.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i := uint32(1); i <= 2; i++ {
				if err := tr.WriteMessage(testMsg(i, 200)); err != nil {
					t.Fatal(err)
				}
			}
			l.SetReadDeadline(time.Now().Add(20 * time.Second))
			buf := make([]byte, 2000)
			for i := uint32(1); i <= 2; i++ {
				n, _, err := l.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				if n != 200 || msgTag(buf[:n]) != i {
					t.Errorf("datagram %d: %d bytes, tag %d", i, n, msgTag(buf[:n]))
				}
			}
			if st := tr.Stats(); st.Messages != 2 || st.Bytes != 400 || !st.Connected {
				t.Errorf("stats %+v", st)
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tr.Close(); err != nil {
				t.Errorf("second close: %v", err)
			}
			if err := tr.WriteMessage(testMsg(3, 200)); !errors.Is(err, ErrClosed) {
				t.Errorf("write after close: %v", err)
			}
			if err := tr.Connect(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("connect after close: %v", err)
			}
			if st := tr.Stats(); st.Lost != 1 || st.Connected {
				t.Errorf("stats after close %+v", st)
			}
		})
	}
}

func TestConnErrorText(t *testing.T) {
	err := &ConnError{Op: "write", Addr: "[::1]:4739", Err: io.ErrClosedPipe}
	if got := err.Error(); !strings.Contains(got, "[::1]:4739 write") || !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("got %q", got)
	}
}
