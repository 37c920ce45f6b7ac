package main

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// listenUDP is a collector on 127.0.0.1 that nobody reads: templates sent
// at build time go somewhere.
func listenUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return "ipfix+udp://" + c.LocalAddr().String()
}

// TestReloadSampling: the sampling rate the collectors' options records
// advertise changes only when the kernel's did. A reload whose new rate
// the fetcher refuses is rejected whole: the running exporters (built
// with the old rate) stay, and so does the configuration.
func TestReloadSampling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantErr bool
		want    int
	}{
		{name: "applied", want: 4},
		{name: "refused", err: errInjected, wantErr: true, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := listenUDP(t)
			f := newFakeFetcher(t)
			f.setSampling = tc.err
			d := testDaemon(t, f, "--collector", url)
			defer func() { d.sinks.Close() }()
			before := d.sinks[0]

			err := d.apply(sinkConfig(t, "--collector", url, "--sampling", "4"))
			if (err != nil) != tc.wantErr {
				t.Errorf("apply: %v, want error %v", err, tc.wantErr)
			}
			if d.cfg.Sampling != tc.want {
				t.Errorf("running sampling %d, want %d", d.cfg.Sampling, tc.want)
			}
			// The rate is built into a collector's options: same rate,
			// same exporter; a new rate, a new one.
			if rebuilt := d.sinks[0] != before; rebuilt != (tc.want != 0) {
				t.Errorf("exporter rebuilt: %v; kernel sampling now %d", rebuilt, tc.want)
			}
		})
	}
}

// TestReloadRemovesDeadCollectorAsync: removing a collector whose peer is
// gone (its Close waits for the drain timeout) does not hold the main loop:
// it drains the kernel map on its ticks while that Close is pending, and
// shutdown waits for the Close to end.
func TestReloadRemovesDeadCollectorAsync(t *testing.T) {
	f := newFakeFetcher(t)
	f.drained = make(chan struct{})
	d := testDaemon(t, f, "--poll-interval", "5ms")
	closing, release, closed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	dead := &fakeSink{onClose: func() {
		close(closing)
		select {
		case <-release:
		case <-time.After(10 * time.Second): // a guard: the test fails below
		}
		close(closed)
	}}
	d.sinks.Close()
	d.sinks = sinkSet{{key: "dead", url: "ipfix+tcp://198.18.0.1:4739", sink: dead}}
	d.args = []string{"--config", "/dev/null", "--poll-interval", "5ms"} // the reload removes it

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, hup) }()
	hup <- syscall.SIGHUP
	<-closing
	select {
	case <-f.drained:
	case <-closed:
		t.Fatal("the main loop did not tick while a removed collector was closing")
	}
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("loop: %v", err)
	}
	select {
	case <-closed:
	default:
		t.Error("shutdown returned before the removed collector was closed")
	}
	if d.reloads.Success != 1 {
		t.Errorf("reloads %+v, want one success", d.reloads)
	}
}
