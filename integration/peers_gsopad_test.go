package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// TestDaemonGSOPaddingNfacctd runs the daemon with two ipfix+udp
// collectors with ?gso_padding=true: pmacct's nfacctd, which must print
// every flow with its exact packet count and log nothing, and a socket
// that records the datagrams, of which the full ones must be padded to
// exactly max_message_size (unpadded, they are 692 bytes).
func TestDaemonGSOPaddingNfacctd(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "nfacctd")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-gsopad-a")
	b := newNamespace(t, "hf-gsopad-b")
	p := newVethPair(t, a, b, "hfg0", "hfg1")

	dir := t.TempDir()
	out := filepath.Join(dir, "flows.json")
	const pmPort, sockPort, max = 9996, 4739, 700
	conf := fmt.Sprintf(`daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: %d
plugins: print[p]
aggregate[p]: src_host, dst_host, src_port, dst_port, proto
print_output[p]: json
print_output_file[p]: %s
print_output_file_append[p]: true
print_refresh_time[p]: 1
`, pmPort, out)
	cf := filepath.Join(dir, "nfacctd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pm := startGroup(t, a.command("nfacctd", "-f", cf))
	pm.waitOutput(t, "waiting for NetFlow/IPFIX data", 10*time.Second)
	pm.waitOutput(t, "Purging cache - END", 10*time.Second)

	var sock *net.UDPConn
	a.do(t, func() (err error) {
		sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sockPort})
		return err
	})
	var (
		mu   sync.Mutex
		msgs [][]byte
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, bytes.Clone(buf[:n]))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { sock.Close(); wg.Wait() })

	// Long timeouts: every flow goes out in the final export at stop,
	// one export of many messages.
	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfg0", "--max-message-size", strconv.Itoa(max),
		"--idle-timeout", "5m", "--active-timeout", "10m",
		"--collector", "ipfix+udp://127.0.0.1:"+strconv.Itoa(pmPort)+"?gso_padding=true",
		"--collector", "ipfix+udp://127.0.0.1:"+strconv.Itoa(sockPort)+"?gso_padding=true")...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)
	const flows, perFlow = 60, 3
	c := udpSocket(t, a, p.v4A, 0)
	for i := range flows {
		sendUDP(t, c, p.v4B, 20000+i, perFlow)
	}
	sport := c.LocalAddr().(*net.UDPAddr).Port
	time.Sleep(500 * time.Millisecond)
	hf.stop(t, 20*time.Second)

	recs := waitPmacct(t, out, flows, 15*time.Second)
	checkPmacctLog(t, pm.output.String())
	seen := map[int]bool{}
	for _, r := range recs {
		if r.SrcIP != p.v4A || r.DstIP != p.v4B || r.Proto != "udp" || r.SrcPort != sport {
			continue
		}
		if r.Packets != perFlow || seen[r.DstPort] {
			t.Errorf("nfacctd: %+v: want one record of %d packets per port", r, perFlow)
		}
		seen[r.DstPort] = true
	}
	if len(seen) != flows {
		t.Errorf("nfacctd printed %d of the %d flows", len(seen), flows)
	}

	// Every datagram read: the socket's queue empty, then its reader done.
	a.waitUDPQueueEmpty(t, sockPort, 10*time.Second)
	sock.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	// The flow messages (goflow2's decoder tells flow data sets from
	// options data sets) are the final export: all but its last are
	// padded to max; unpadded, 60 IPv4 UDP records of 56 bytes leave
	// full messages shorter.
	ts := netflow.CreateTemplateSystem()
	var lens []int
	records := 0
	for i, m := range msgs {
		var v9 netflow.NFv9Packet
		var ipfix netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(m), ts, &v9, &ipfix); err != nil {
			t.Fatalf("goflow2: message %d (%d bytes): %v", i, len(m), err)
		}
		n := 0
		for _, s := range ipfix.FlowSets {
			if d, ok := s.(netflow.DataFlowSet); ok {
				n += len(d.Records)
			}
		}
		if n > 0 {
			lens = append(lens, len(m))
			records += n
		}
	}
	// Other packets on the link (one more flow here) may add records.
	if records < flows || len(lens) < 3 {
		t.Fatalf("%d flow records in messages of %v bytes: want %d or more in several messages", records, lens, flows)
	}
	for i, l := range lens {
		if l > max || i < len(lens)-1 && l != max {
			t.Errorf("flow messages of %v bytes: want all but the last %d (padded)", lens, max)
			break
		}
	}
}
