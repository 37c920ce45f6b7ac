package testutil

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WriteUDPPcap writes msgs as the payloads of IPv4 UDP packets from src to
// dst (IPv4 addresses), one Ethernet frame each, a second apart from first,
// in a classic pcap file in tb.TempDir, and returns its path: what tshark
// and the collectors' pcap readers take. The UDP checksums are 0 (none),
// which IPv4 allows.
func WriteUDPPcap(tb testing.TB, msgs [][]byte, src, dst netip.AddrPort, first time.Time) string {
	tb.Helper()
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		tb.Fatalf("WriteUDPPcap: %v -> %v: IPv4 only", src, dst)
	}
	be, le := binary.BigEndian, binary.LittleEndian
	var b []byte
	// Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
	b = le.AppendUint32(b, 0xa1b2c3d4)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 262144)
	b = le.AppendUint32(b, 1)
	for i, msg := range msgs {
		var p []byte
		p = append(p, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1) // dst, src MAC
		p = be.AppendUint16(p, 0x0800)
		ip := len(p)
		p = append(p, 0x45, 0)
		p = be.AppendUint16(p, uint16(20+8+len(msg)))
		p = be.AppendUint16(p, uint16(i)) // id
		p = be.AppendUint16(p, 0x4000)    // DF
		p = append(p, 64, 17, 0, 0)       // TTL, UDP, checksum
		p = append(p, src.Addr().AsSlice()...)
		p = append(p, dst.Addr().AsSlice()...)
		var sum uint32
		for j := ip; j < ip+20; j += 2 {
			sum += uint32(be.Uint16(p[j:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		be.PutUint16(p[ip+10:], ^uint16(sum))
		p = be.AppendUint16(p, src.Port())
		p = be.AppendUint16(p, dst.Port())
		p = be.AppendUint16(p, uint16(8+len(msg)))
		p = be.AppendUint16(p, 0) // no UDP checksum
		p = append(p, msg...)
		b = le.AppendUint32(b, uint32(first.Unix())+uint32(i))
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, uint32(len(p)))
		b = le.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	path := filepath.Join(tb.TempDir(), "udp.pcap")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}
