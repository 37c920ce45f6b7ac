package exporter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"golang.org/x/sys/unix"
)

// collectorPort is where the tests' collector listens, or nothing does.
const collectorPort = 4739

// wireCapture is a packet socket on a namespace's loopback: it sees every
// datagram that leaves a socket, whether or not anything receives it. It
// captures all protocols: only those taps see outgoing packets.
type wireCapture struct {
	fd int
}

// newWireCapture opens a capture on lo of ns; call it inside ns.Do.
func newWireCapture(t *testing.T) (*wireCapture, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { unix.Close(fd) })
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	// Room for every test datagram even if the test reads late.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		return nil, err
	}
	return &wireCapture{fd: fd}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// tags reads the datagrams sent to collectorPort until it has n or none
// comes for 2 s, and returns their message tags in wire order. Loopback
// shows each packet twice, going out and coming in: only the first counts.
func (c *wireCapture) tags(t *testing.T, n int) []uint32 {
	t.Helper()
	var tags []uint32
	buf := make([]byte, 65536)
	for len(tags) < n {
		m, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_OUTGOING {
			continue
		}
		p := buf[:m]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != collectorPort {
			continue
		}
		// A UDP GSO send crosses lo as one packet: the messages in
		// it follow each other, each with its length (testMsg).
		for m := p[ihl+8:]; len(m) >= 16; {
			l := int(binary.BigEndian.Uint16(m[2:]))
			if l < 16 || l > len(m) {
				t.Fatalf("capture: message of %d bytes in %d", l, len(m))
			}
			tags = append(tags, msgTag(m))
			m = m[l:]
		}
	}
	return tags
}

// seq returns the tags from..to, inclusive.
func seq(from, to uint32) []uint32 {
	var s []uint32
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestUDPNothingListening: a connected UDP socket reports the ICMP port
// unreachable of one datagram as ECONNREFUSED on the next send, which is
// then not sent. Every message must still reach the wire, and the ICMP
// errors be counted.
func TestUDPNothingListening(t *testing.T) {
	for _, cfg := range testUDPConfigs {
		t.Run(udpConfigName(cfg), func(t *testing.T) { testUDPNothingListening(t, cfg) })
	}
}

// testUDPConfigs are the writers the UDP tests run with: no batching,
// batches smaller than the messages written (full batches go out inside
// WriteMessage) and the daemon's, each with and without GSO.
var testUDPConfigs = []UDPConfig{{}, {Batch: 4, NoGSO: true}, {Batch: DefaultUDPBatch, NoGSO: true},
	{Batch: 4}, {Batch: DefaultUDPBatch}}

func udpConfigName(cfg UDPConfig) string {
	name := fmt.Sprint("batch", cfg.Batch)
	if cfg.Batch > 1 && !cfg.NoGSO {
		name += "-gso"
	}
	return name
}

// udpFlush flushes a batching writer; without batching it is a no-op.
func udpFlush(t *testing.T, u *UDPWriter) {
	t.Helper()
	if err := u.Flush(); err != nil {
		t.Errorf("flush: %v", err)
	}
}

func dialTestUDP(cfg UDPConfig) (*UDPWriter, error) {
	cfg.Address = net.JoinHostPort("127.0.0.1", fmt.Sprint(collectorPort))
	return NewUDPWriter(cfg)
}

func testUDPNothingListening(t *testing.T, cfg UDPConfig) {
	ns := testutil.NewNetnsNamed(t, "hf-udptest-")
	var capt *wireCapture
	var u *UDPWriter
	err := ns.Do(func() error {
		var err error
		if capt, err = newWireCapture(t); err != nil {
			return err
		}
		u, err = dialTestUDP(cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Batching() != (cfg.Batch > 1) || u.GSO() != (cfg.Batch > 1 && !cfg.NoGSO) {
		t.Fatalf("batching %v, GSO %v", u.Batching(), u.GSO())
	}
	// The last message goes alone, after the ICMP errors of the others.
	const n = 15
	for i := uint32(1); i <= n; i++ {
		if err := u.WriteMessage(testMsg(i, 100)); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
		if i >= n-1 {
			udpFlush(t, u)
		}
	}
	if got := capt.tags(t, n); !equalTags(got, seq(1, n)) {
		t.Errorf("on the wire: %v, want 1..%d", got, n)
	}
	st := u.Stats()
	if st.Messages != n || st.Bytes != n*100 || st.Lost != 0 {
		t.Errorf("stats %+v: want %d messages, none lost", st, n)
	}
	// Loopback answers at once, mostly: a message after the first meets
	// the ICMP error of one before. Single writes see each one that was
	// queued before them, but the socket holds one pending error, and
	// under load the softirq that makes it may run late: two errors fold
	// into one, or the last comes after the last send. In a batch,
	// sendmmsg returns only those that stop the first message of a call
	// (the others cut it short, as a full buffer would). Either way: at
	// least one, never more than occurred.
	if st.Unreachable == 0 || st.Unreachable > n-1 {
		t.Errorf("unreachable %d, want 1..%d", st.Unreachable, n-1)
	}
}

// TestUDPCollectorStartsLate: once a collector listens, it gets every
// message, the first one included, though an ICMP error of the time
// before is still pending on the socket.
func TestUDPCollectorStartsLate(t *testing.T) {
	for _, cfg := range testUDPConfigs {
		t.Run(udpConfigName(cfg), func(t *testing.T) { testUDPCollectorStartsLate(t, cfg) })
	}
}

func testUDPCollectorStartsLate(t *testing.T, cfg UDPConfig) {
	ns := testutil.NewNetnsNamed(t, "hf-udptest-")
	var u *UDPWriter
	if err := ns.Do(func() (err error) {
		u, err = dialTestUDP(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for i := uint32(1); i <= 5; i++ {
		if err := u.WriteMessage(testMsg(i, 100)); err != nil {
			t.Errorf("message %d before the collector: %v", i, err)
		}
	}
	udpFlush(t, u)
	var l *net.UDPConn
	if err := ns.Do(func() (err error) {
		l, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: collectorPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := uint32(6); i <= 15; i++ {
		if err := u.WriteMessage(testMsg(i, 100)); err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	udpFlush(t, u)
	var got []uint32
	buf := make([]byte, 2000)
	l.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(got) < 10 {
		n, err := l.Read(buf)
		if err != nil {
			break
		}
		got = append(got, msgTag(buf[:n]))
	}
	if !equalTags(got, seq(6, 15)) {
		t.Errorf("collector received %v, want 6..15", got)
	}
	if st := u.Stats(); st.Messages != 15 || st.Lost != 0 || st.Unreachable == 0 {
		t.Errorf("stats %+v: want 15 messages, none lost, unreachable counted", st)
	}
}
