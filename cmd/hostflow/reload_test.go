package main

import (
	"net"
	"testing"
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
