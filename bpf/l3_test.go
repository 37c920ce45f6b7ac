package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/hostflow/hostflow/internal/testutil"
	"golang.org/x/sys/unix"
)

// openTun creates tun device name in ns and returns its file, so that the
// test is the far end of the device: what it writes enters the host through
// the device's ingress hook, what the host routes to the device leaves
// through its egress hook and is read here.
func openTun(t *testing.T, ns *testutil.Netns, name string) *os.File {
	t.Helper()
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", errno)
		}
		f = os.NewFile(uintptr(fd), "tun")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestAttachL3Device checks a device without an Ethernet header: the
// programs for such devices are chosen, and IPv4 and IPv6 packets in both
// directions are counted with their exact IP length.
func TestAttachL3Device(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		t.Run(mode.String(), func(t *testing.T) {
			requirePrivileges(t)
			ns := testutil.NewNetns(t)
			tun := openTun(t, ns, "hftun0")
			ns.IP(t, "addr", "add", "198.18.1.1/24", "dev", "hftun0")
			ns.IP(t, "addr", "add", "fd00:1::1/64", "dev", "hftun0", "nodad")
			ns.IP(t, "link", "set", "hftun0", "up")
			var idx int
			if err := ns.Do(func() error {
				i, err := net.InterfaceByName("hftun0")
				if err == nil {
					idx = i.Index
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}

			f, _ := nsFetcher(t, ns, true, true, WithAttachMode(mode))
			attachIn(t, ns, f, idx, "hftun0")
			if a := f.attached[idx]; a == nil || a.l2 {
				t.Fatalf("tun attached as an Ethernet device")
			}
			drain(t, f) // IPv6 chatter of link-up

			// Ingress: the far end sends UDP to the host.
			in4 := ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.1.1"), proto: protoUDP}.build(udp(4000, 4001, bytesN(50)))
			in6 := ipv6{src: netip.MustParseAddr("fd00:1::2"), dst: netip.MustParseAddr("fd00:1::1"), proto: protoUDP}.build(udp(4000, 4001, bytesN(30)))
			for range 3 {
				for _, p := range [][]byte{in4, in6} {
					if _, err := tun.Write(p); err != nil {
						t.Fatalf("write to tun: %v", err)
					}
				}
			}
			// Egress: the host sends UDP to the far end, read back.
			if err := ns.Do(func() error {
				for _, dst := range []string{"198.18.1.2:5000", "[fd00:1::2]:5000"} {
					c, err := net.Dial("udp", dst)
					if err != nil {
						return err
					}
					for range 2 {
						if _, err := c.Write(make([]byte, 20)); err != nil {
							return err
						}
					}
					c.Close()
				}
				return nil
			}); err != nil {
				t.Fatalf("send to tun: %v", err)
			}
			readTun(t, tun, 4)

			flows := drain(t, f)
			type want struct {
				src           string
				sport, dport  uint16
				dir           uint8
				pkts, ipBytes uint64
			}
			for _, w := range []want{
				{"198.18.1.2", 4000, 4001, DirectionIngress, 3, 3 * uint64(len(in4))},
				{"fd00:1::2", 4000, 4001, DirectionIngress, 3, 3 * uint64(len(in6))},
				{"198.18.1.1", 0, 5000, DirectionEgress, 2, 2 * (20 + 8 + 20)},
				{"fd00:1::1", 0, 5000, DirectionEgress, 2, 2 * (40 + 8 + 20)},
			} {
				var got []NetFlowMetrics
				for id, m := range flows {
					if id.SrcAddr().String() == w.src && id.Direction == w.dir && id.DstPort == w.dport &&
						(w.sport == 0 || id.SrcPort == w.sport) && id.IfIndex == uint32(idx) && id.TransportProtocol == protoUDP {
						got = append(got, m)
					}
				}
				if len(got) != 1 || got[0].Packets != w.pkts || got[0].Bytes != w.ipBytes {
					t.Errorf("%+v: got %+v, all flows %v", w, got, flows)
				}
			}
			if c := counters(t, f); c.Malformed != 0 || c.NotIP != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

// readTun reads n packets the host sent to the tun device, bounded in time.
func readTun(t *testing.T, tun *os.File, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(20 * time.Second)
	udp := 0
	for udp < n && time.Now().Before(deadline) {
		_ = tun.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, err := tun.Read(buf)
		if err != nil {
			continue
		}
		// Count only our UDP datagrams, not IPv6 chatter.
		if k > 20 && buf[0]>>4 == 4 && buf[9] == protoUDP || k > 40 && buf[0]>>4 == 6 && buf[6] == protoUDP {
			udp++
		}
	}
	if udp < n {
		t.Fatalf("read %d UDP packets from tun, want %d", udp, n)
	}
}
