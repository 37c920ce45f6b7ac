package exporter

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

// bindNetns is a namespace whose loopback also holds 198.18.5.2 and
// fd00::5:2: a second address to send from, not the one the kernel picks.
func bindNetns(t *testing.T) *testutil.Netns {
	t.Helper()
	ns := testutil.NewNetnsNamed(t, "hf-bindtest-")
	ns.IP(t, "addr", "add", "198.18.5.2/32", "dev", "lo")
	ns.IP(t, "-6", "addr", "add", "fd00::5:2/128", "dev", "lo", "nodad")
	return ns
}

// TestBindSourceAddress: every transport sends from Bind.SourceAddress,
// in both families: the collector's recvfrom and accept see it.
func TestBindSourceAddress(t *testing.T) {
	ns := bindNetns(t)
	for _, tc := range []struct {
		name, listen, src string
	}{
		{"ipv4", "127.0.0.1", "198.18.5.2"},
		{"ipv6", "::1", "fd00::5:2"},
	} {
		src := netip.MustParseAddr(tc.src)
		bind := Bind{SourceAddress: src}
		for _, batch := range []int{0, 8} {
			t.Run(tc.name+"/udp/batch"+string(rune('0'+batch)), func(t *testing.T) {
				var got netip.Addr
				if err := ns.Do(func() error {
					l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.listen), 0)))
					if err != nil {
						return err
					}
					defer l.Close()
					u, err := NewUDPWriter(UDPConfig{Address: l.LocalAddr().String(), Batch: batch, Bind: bind})
					if err != nil {
						return err
					}
					defer u.Close()
					if err := u.WriteMessage([]byte("hello")); err != nil {
						return err
					}
					if err := u.Flush(); err != nil {
						return err
					}
					l.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, from, err := l.ReadFromUDPAddrPort(make([]byte, 64))
					got = from.Addr().Unmap()
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if got != src {
					t.Errorf("datagram from %s, want %s", got, src)
				}
			})
		}
		t.Run(tc.name+"/tcp", func(t *testing.T) {
			var got netip.Addr
			if err := ns.Do(func() error {
				l, err := net.Listen("tcp", net.JoinHostPort(tc.listen, "0"))
				if err != nil {
					return err
				}
				defer l.Close()
				tr, err := NewStreamTransport(StreamConfig{Address: l.Addr().String(), Bind: bind})
				if err != nil {
					return err
				}
				defer tr.Close()
				if err := tr.WriteMessage([]byte("hello")); err != nil {
					return err
				}
				c, err := l.Accept()
				if err != nil {
					return err
				}
				defer c.Close()
				got = c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if got != src {
				t.Errorf("connection from %s, want %s", got, src)
			}
		})
	}
}

// TestBindErrors: a source address of the other family, or a device that
// does not exist, is an error when the transport is made, naming both.
func TestBindErrors(t *testing.T) {
	v6 := Bind{SourceAddress: netip.MustParseAddr("fd00::5:2")}
	if _, err := NewUDPWriter(UDPConfig{Address: "127.0.0.1:4739", Bind: v6}); err == nil || !strings.Contains(err.Error(), "another address family") {
		t.Errorf("udp, v6 source to v4 collector: %v", err)
	}
	if _, err := NewStreamTransport(StreamConfig{Address: "127.0.0.1:4739", Bind: v6}); err == nil || !strings.Contains(err.Error(), "another address family") {
		t.Errorf("tcp, v6 source to v4 collector: %v", err)
	}
	v4 := Bind{SourceAddress: netip.MustParseAddr("198.18.5.2")}
	if _, err := NewStreamTransport(StreamConfig{Address: "[::1]:4739", Bind: v4}); err == nil || !strings.Contains(err.Error(), "another address family") {
		t.Errorf("tcp, v4 source to v6 collector: %v", err)
	}
	missing := Bind{Device: "hf-no-such0"}
	if err := missing.Check(); err == nil || !strings.Contains(err.Error(), `"hf-no-such0"`) {
		t.Errorf("Check of a missing device: %v", err)
	}
	if _, err := NewUDPWriter(UDPConfig{Address: "127.0.0.1:4739", Bind: missing}); err == nil || !strings.Contains(err.Error(), "hf-no-such0") {
		t.Errorf("udp through a missing device: %v", err)
	}
}

// TestBindDevice: with Bind.Device the socket sends through that device
// even where no route leads there. The exporter's end of a veth has a /32
// address and no route to the collector: unbound, the dial fails; bound to
// the veth (SO_BINDTODEVICE), the datagram and the connection go through
// it. A VRF is the same option with a device whose table holds the routes
// (integration.TestExportVRF).
func TestBindDevice(t *testing.T) {
	p := testutil.NewVethPair(t)
	p.A.IP(t, "addr", "flush", "dev", p.NameA)
	p.A.IP(t, "addr", "add", "198.18.9.1/32", "dev", p.NameA)
	p.B.IP(t, "addr", "add", "198.18.9.2/24", "dev", p.NameB)
	const collector = "198.18.9.2"

	var ul *net.UDPConn
	var tl net.Listener
	if err := p.B.Do(func() (err error) {
		if ul, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(collector)}); err != nil {
			return err
		}
		tl, err = net.Listen("tcp", collector+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	defer tl.Close()

	bound := Bind{Device: p.NameA}
	err := p.A.Do(func() error {
		if _, err := NewUDPWriter(UDPConfig{Address: ul.LocalAddr().String()}); err == nil {
			t.Error("unbound: the collector is reachable without the device; the test proves nothing")
		}
		u, err := NewUDPWriter(UDPConfig{Address: ul.LocalAddr().String(), Bind: bound})
		if err != nil {
			return err
		}
		defer u.Close()
		if err := u.WriteMessage([]byte("hello")); err != nil {
			return err
		}
		tr, err := NewStreamTransport(StreamConfig{Address: tl.Addr().String(), Bind: bound, DialTimeout: 5 * time.Second})
		if err != nil {
			return err
		}
		defer tr.Close()
		return tr.WriteMessage([]byte("hello"))
	})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, from, err := ul.ReadFromUDPAddrPort(make([]byte, 64)); err != nil || from.Addr().String() != "198.18.9.1" {
		t.Errorf("udp: from %v, %v", from, err)
	}
	tl.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
