package ifaces

import (
	"bytes"
	"testing"
)

// TestDecide: masters are looked up among the links, hooks follow the
// rule's direction (tc) or not (socket), and the table says why.
func TestDecide(t *testing.T) {
	links := []Link{
		{Index: 5, Name: "veth1", Kind: "veth", Up: true, MasterIndex: 3},
		{Index: 1, Name: "lo", Kind: "device", Up: true, Loopback: true},
		{Index: 3, Name: "br0", Kind: "bridge", Up: true},
		{Index: 2, Name: "eth0", Kind: "device", Up: true},
		{Index: 4, Name: "wg0", Kind: "wireguard", Up: true},
	}
	r, err := ParseRules([]string{"default", "wg0:ingress"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteDecisions(&b, "# ", Decide(r, links, true, true, true)); err != nil {
		t.Fatal(err)
	}
	want := `# IFINDEX  NAME   KIND       CAPTURE  WHY
# 1        lo     device     no       loopback
# 2        eth0   device     both     physical
# 3        br0    bridge     no       bridge: counted on its wire ports and uplinks
# 4        wg0    wireguard  ingress  rule wg0:ingress
# 5        veth1  veth       no       veth port of br0: counted where it leaves or enters the host
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	ds := Decide(r.ForMode(true), links, true, false, false)
	if d := ds[2]; !d.Selected || !d.Ingress || d.Egress {
		t.Errorf("router mode br0: %+v", d)
	}
	if d := ds[3]; !d.Selected || !d.Ingress || d.Egress {
		t.Errorf("socket capture ignores wg0's direction, keeps the daemon's: %+v", d)
	}
}
