package exporter

import (
	"encoding/binary"
	"net"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkUDPSendFloor measures what the kernel costs per datagram on
// 127.0.0.1, without any encoding: 12 datagrams of 1388 bytes (about one
// 256-flow export of the default templates) sent with one write each on
// the connected socket, one sendto each on an unconnected one, with one
// sendmmsg, or with one sendmsg using UDP GSO (UDP_SEGMENT: the stack
// is crossed once and the datagrams are cut at the end). It is the floor
// under BenchmarkEncodeHostflowVsGoIPFIX/udp: records/s there cannot beat
// the encoder's own cost plus this.
func BenchmarkUDPSendFloor(b *testing.B) {
	const n, size = 12, 1388
	for _, mode := range []string{"write", "sendto", "sendmmsg", "gso"} {
		b.Run(mode, func(b *testing.B) {
			l := drainUDP(b)
			// sendto: an unconnected socket, the alternative to the
			// connected one UDPWriter keeps (which reports ICMP errors).
			unconnected, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer unconnected.Close()
			dst := l.LocalAddr().(*net.UDPAddr).AddrPort()
			// sendmmsg: one header per datagram. gso: below, by hand.
			u, err := NewUDPWriter(UDPConfig{Address: l.LocalAddr().String(), Batch: n, NoGSO: true})
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			msg := make([]byte, size)
			buf := make([]byte, n*size)
			oob := make([]byte, unix.CmsgSpace(2))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], size)
			raw, err := u.conn.SyscallConn()
			if err != nil {
				b.Fatal(err)
			}
			var serr error
			gso := func(fd uintptr) bool {
				_, serr = unix.SendmsgN(int(fd), buf, oob, nil, 0)
				return serr != unix.EAGAIN
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				switch mode {
				case "write":
					for range n {
						if err := u.writeOne(msg); err != nil {
							b.Fatal(err)
						}
					}
				case "sendto":
					for range n {
						if _, err := unconnected.WriteToUDPAddrPort(msg, dst); err != nil {
							b.Fatal(err)
						}
					}
				case "sendmmsg":
					for range n {
						if err := u.WriteMessage(msg); err != nil {
							b.Fatal(err)
						}
					}
					if err := u.Flush(); err != nil {
						b.Fatal(err)
					}
				case "gso":
					if err := raw.Write(gso); err != nil || serr != nil {
						b.Fatal(err, serr)
					}
				}
			}
			d := float64(b.N * n)
			b.ReportMetric(b.Elapsed().Seconds()*1e9/d, "ns/datagram")
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()*1e9/d, "cpu-ns/datagram")
		})
	}
}

// BenchmarkUDPSendExport sends the 14 messages of one 256-flow export of
// BenchmarkEncodeHostflowVsGoIPFIX, encoded once beforehand, the way each
// UDPWriter mode would: what the transport costs per export, apart from
// the encoder.
func BenchmarkUDPSendExport(b *testing.B) {
	var msgs [][]byte
	e, err := NewIPFIX(IPFIXConfig{MaxMessageSize: 1400, Writer: MessageWriterFunc(func(m []byte) error {
		msgs = append(msgs, append([]byte(nil), m...))
		return nil
	})})
	if err != nil {
		b.Fatal(err)
	}
	flows := randomFlows(256, 2)
	_ = e.Export(flows) // with templates
	msgs = msgs[:0]
	_ = e.Export(flows)
	for _, mode := range []string{"write", "sendmmsg", "gso"} {
		b.Run(mode, func(b *testing.B) {
			l := drainUDP(b)
			cfg := UDPConfig{Address: l.LocalAddr().String(), Batch: DefaultUDPBatch, NoGSO: mode == "sendmmsg"}
			if mode == "write" {
				cfg.Batch = 0
			}
			u, err := NewUDPWriter(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				for _, m := range msgs {
					if err := u.WriteMessage(m); err != nil {
						b.Fatal(err)
					}
				}
				if err := u.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(msgs)), "datagrams/op")
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()*1e6/float64(b.N), "cpu-µs/op")
		})
	}
}
