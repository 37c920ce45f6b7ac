//go:build bench

package integration

// Memory of the hostflow daemon under load (issue 11): peak RSS with 100k
// active flows, and under a flood of 2 million distinct flows that the
// cache (max_flows) and the kernel map cannot hold. Built only with -tags
// bench, as the other benchmarks, so `go test ./...` never runs it: it
// runs about a minute.
//
//	go test -tags bench -count=1 -run TestLoadMemory -v ./integration/
//
// LOAD_MEMPROFILE_DIR=dir also saves a heap profile of each run there,
// taken from the daemon's /debug/pprof/heap once the load has passed
// (a daemon without metrics.pprof gives none), and a CPU profile of the
// daemon while trafgen sends. LOAD_HOSTFLOW_BIN=path
// measures that hostflow binary instead of building this tree's, to
// compare revisions (bench/memory.sh).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// floodFlows is the trafgen packet of the flood: like loadTrafgen, but the
// source port bytes cycle with periods 256 and 255 and the destination
// port's low byte with period 31, so the frames cycle through
// 256*255*31 = 2,023,680 distinct flows.
const (
	floodFlows   = 256 * 255 * 31
	floodTrafgen = `{
  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
  0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  198, 18, 0, 1,
  198, 18, 0, 2,
  dinc(0, 255), dinc(0, 254), 0x23, dinc(0x00, 0x1e), const16(26), const16(0),
  fill(0x00, 18)
}
`
)

// memoryBound is the most RSS the daemon may use with the default
// settings, whatever the number of flows: the Go runtime and the loaded
// objects, the cache's max_flows entries, and what one drain of a full
// kernel map and one batch of records in flight hold.
func memoryBound(maxFlows, kernelMap int) uint64 {
	const base = 24 << 20
	return base + uint64(maxFlows)*160 + uint64(kernelMap)*160
}

func TestLoadMemory(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "trafgen")
	bin := os.Getenv("LOAD_HOSTFLOW_BIN")
	if bin == "" {
		bin = buildHostflow(t)
	}

	a := newNamespace(t, "hf-mem-a")
	b := newNamespace(t, "hf-mem-b")
	newVethPair(t, a, b, "hfl0", "hfl1")
	a.run(t, "sysctl", "-qw", "net.ipv6.conf.hfl0.disable_ipv6=1")
	b.run(t, "sysctl", "-qw", "net.ipv6.conf.hfl1.disable_ipv6=1")
	b.run(t, "ip", "link", "set", "lo", "up")
	b.waitQuiet(t, "hfl1", time.Second, 20*time.Second)

	const maxFlows, kernelMap = 1 << 18, 1 << 17 // the defaults
	for _, tc := range []struct {
		name    string
		config  string
		flows   int
		packets int      // per flow
		args    []string // daemon arguments besides the defaults
		check   func(t *testing.T, r memRun)
	}{
		{name: "flows-100k", config: loadTrafgen, flows: loadFlows, packets: 30, check: func(t *testing.T, r memRun) {
			if got, want := r.res.ingress.RxPackets, r.delta.RxPackets; got != want {
				t.Errorf("exported %d packets, hfl1 received %d", got, want)
			}
			if r.res.distinctUDP != loadFlows {
				t.Errorf("exported %d distinct UDP flows, want %d", r.res.distinctUDP, loadFlows)
			}
		}},
		// The 100k flows exported as IPFIX over UDP to a collector in b,
		// as the comparison with softflowd does: the final flush goes
		// through the collector's queue.
		{name: "flows-100k-ipfix", config: loadTrafgen, flows: loadFlows, packets: 30,
			args: []string{"--collector", "ipfix+udp://127.0.0.1:4739"}, check: func(t *testing.T, r memRun) {
				if got, want := r.res.stopped["packets"], r.delta.RxPackets; got != want {
					t.Errorf("exported %d packets, hfl1 received %d", got, want)
				}
			}},
		{name: "flood-2M", config: floodTrafgen, flows: floodFlows, packets: 2, check: func(t *testing.T, r memRun) {
			k := r.res.stopped
			if got, want := r.res.ingress.RxPackets+k["kernel_ringbuf_full"], r.delta.RxPackets; got != want {
				t.Errorf("exported %d + ring buffer full %d = %d, hfl1 received %d", r.res.ingress.RxPackets, k["kernel_ringbuf_full"], got, want)
			}
			if k["kernel_map_full"] == 0 {
				t.Errorf("kernel_map_full 0: the flood did not overflow the kernel map")
			}
			if bound := memoryBound(maxFlows, kernelMap); r.res.maxRSS > bound {
				t.Errorf("peak RSS %.1f MB under the flood, bound for max_flows %d and kernel_map_size %d is %.1f MB",
					mb(r.res.maxRSS), maxFlows, kernelMap, mb(bound))
			}
		}},
		// The same flood exported as IPFIX over UDP to a collector in b,
		// through the collector's queue and encoder instead of JSON.
		{name: "flood-2M-ipfix", config: floodTrafgen, flows: floodFlows, packets: 2,
			args: []string{"--collector", "ipfix+udp://127.0.0.1:4739"}, check: func(t *testing.T, r memRun) {
				k := r.res.stopped
				if got, want := k["packets"]+k["kernel_ringbuf_full"], r.delta.RxPackets; got != want {
					t.Errorf("exported %d + ring buffer full %d = %d, hfl1 received %d", k["packets"], k["kernel_ringbuf_full"], got, want)
				}
				if bound := memoryBound(maxFlows, kernelMap); r.res.maxRSS > bound {
					t.Errorf("peak RSS %.1f MB under the flood, bound for max_flows %d and kernel_map_size %d is %.1f MB",
						mb(r.res.maxRSS), maxFlows, kernelMap, mb(bound))
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.args) > 0 {
				n := &listenSink(t, b, "127.0.0.1:4739").n
				defer func() { t.Logf("collector received %d datagrams", n.Load()) }()
			}
			r := memoryRun(t, a, b, bin, tc.name, tc.config, tc.flows*tc.packets, tc.args...)
			t.Logf("MEMORY %s: %d flows x %d packets: peak RSS %.1f MB while running (VmHWM before SIGTERM), %.1f MB over the whole run (final export included); "+
				"%.2f CPU-s in all, %.2f CPU-s per million packets; %d packets received, %d exported (the daemon's count), %d lost to a full ring buffer (counted)",
				tc.name, tc.flows, tc.packets, mb(r.hwm), mb(r.res.maxRSS), r.res.cpu.Seconds(),
				r.res.cpu.Seconds()/(float64(r.delta.RxPackets)/1e6), r.delta.RxPackets, r.res.stopped["packets"], r.res.stopped["kernel_ringbuf_full"])
			tc.check(t, r)
		})
	}
}

// memRun is one daemon run of TestLoadMemory.
type memRun struct {
	res   daemonResult
	delta linkStats
	hwm   uint64 // VmHWM before SIGTERM, bytes
}

// memoryRun starts the daemon with the default settings on hfl1 in b
// (metrics served, on b's loopback), sends packets frames of config from a
// with trafgen -P 2 (each process cycles through the flows once per
// packets/flows), lets two poll intervals pass, reads the daemon's peak
// RSS, and stops it.
func memoryRun(t *testing.T, a, b *namespace, bin, name, config string, packets int, extra ...string) memRun {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), name+".trafgen")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// The defaults serve /metrics: so does this daemon, on b's loopback.
	// LOAD_MEMORY_ARGS adds daemon arguments to every run (space
	// separated), e.g. "--ring-buffer-size 4194304" to measure the flood
	// with another ring buffer.
	extra = append(extra, strings.Fields(os.Getenv("LOAD_MEMORY_ARGS"))...)
	args := daemonArgs(t, append([]string{"--interfaces", "hfl1", "--metrics-enabled=true", "--metrics-listen", "127.0.0.1:9740"}, extra...)...)
	profile := os.Getenv("LOAD_MEMPROFILE_DIR")
	if profile != "" {
		args = append(args, "--metrics-pprof")
	}
	dm := startDaemon(t, b, bin, args...)
	before := b.waitQuiet(t, "hfl1", 500*time.Millisecond, 20*time.Second)
	cpuDone := make(chan error, 1)
	if profile != "" {
		go func() {
			cpuDone <- fetchProfile(b, "127.0.0.1:9740", "/debug/pprof/profile?seconds=12", filepath.Join(profile, name+".cpu.pprof"))
		}()
	} else {
		cpuDone <- nil
	}
	g := runTrafgen(t, a, "hfl0", cfg, loadProcs, uint64(packets), 60*time.Second, b, "hfl1")
	t.Logf("%s", g)
	if err := <-cpuDone; err != nil {
		t.Errorf("CPU profile: %v", err)
	}
	after := b.waitQuiet(t, "hfl1", 500*time.Millisecond, 20*time.Second)
	time.Sleep(2500 * time.Millisecond) // two drains: every flow is in the cache
	hwm := procStatusBytes(t, dm.cmd.Process.Pid, "VmHWM")
	if profile != "" {
		if err := fetchProfile(b, "127.0.0.1:9740", "/debug/pprof/heap", filepath.Join(profile, name+".heap.pprof")); err != nil {
			t.Errorf("heap profile: %v", err)
		}
	}
	res := dm.stop(t, 60*time.Second)
	k := res.stopped
	for _, c := range []string{"drain_errors", "export_errors", "kernel_not_ip", "kernel_malformed"} {
		if k[c] != 0 {
			t.Errorf("%s %d, want 0", c, k[c])
		}
	}
	t.Logf("hfl1 counted rx %d; exported %d pkts in %d records; direct_records %d kernel_map_full %d kernel_ringbuf_full %d; final export took %v",
		after.RxPackets-before.RxPackets, res.ingress.RxPackets, res.flows, k["direct_records"], k["kernel_map_full"],
		k["kernel_ringbuf_full"], res.stopTime.Round(time.Millisecond))
	return memRun{res: res, hwm: hwm, delta: linkStats{RxPackets: after.RxPackets - before.RxPackets}}
}

// procStatusBytes reads a "kB" field of /proc/pid/status.
func procStatusBytes(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s in /proc/%d/status: %v", field, pid, err)
			}
			return n * 1024
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// fetchProfile fetches path from addr inside ns into file. It may run on
// any goroutine.
func fetchProfile(ns *namespace, addr, path, file string) error {
	var body []byte
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.0\r\nHost: hostflow\r\n\r\n"); err != nil {
			return err
		}
		raw, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		head, b, ok := strings.Cut(string(raw), "\r\n\r\n")
		if !ok || !strings.Contains(head, " 200 ") {
			return fmt.Errorf("GET %s: %.200q", path, head)
		}
		body = []byte(b)
		return nil
	})
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

func mb(n uint64) float64 { return float64(n) / (1 << 20) }
