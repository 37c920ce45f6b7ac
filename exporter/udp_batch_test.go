package exporter

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

// udpPair is a UDP collector listening on 127.0.0.1 in a namespace of its
// own and a writer sending to it.
func udpPair(t *testing.T, cfg UDPConfig) (*UDPWriter, *net.UDPConn, *testutil.Netns) {
	t.Helper()
	ns := testutil.NewNetnsNamed(t, "hf-udptest-")
	var u *UDPWriter
	var l *net.UDPConn
	if err := ns.Do(func() (err error) {
		if l, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: collectorPort}); err != nil {
			return err
		}
		u, err = dialTestUDP(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close(); l.Close() })
	return u, l, ns
}

// readTags reads datagrams until none comes for wait, and returns their
// tags and lengths.
func readTags(t *testing.T, l *net.UDPConn, wait time.Duration) (tags []uint32, lens []int) {
	t.Helper()
	buf := make([]byte, 65536)
	for range 1000 {
		l.SetReadDeadline(time.Now().Add(wait))
		n, err := l.Read(buf)
		if err != nil {
			break
		}
		tags = append(tags, msgTag(buf[:n]))
		lens = append(lens, n)
	}
	return tags, lens
}

// TestUDPBatch: a batching writer sends each message as one datagram of
// its own length, in order; a full batch goes out at once, the rest at
// Flush (nothing before), and the counters are exact.
func TestUDPBatch(t *testing.T) {
	u, l, _ := udpPair(t, UDPConfig{Batch: 4})
	if !u.Batching() {
		t.Fatal("no batching")
	}
	var bytes uint64
	for i := uint32(1); i <= 10; i++ {
		n := 100 + int(i)*97 // every length differs
		bytes += uint64(n)
		if err := u.WriteMessage(testMsg(i, n)); err != nil {
			t.Fatal(err)
		}
	}
	tags, lens := readTags(t, l, 200*time.Millisecond)
	if !equalTags(tags, seq(1, 8)) {
		t.Errorf("before Flush: %v, want the two full batches 1..8", tags)
	}
	for i, n := range lens {
		if want := 100 + (i+1)*97; n != want {
			t.Errorf("datagram %d: %d bytes, want %d", i+1, n, want)
		}
	}
	if st := u.Stats(); st.Messages != 8 {
		t.Errorf("before Flush: %d messages counted", st.Messages)
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	if tags, _ = readTags(t, l, time.Second); !equalTags(tags, seq(9, 10)) {
		t.Errorf("after Flush: %v, want 9 10", tags)
	}
	if st := u.Stats(); st.Messages != 10 || st.Bytes != bytes || st.Lost != 0 || st.Unreachable != 0 {
		t.Errorf("stats %+v, want 10 messages, %d bytes", st, bytes)
	}
	// Close sends what is held back.
	if err := u.WriteMessage(testMsg(11, 100)); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if tags, _ = readTags(t, l, time.Second); !equalTags(tags, seq(11, 11)) {
		t.Errorf("after Close: %v, want 11", tags)
	}
	if err := u.WriteMessage(testMsg(12, 100)); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if err := u.Flush(); err != nil {
		t.Errorf("flush after Close with nothing held: %v", err)
	}
	if st := u.Stats(); st.Messages != 11 || st.Lost != 1 {
		t.Errorf("stats %+v, want 11 messages, 1 lost", st)
	}
}

// TestUDPBatchFailure: a message the kernel refuses (too big for a UDP
// datagram) in the middle of a batch is counted lost alone; the others go
// out, Flush reports the failure, and later messages are written one by
// one, each with its own error, until a write works.
func TestUDPBatchFailure(t *testing.T) {
	u, l, _ := udpPair(t, UDPConfig{Batch: 8})
	for _, m := range [][]byte{testMsg(1, 100), testMsg(2, 70000), testMsg(3, 100)} {
		if err := u.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	err := u.Flush()
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("flush: %v, want EMSGSIZE", err)
	}
	if st := u.Stats(); st.Messages != 2 || st.Lost != 1 {
		t.Errorf("stats %+v, want 2 sent, 1 lost", st)
	}
	if err := u.WriteMessage(testMsg(4, 70000)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("write after a failed batch: %v, want its own EMSGSIZE", err)
	}
	for i := uint32(5); i <= 6; i++ {
		if err := u.WriteMessage(testMsg(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Flush(); err != nil {
		t.Errorf("flush: %v", err)
	}
	if tags, _ := readTags(t, l, time.Second); !equalTags(tags, []uint32{1, 3, 5, 6}) {
		t.Errorf("received %v, want 1 3 5 6", tags)
	}
	if st := u.Stats(); st.Messages != 4 || st.Lost != 2 {
		t.Errorf("stats %+v, want 4 sent, 2 lost", st)
	}
}

// TestUDPBatchFallback: where sendmmsg is refused, a writer asked to batch
// writes each message at once.
func TestUDPBatchFallback(t *testing.T) {
	probe := sendmmsgProbe
	sendmmsgProbe = func(syscall.RawConn) error { return syscall.ENOSYS }
	t.Cleanup(func() { sendmmsgProbe = probe })
	u, l, _ := udpPair(t, UDPConfig{Batch: DefaultUDPBatch})
	if u.Batching() {
		t.Fatal("batching with sendmmsg refused")
	}
	if err := u.WriteMessage(testMsg(1, 100)); err != nil {
		t.Fatal(err)
	}
	// Sent at once, no Flush.
	if tags, _ := readTags(t, l, time.Second); !equalTags(tags, seq(1, 1)) {
		t.Errorf("received %v", tags)
	}
}

// TestUDPBatchAllocs: batching allocates nothing once the writer exists.
func TestUDPBatchAllocs(t *testing.T) {
	u, _, _ := udpPair(t, UDPConfig{Batch: DefaultUDPBatch})
	msg := testMsg(1, 1400)
	a := testing.AllocsPerRun(100, func() {
		for range 12 {
			_ = u.WriteMessage(msg)
		}
		_ = u.Flush()
	})
	if a != 0 {
		t.Errorf("12 writes and a flush allocate %v times", a)
	}
}

// flushCounter is a Transport that counts Flush calls.
type flushCounter struct {
	Transport
	flushes atomic.Int64
}

func (f *flushCounter) Flush() error {
	f.flushes.Add(1)
	return nil
}

// TestCollectorFlushesWhenIdle: a Collector flushes a batching transport
// once its queue is empty, so a lone batch is not held back.
func TestCollectorFlushesWhenIdle(t *testing.T) {
	u, err := DialUDP("127.0.0.1:9") // never written to
	if err != nil {
		t.Fatal(err)
	}
	tr := &flushCounter{Transport: u}
	c := mustCollector(t, CollectorConfig{Sink: &countingSink{}, Transport: tr})
	if err := c.Export(testFlows(3)); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(2*time.Second, func() bool { return tr.flushes.Load() == 1 }) {
		t.Errorf("%d flushes after one batch, want 1", tr.flushes.Load())
	}
}

// TestUDPBatchGSO: runs of equal-length messages share one GSO send; the
// receiver still gets one datagram per message, of its own length, in
// order: runs end at a longer message, after a shorter one, and at the
// segment limit.
func TestUDPBatchGSO(t *testing.T) {
	u, l, _ := udpPair(t, UDPConfig{Batch: 128})
	if !u.GSO() {
		t.Fatal("no GSO")
	}
	var lens []int
	for range 3 {
		lens = append(lens, 500) // run
	}
	lens = append(lens, 300, 400, 400, 900) // shorter ends it; longer starts anew
	for range maxGSOSegments + 5 {
		lens = append(lens, 700) // over the segment limit
	}
	lens = append(lens, 100)
	var bytes uint64
	for i, n := range lens {
		bytes += uint64(n)
		if err := u.WriteMessage(testMsg(uint32(i+1), n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	tags, got := readTags(t, l, time.Second)
	if !equalTags(tags, seq(1, uint32(len(lens)))) {
		t.Errorf("received %v, want 1..%d", tags, len(lens))
	}
	for i := range min(len(got), len(lens)) {
		if got[i] != lens[i] {
			t.Errorf("datagram %d: %d bytes, want %d", i+1, got[i], lens[i])
		}
	}
	if st := u.Stats(); st.Messages != uint64(len(lens)) || st.Bytes != bytes || st.Lost != 0 {
		t.Errorf("stats %+v, want %d messages, %d bytes", st, len(lens), bytes)
	}
}

// TestUDPBatchGSORefused: where the socket or route refuses GSO (here a
// socket sending without UDP checksums, SO_NO_CHECK: the kernel refuses
// GSO for it with EINVAL), the run goes out one message per header,
// nothing is lost, and the writer stops using GSO.
func TestUDPBatchGSORefused(t *testing.T) {
	u, l, _ := udpPair(t, UDPConfig{Batch: 8})
	raw, err := u.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_NO_CHECK, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	for i := uint32(1); i <= 3; i++ {
		if err := u.WriteMessage(testMsg(i, 1200)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if tags, lens := readTags(t, l, time.Second); !equalTags(tags, seq(1, 3)) || lens[0] != 1200 {
		t.Errorf("received %v of %v bytes, want 1..3 of 1200", tags, lens)
	}
	if st := u.Stats(); st.Messages != 3 || st.Lost != 0 {
		t.Errorf("stats %+v, want 3 sent", st)
	}
	if u.GSO() {
		t.Error("still using GSO")
	}
}

// TestUDPBatchCloseWhileWriting: Close during writes and flushes from
// another goroutine leaves every message counted once, sent or lost.
func TestUDPBatchCloseWhileWriting(t *testing.T) {
	u, _, _ := udpPair(t, UDPConfig{Batch: 8})
	var writes atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200000 {
			writes.Add(1)
			if err := u.WriteMessage(testMsg(uint32(i), 200)); errors.Is(err, ErrClosed) {
				return
			}
			if i%5 == 0 {
				_ = u.Flush()
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := u.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	<-done
	if st := u.Stats(); st.Messages+st.Lost != writes.Load() {
		t.Errorf("%d writes, %d sent + %d lost", writes.Load(), st.Messages, st.Lost)
	}
}

// TestUDPBatchCloseDuringSend: a Close that finds a send under way (here:
// the lock held) does not wait for it, closes the socket, and counts what
// is still held back as lost.
func TestUDPBatchCloseDuringSend(t *testing.T) {
	u, _, _ := udpPair(t, UDPConfig{Batch: 8})
	for i := uint32(1); i <= 3; i++ {
		if err := u.WriteMessage(testMsg(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	u.mu.Lock()
	closed := make(chan error)
	go func() { closed <- u.Close() }()
	// Close closes the socket only once past its TryLock, which the
	// held lock made fail: it then waits for the lock.
	sockClosed := func() bool { return errors.Is(u.conn.SetReadDeadline(time.Time{}), net.ErrClosed) }
	if !waitUntil(20*time.Second, sockClosed) {
		t.Fatal("Close did not close the socket")
	}
	u.mu.Unlock()
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	if st := u.Stats(); st.Messages != 0 || st.Lost != 3 {
		t.Errorf("stats %+v, want 3 lost", st)
	}
}

// TestUDPBatchGSOVeth: over a veth pair, with the device's UDP
// segmentation and checksum offloads on (the run crosses as one packet)
// and off (the kernel cuts it and checksums each datagram before the
// wire), the collector gets every message as one datagram of its length:
// the cuts fall on the message boundaries and the checksums are right, or
// the receiving stack would drop them.
func TestUDPBatchGSOVeth(t *testing.T) {
	for _, offload := range []string{"on", "off"} {
		t.Run("offload-"+offload, func(t *testing.T) {
			ethtool := testutil.RequireTool(t, "ethtool")
			p := testutil.NewVethPair(t)
			if offload == "off" {
				if err := p.A.Do(func() error {
					out, err := exec.Command(ethtool, "-K", p.NameA, "tx-udp-segmentation", "off", "tx-checksumming", "off").CombinedOutput()
					if err != nil {
						return fmt.Errorf("ethtool: %v: %s", err, out)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			var l *net.UDPConn
			if err := p.B.Do(func() (err error) {
				l, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(p.AddrB), Port: collectorPort})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var u *UDPWriter
			if err := p.A.Do(func() (err error) {
				u, err = NewUDPWriter(UDPConfig{Address: net.JoinHostPort(p.AddrB, fmt.Sprint(collectorPort)), Batch: DefaultUDPBatch})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			if !u.GSO() {
				t.Fatal("no GSO")
			}
			lens := []int{1388, 1388, 1388, 1392, 1388, 1356, 1333, 1397, 1397, 1320, 1397, 1397, 1397, 182}
			for i, n := range lens {
				if err := u.WriteMessage(testMsg(uint32(i+1), n)); err != nil {
					t.Fatal(err)
				}
			}
			if err := u.Flush(); err != nil {
				t.Fatal(err)
			}
			tags, got := readTags(t, l, time.Second)
			if !equalTags(tags, seq(1, uint32(len(lens)))) {
				t.Errorf("received %v, want 1..%d", tags, len(lens))
			}
			for i := range min(len(got), len(lens)) {
				if got[i] != lens[i] {
					t.Errorf("datagram %d: %d bytes, want %d", i+1, got[i], lens[i])
				}
			}
			if st := u.Stats(); st.Messages != uint64(len(lens)) || st.Lost != 0 || !u.GSO() {
				t.Errorf("stats %+v, GSO %v", st, u.GSO())
			}
		})
	}
}
