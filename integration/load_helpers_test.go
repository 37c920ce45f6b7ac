package integration

// Helpers of the load tests: a trafgen run bounded in packets and time, and a
// hostflow daemon whose JSON-lines output goes to a file and is summed.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// loadFlows describes the trafgen packet of the load tests: 60-byte frames
// (Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes of payload) from
// 198.18.0.1 to 198.18.0.2. Three header bytes count up independently with
// coprime periods (256, 131 and 3), so the packets cycle through
// 256*131*3 = 100,608 distinct flows (source port x destination port).
// The destination MAC is not the receiver's: the receiving stack drops the
// frame right after the TC ingress hook (PACKET_OTHERHOST), so no ICMP
// comes back and the generator, not the receiver, sets the rate.
const (
	loadFlows     = 256 * 131 * 3
	loadFrameSize = 60
	loadTrafgen   = `{
  /* Ethernet: to a MAC nobody owns, so the receiver drops after TC */
  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
  0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x08, 0x00,
  /* IPv4, total length 46, DF, TTL 64, UDP */
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  198, 18, 0, 1,
  198, 18, 0, 2,
  /* UDP: source port bytes cycle with periods 256 and 131, destination
     port 9000..9002 with period 3; length 26, no checksum */
  dinc(0, 255), dinc(0, 130), 0x23, dinc(0x28, 0x2a), const16(26), const16(0),
  fill(0x00, 18)
}
`
)

// writeTrafgenConfig writes the packet configuration to a temporary file.
func writeTrafgenConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "load.trafgen")
	if err := os.WriteFile(path, []byte(loadTrafgen), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// trafgenRun is what one generator run did.
type trafgenRun struct {
	sent     uint64        // trafgen's own count of packets handed to the device
	elapsed  time.Duration // from start to exit
	rx       uint64        // frames the receiving veth end counted meanwhile
	txDrops  uint64        // frames the sending veth end dropped (receiver backlog full)
	procs    int
	rxPPS    float64 // rx over the whole run, start-up and exit included
	sentPPS  float64
	maxCount uint64
	// steadyPPS is the receiver's rate from the first frame to the last
	// sample before SIGINT (100 ms samples): trafgen's start-up (config
	// compilation, ring set-up) is left out.
	steadyPPS float64
}

func (r trafgenRun) String() string {
	return fmt.Sprintf("trafgen -P %d for %v: sent %d, receiver counted %d (%.0f pps while sending, %.0f pps over the whole run), sender veth dropped %d",
		r.procs, r.elapsed.Round(time.Millisecond), r.sent, r.rx, r.steadyPPS, r.rxPPS, r.txDrops)
}

var trafgenOutgoing = regexp.MustCompile(`(?m)^\s*(\d+) packets outgoing`)

// runTrafgen runs trafgen in ns on dev for d from its first frame (at most
// d+10s in all) and at most maxCount packets, with procs processes, and measures what
// the receiving end (rxNS, rxDev) counted meanwhile. extra are more trafgen
// arguments (e.g. "-t", "0": sendto instead of the TX ring). trafgen runs in its own
// process group; SIGINT at d, SIGKILL 5 s later, and the test's cleanup
// kills the group if it is still there.
func runTrafgen(t *testing.T, ns *namespace, dev, config string, procs int, maxCount uint64, d time.Duration, rxNS *namespace, rxDev string, extra ...string) trafgenRun {
	t.Helper()
	txBefore := ns.txDropped(t, dev)
	rxBefore := rxNS.stats(t, rxDev)
	cmd := ns.command("trafgen", append([]string{"--dev", dev, "--conf", config, "--cpus", strconv.Itoa(procs),
		"--num", strconv.FormatUint(maxCount, 10), "--no-sock-mem"}, extra...)...)
	out := newLockedBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start trafgen: %v", err)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
	})
	rxNow := rxCounter(t, rxNS, rxDev)
	var firstT, lastT time.Time
	var firstN, lastN uint64
	sample := func() {
		n, now := rxNow(), time.Now()
		if n == rxBefore.RxPackets {
			return
		}
		if firstT.IsZero() {
			firstT, firstN = now, n
		}
		lastT, lastN = now, n
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// d counts from the first frame seen, so start-up is not part of it;
	// start-up itself gets at most 10 s.
	hardStop := time.After(d + 10*time.Second)
	var err error
	finished, ended := false, false
	for !ended {
		select {
		case err = <-done:
			finished, ended = true, true
		case <-tick.C:
			sample()
			ended = !firstT.IsZero() && time.Since(firstT) >= d
		case <-hardStop:
			sample()
			ended = true
		}
	}
	if !finished {
		_ = syscall.Kill(-pgid, syscall.SIGINT)
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
			exited = true
			t.Fatalf("trafgen ignored SIGINT for 5s; killed\n%s", out.String())
		}
	}
	exited = true
	elapsed := time.Since(start)
	if err != nil {
		// SIGINT may end it with a non-zero status; the counters decide.
		t.Logf("trafgen exit: %v", err)
	}
	r := trafgenRun{elapsed: elapsed, procs: procs, maxCount: maxCount}
	m := trafgenOutgoing.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("trafgen printed no packet count:\n%s", out.String())
	}
	r.sent, _ = strconv.ParseUint(m[1], 10, 64)
	// Frames on the receiver's backlog are counted at enqueue, so the
	// counter is final once the sender has exited.
	rxAfter := rxNS.stats(t, rxDev)
	r.rx = rxAfter.RxPackets - rxBefore.RxPackets
	r.txDrops = ns.txDropped(t, dev) - txBefore
	r.rxPPS = float64(r.rx) / elapsed.Seconds()
	if lastT.After(firstT) {
		r.steadyPPS = float64(lastN-firstN) / lastT.Sub(firstT).Seconds()
	}
	r.sentPPS = float64(r.sent) / elapsed.Seconds()
	return r
}

// rxCounter returns a cheap reader of dev's rx_packets in ns (a netlink
// handle in the namespace, closed when the test ends).
func rxCounter(t *testing.T, ns *namespace, dev string) func() uint64 {
	t.Helper()
	nsh, err := netns.GetFromName(ns.name)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns.name, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatalf("netlink in %s: %v", ns.name, err)
	}
	t.Cleanup(h.Close)
	return func() uint64 {
		l, err := h.LinkByName(dev)
		if err != nil || l.Attrs().Statistics == nil {
			t.Errorf("read %s counters in %s: %v", dev, ns.name, err)
			return 0
		}
		return l.Attrs().Statistics.RxPackets
	}
}

// txDropped reads the tx_dropped counter of dev (a veth counts there the
// frames its peer's backlog refused).
func (ns *namespace) txDropped(t *testing.T, dev string) uint64 {
	t.Helper()
	out := ns.run(t, "ip", "-s", "-j", "link", "show", "dev", dev)
	var v []struct {
		Stats64 struct {
			Tx struct{ Dropped uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("parse ip -s -j link: %v: %s", err, out)
	}
	return v[0].Stats64.Tx.Dropped
}

// daemon is a hostflow process printing flows as JSON lines into a file.
type daemon struct {
	cmd    *exec.Cmd
	stdout string
	stderr *lockedBuffer
	done   chan error
}

func startDaemon(t *testing.T, ns *namespace, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{stdout: filepath.Join(t.TempDir(), "flows.jsonl"), stderr: newLockedBuffer(), done: make(chan error, 1)}
	f, err := os.Create(d.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	d.cmd = ns.command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = f, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", d.cmd.Args, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-d.done:
			d.done <- err
		default:
			_ = d.cmd.Process.Kill()
			d.done <- <-d.done
		}
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", d.cmd.Args, d.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !hasLogMsg(d.stderr.String(), "attached") {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("%v exited (%v) before attaching:\n%s", d.cmd.Args, err, d.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not attach within 15s:\n%s", d.cmd.Args, d.stderr.String())
		}
	}
	return d
}

// daemonResult is what a stopped daemon exported and counted.
type daemonResult struct {
	ingress, egress linkStats // packets and IP bytes exported per direction
	flows           int       // flow records exported
	distinctUDP     int       // distinct UDP flows 198.18.0.1 -> 198.18.0.2
	stopped         map[string]uint64
	stopTime        time.Duration // SIGTERM to exit: the final drain and export
	// maxRSS is the process's peak resident set in bytes over its whole
	// life, final export included (getrusage ru_maxrss); cpu its user +
	// system CPU time.
	maxRSS uint64
	cpu    time.Duration
}

// stoppedField is one numeric field of a log line, in slog's text
// (key=1) or JSON ("key":1) form.
var stoppedField = regexp.MustCompile(`"?\b([a-z_]+)"?[=:](\d+)\b`)

// hasLogMsg reports whether the log holds a line with message msg, in
// slog's text or JSON form.
func hasLogMsg(log, msg string) bool {
	return len(logLines(log, msg)) > 0
}

func logLines(log, msg string) []string {
	return append(lines(log, "msg="+msg+" "), lines(log, `"msg":"`+msg+`"`)...)
}

// stop sends SIGTERM, waits (bounded) for the final export, and sums the
// JSON lines.
func (d *daemon) stop(t *testing.T, limit time.Duration) daemonResult {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal hostflow: %v", err)
	}
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Fatalf("hostflow exited: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(limit):
		t.Fatalf("hostflow did not stop within %v\n%s", limit, d.stderr.String())
	}
	res := daemonResult{stopped: map[string]uint64{}, stopTime: time.Since(start)}
	if ps := d.cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			res.maxRSS = uint64(ru.Maxrss) * 1024
		}
		res.cpu = ps.UserTime() + ps.SystemTime()
	}
	st := logLines(d.stderr.String(), "stopped")
	if len(st) != 1 {
		t.Fatalf("want one msg=stopped line, got %d:\n%s", len(st), d.stderr.String())
	}
	for _, m := range stoppedField.FindAllStringSubmatch(st[0], -1) {
		v, _ := strconv.ParseUint(m[2], 10, 64)
		res.stopped[m[1]] = v
	}
	for _, k := range []string{"direct_records", "kernel_map_full", "kernel_ringbuf_full", "kernel_not_ip", "kernel_malformed", "drain_errors", "export_errors"} {
		if _, ok := res.stopped[k]; !ok {
			t.Fatalf("msg=stopped line lacks %s: %s", k, st[0])
		}
	}

	f, err := os.Open(d.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type key struct {
		sport, dport uint16
	}
	udp := map[key]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r struct {
			Msg       string `json:"msg"`
			Src       string `json:"src"`
			Dst       string `json:"dst"`
			SrcPort   uint16 `json:"src_port"`
			DstPort   uint16 `json:"dst_port"`
			Proto     uint8  `json:"proto"`
			Direction string `json:"direction"`
			Packets   uint64 `json:"packets"`
			Bytes     uint64 `json:"bytes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("flow line %q: %v", sc.Text(), err)
		}
		if r.Msg != "" {
			continue // a log line, should logs ever go to stdout
		}
		res.flows++
		switch r.Direction {
		case "ingress":
			res.ingress.RxPackets += r.Packets
			res.ingress.RxBytes += r.Bytes
		case "egress":
			res.egress.TxPackets += r.Packets
			res.egress.TxBytes += r.Bytes
		default:
			t.Errorf("flow with direction %q: %s", r.Direction, sc.Text())
		}
		if r.Proto == 17 && r.Src == "198.18.0.1" && r.Dst == "198.18.0.2" {
			udp[key{r.SrcPort, r.DstPort}] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read flows: %v", err)
	}
	res.distinctUDP = len(udp)
	return res
}
