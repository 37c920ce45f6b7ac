package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/internal/testutil"
)

// openTap creates tap device name in ns with a virtio_net_hdr in front of
// every frame (IFF_VNET_HDR), the way a VM's virtio NIC or a container
// runtime's tap feeds the host, and returns its file and ifindex.
func openTap(t *testing.T, ns *testutil.Netns, name string) (*os.File, int) {
	t.Helper()
	var f *os.File
	var idx int
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", errno)
		}
		f = os.NewFile(uintptr(fd), "tap")
		i, err := net.InterfaceByName(name)
		if err != nil {
			f.Close()
			return err
		}
		idx = i.Index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, idx
}

// virtio_net_hdr (include/uapi/linux/virtio_net.h), little endian as on a
// tap without TUNSETVNETBE.
const (
	virtioNetHdrLen       = 10
	virtioNetHdrNeedsCsum = 1
	virtioNetHdrGSOTCPv4  = 1
)

// vnetTSO4 returns the virtio_net_hdr of a TCPv4 TSO frame: the guest asks
// the host to cut it into gsoSize-byte segments and to fill the TCP
// checksum. It carries no segment count: the kernel sets gso_segs 0
// (SKB_GSO_DODGY) and counts the segments only when it segments.
func vnetTSO4(hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
	b := make([]byte, virtioNetHdrLen)
	b[0] = virtioNetHdrNeedsCsum
	b[1] = virtioNetHdrGSOTCPv4
	binary.LittleEndian.PutUint16(b[2:], hdrLen)
	binary.LittleEndian.PutUint16(b[4:], gsoSize)
	binary.LittleEndian.PutUint16(b[6:], csumStart)
	binary.LittleEndian.PutUint16(b[8:], csumOffset)
	return b
}

// TestGSOFromTap checks packets that enter through a tap with a vnet
// header (a VM's virtio NIC, a tap-based container network): a TSO frame
// arrives as one skb with gso_size set and gso_segs 0, and must be counted
// as the segments it stands for, each repeating the IP and TCP headers, by
// the TC programs and the socket filter alike.
func TestGSOFromTap(t *testing.T) {
	attach := map[string]func(t *testing.T, ns *testutil.Netns, idx int) withMaps{
		"tcx":    func(t *testing.T, ns *testutil.Netns, idx int) withMaps { return tcIn(t, ns, idx, AttachTCX) },
		"clsact": func(t *testing.T, ns *testutil.Netns, idx int) withMaps { return tcIn(t, ns, idx, AttachClsact) },
		"socket": func(t *testing.T, ns *testutil.Netns, idx int) withMaps {
			f, _ := nsSockFetcher(t)
			if err := ns.Do(func() error { return f.Attach(idx, "hfgso0") }); err != nil {
				t.Fatalf("Attach: %v", err)
			}
			return f
		},
	}
	for _, mode := range []string{"tcx", "clsact", "socket"} {
		t.Run(mode, func(t *testing.T) {
			requirePrivileges(t)
			ns := testutil.NewNetns(t)
			if err := ns.DisableIPv6(); err != nil {
				t.Fatal(err)
			}
			tap, idx := openTap(t, ns, "hfgso0")
			ns.IP(t, "link", "set", "hfgso0", "up")
			f := attach[mode](t, ns, idx)
			drain(t, f)

			for _, tc := range []struct {
				payload, gsoSize int
				wantSegs         uint64
			}{
				{payload: 3500, gsoSize: 1000, wantSegs: 4}, // the last segment is short
				{payload: 2896, gsoSize: 1448, wantSegs: 2}, // exact multiple
			} {
				const hdrLen = 20 + 32 // IPv4 + TCP with timestamps
				l3 := ipv4{src: v4a, dst: v4b, proto: protoTCP}.build(
					tcp(40000, uint16(tc.gsoSize), tcpACK, bytesN(12), bytesN(tc.payload)))
				frame := ether(etherTypeIPv4, nil, l3)
				hdr := vnetTSO4(14+hdrLen, uint16(tc.gsoSize), 14+20, 16)
				if _, err := tap.Write(append(hdr, frame...)); err != nil {
					t.Fatalf("write to tap: %v", err)
				}
				flows := drain(t, f)
				var found bool
				for id, m := range flows {
					if id.TransportProtocol != protoTCP || id.DstPort != uint16(tc.gsoSize) {
						continue
					}
					found = true
					wantBytes := uint64(len(l3)) + (tc.wantSegs-1)*hdrLen
					if m.Packets != tc.wantSegs || m.Bytes != wantBytes {
						t.Errorf("%d-byte TSO frame, gso_size %d: %d packets %d bytes, want %d and %d",
							tc.payload, tc.gsoSize, m.Packets, m.Bytes, tc.wantSegs, wantBytes)
					}
				}
				if !found {
					t.Errorf("%d-byte TSO frame not counted: %v (counters %+v)", tc.payload, flows, counters(t, f))
				}
			}
		})
	}
}

// tcIn loads TC programs and attaches them to ifindex's ingress in ns.
func tcIn(t *testing.T, ns *testutil.Netns, ifindex int, mode AttachMode) *FlowFetcher {
	t.Helper()
	f, _ := nsFetcher(t, ns, true, false, WithAttachMode(mode))
	attachIn(t, ns, f, ifindex, "hfgso0")
	return f
}
