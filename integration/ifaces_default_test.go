package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// containerHost is a container host in three namespaces: host has a
// bridge hfbr0 (198.18.1.1/24) with the veth hfc0 as port, whose peer hfc1
// is the container's interface (198.18.1.2, default route via the bridge),
// and an uplink veth hfu0 (198.18.2.1/24) to outside's hfu1 (198.18.2.2),
// the world, which routes the container's subnet back through the host.
type containerHost struct {
	host, ctr, out *namespace
	br, port, up   int // ifindexes in host
}

func newContainerHost(t *testing.T) *containerHost {
	t.Helper()
	c := &containerHost{host: newNamespace(t, "hf-ifh"), ctr: newNamespace(t, "hf-ifc"), out: newNamespace(t, "hf-ifo")}
	h := c.host
	h.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	h.run(t, "ip", "link", "add", "hfbr0", "type", "bridge")
	sh(t, "ip", "link", "add", "hfc0", "netns", h.name, "type", "veth", "peer", "name", "hfc1", "netns", c.ctr.name)
	sh(t, "ip", "link", "add", "hfu0", "netns", h.name, "type", "veth", "peer", "name", "hfu1", "netns", c.out.name)
	h.run(t, "ip", "link", "set", "hfc0", "master", "hfbr0")
	for _, l := range []struct {
		ns       *namespace
		dev, adr string
	}{{h, "hfbr0", "198.18.1.1/24"}, {h, "hfc0", ""}, {h, "hfu0", "198.18.2.1/24"}, {c.ctr, "hfc1", "198.18.1.2/24"}, {c.out, "hfu1", "198.18.2.2/24"}} {
		if l.dev != "hfbr0" {
			l.ns.run(t, "ethtool", "-K", l.dev, "tso", "off", "gso", "off", "gro", "off")
		}
		l.ns.run(t, "sysctl", "-qw", "net.ipv6.conf."+l.dev+".disable_ipv6=1")
		if l.adr != "" {
			l.ns.run(t, "ip", "addr", "add", l.adr, "dev", l.dev)
		}
		l.ns.run(t, "ip", "link", "set", l.dev, "up")
	}
	c.ctr.run(t, "ip", "route", "add", "default", "via", "198.18.1.1")
	c.out.run(t, "ip", "route", "add", "198.18.1.0/24", "via", "198.18.2.1")
	// Neighbours resolved before hostflow starts: no ARP queueing.
	c.ctr.run(t, "ping", "-c", "1", "-W", "2", "198.18.2.2")
	c.br, c.port, c.up = ifindex(t, h, "hfbr0"), ifindex(t, h, "hfc0"), ifindex(t, h, "hfu0")
	return c
}

// send sends n UDP datagrams from the container to the outside and waits
// until the outside received them all. It returns the sender's port.
func (c *containerHost) send(t *testing.T, n int) int {
	t.Helper()
	var ln *net.UDPConn
	c.out.do(t, func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("198.18.2.2")})
		return err
	})
	defer ln.Close()
	var conn *net.UDPConn
	c.ctr.do(t, func() (err error) {
		conn, err = net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
		return err
	})
	defer conn.Close()
	buf := make([]byte, 100)
	for i := range n {
		if _, err := conn.Write(buf); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ln.Read(buf); err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
	}
	return conn.LocalAddr().(*net.UDPAddr).Port
}

// TestDefaultInterfacesCountOnce: a container's packet crosses its veth,
// the bridge and the uplink. The default selection exports it once (on
// the uplink in host mode, on the bridge in router mode); interfaces: [all]
// exports it at each of the three.
func TestDefaultInterfacesCountOnce(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "ping")
	bin := buildHostflow(t)
	c := newContainerHost(t)

	// check-config lists what the default captures in this namespace.
	out := c.host.run(t, bin, "check-config", "--config", "/dev/null")
	for _, re := range []string{
		fmt.Sprintf(`(?m)^# %d +hfbr0 +bridge +no +bridge: `, c.br),
		fmt.Sprintf(`(?m)^# %d +hfc0 +veth +no +veth port of hfbr0`, c.port),
		fmt.Sprintf(`(?m)^# %d +hfu0 +veth +both +veth, not a bridge port`, c.up),
		`(?m)^# 1 +lo +device +no +loopback$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("check-config lacks %s:\n%s", re, out)
		}
	}

	const n = 20
	for _, tt := range []struct {
		name string
		args []string
		want map[int]uint64 // packets by capture ifindex
	}{
		{"default", nil, map[int]uint64{c.up: n}},
		{"router default", []string{"--mode", "router"}, map[int]uint64{c.br: n}},
		{"all", []string{"--interfaces", "all"}, map[int]uint64{c.port: n, c.br: n, c.up: n}},
		{"regex", []string{"--interfaces", "/.*/"}, map[int]uint64{c.port: n, c.br: n, c.up: n}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hf := start(t, c.host.command(bin, daemonArgs(t, append([]string{"--poll-interval", "200ms"}, tt.args...)...)...))
			hf.waitOutput(t, "msg=ready", 15*time.Second)
			sport := c.send(t, n)
			time.Sleep(500 * time.Millisecond)
			hf.stop(t, 20*time.Second)

			got := map[int]uint64{}
			var sum uint64
			sc := bufio.NewScanner(strings.NewReader(hf.output.String()))
			for sc.Scan() {
				var f struct {
					jsonFlow
					Ifindex int `json:"ifindex"`
				}
				if !strings.HasPrefix(sc.Text(), "{") {
					continue
				}
				if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
					t.Fatalf("parse flow %q: %v", sc.Text(), err)
				}
				if f.Proto == 17 && f.Src == "198.18.1.2" && f.SrcPort == sport && f.Dst == "198.18.2.2" {
					got[f.Ifindex] += f.Packets
					sum += f.Packets
				}
			}
			var want uint64
			for _, v := range tt.want {
				want += v
			}
			if sum != want || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("exported %d packets by ifindex %v, want %d: %v (bridge %d, port %d, uplink %d)",
					sum, got, want, tt.want, c.br, c.port, c.up)
			}
		})
	}
}
