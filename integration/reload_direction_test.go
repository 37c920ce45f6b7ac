package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReloadDirectionChange reloads hostflow between hfp0 and hfp0:ingress
// while datagrams arrive on hfp0: the ingress hook stays attached through
// every reload, so the exported ingress count is exactly what arrived.
func TestReloadDirectionChange(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-dir-a")
	b := newNamespace(t, "hf-dir-b")
	p := newVethPair(t, a, b, "hfp0", "hfp1")

	conf := filepath.Join(t.TempDir(), "hostflow.yaml")
	common := "poll_interval: 200ms\nstate_dir: " + t.TempDir() + "\nmetrics:\n  enabled: false\n" +
		"control_socket: " + filepath.Join(t.TempDir(), "ctl.sock") + "\n"
	svcConfig(t, conf, common+"interfaces: [hfp0]\n")
	hf := start(t, a.command(bin, "--config", conf))
	hf.waitOutput(t, "msg=ready", 15*time.Second)

	const port = 7199
	var sent atomic.Uint64
	stop := make(chan struct{})
	sendErr := make(chan error, 1)
	var conn *net.UDPConn
	b.do(t, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(p.v4B)})
		return err
	})
	drops0 := b.txDropped(t, "hfp1")
	go func() {
		defer conn.Close()
		to := &net.UDPAddr{IP: net.ParseIP(p.v4A), Port: port}
		payload := make([]byte, 64)
		for i := 0; i < 2_000_000; i++ { // bounded; stopped after the reloads
			select {
			case <-stop:
				sendErr <- nil
				return
			default:
			}
			if _, err := conn.WriteToUDP(payload, to); err != nil {
				sendErr <- fmt.Errorf("send: %w", err)
				return
			}
			sent.Add(1)
		}
		sendErr <- nil
	}()
	const reloads = 8
	for i := 1; i <= reloads; i++ {
		rule := "hfp0:ingress"
		if i%2 == 0 {
			rule = "hfp0"
		}
		svcConfig(t, conf, common+"interfaces: ["+rule+"]\n")
		svcSignal(t, hf, syscall.SIGHUP)
		svcWaitCount(t, hf, "msg=reloaded", i, 10*time.Second)
	}
	close(stop)
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	// The last datagrams may still wait in the softirq backlog: let them
	// reach hfp0 (or the veth's drop count) before hostflow's final drain.
	a.waitQuiet(t, "hfp0", 500*time.Millisecond, 20*time.Second)
	dropped := b.txDropped(t, "hfp1") - drops0
	hf.stop(t, 20*time.Second)
	if n := strings.Count(hf.output.String(), "msg=\"hooks changed\""); n != reloads {
		t.Errorf("%d hook changes logged, want %d", n, reloads)
	}

	var in uint64
	for _, f := range jsonFlows(t, hf.output.String()) {
		if f.Proto == 17 && f.Direction == "ingress" && f.DstPort == port {
			in += f.Packets
		}
	}
	if want := sent.Load() - dropped; in != want {
		t.Errorf("exported %d datagrams in on hfp0, want %d (%d sent, %d dropped by the veth)", in, want, sent.Load(), dropped)
	}
}
