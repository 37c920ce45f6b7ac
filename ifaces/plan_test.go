package ifaces

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hostflow/hostflow/internal/testutil"
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

// TestPlan reads real links: a bridge, a veth port of it, a veth that is
// not a port, and a macvlan whose lower link is in another namespace.
func TestPlan(t *testing.T) {
	ns := testutil.NewNetns(t)
	other := testutil.NewNetns(t)
	ns.IP(t, "link", "add", "hfpbr", "type", "bridge")
	ns.IP(t, "link", "add", "hfpp0", "type", "veth", "peer", "name", "hfpu0")
	ns.IP(t, "link", "set", "hfpp0", "master", "hfpbr")
	other.IP(t, "link", "add", "hfpl0", "type", "veth", "peer", "name", "hfpl1")
	other.IP(t, "link", "add", "link", "hfpl0", "name", "hfpmv", "type", "macvlan", "mode", "bridge")
	other.IP(t, "link", "set", "hfpmv", "netns", ns.Name)
	for _, l := range []string{"hfpbr", "hfpp0", "hfpu0", "hfpmv"} {
		ns.IP(t, "link", "set", l, "up")
	}
	var ds []Decision
	if err := ns.Do(func() (err error) {
		ds, err = Plan(Rules{}, true, true, true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range ds {
		got[d.Name] = fmt.Sprintf("%s %v", d.Kind, d.Selected)
	}
	want := map[string]string{"lo": "device false", "hfpbr": "bridge false", "hfpp0": "veth false", "hfpu0": "veth true", "hfpmv": "macvlan true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		var b bytes.Buffer
		WriteDecisions(&b, "", ds)
		t.Errorf("got %v, want %v\n%s", got, want, b.String())
	}
}
