package ifaces

import (
	"slices"
	"testing"
)

func TestSplitList(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"eth0", []string{"eth0"}},
		{"eth0, eth1 ,", []string{"eth0", "eth1"}},
		{"/^veth/,hfp0", []string{"/^veth/", "hfp0"}},
		{"/^eth{1,2}$/,lo", []string{"/^eth{1,2}$/", "lo"}},
		{" /a,b/ ", []string{"/a,b/"}},
	} {
		if got := SplitList(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRulesMatch(t *testing.T) {
	type link struct {
		name         string
		up, loopback bool
	}
	lk := func(l link) Link { return Link{Name: l.name, Up: l.up, Loopback: l.loopback} }
	for _, tt := range []struct {
		name             string
		include, exclude []string
		in, out          []link
	}{
		{
			name: "default: up and not loopback",
			in:   []link{{"eth0", true, false}},
			out:  []link{{"lo", true, true}, {"eth1", false, false}},
		},
		{
			name:    "names and regex, down links too",
			include: []string{"hfp0", "/^veth/"},
			in:      []link{{"hfp0", false, false}, {"veth123", true, false}},
			out:     []link{{"hfp00", true, false}, {"eth0", true, false}},
		},
		{
			name:    "exclusions win",
			include: []string{"/^veth/"},
			exclude: []string{"veth2", "/^veth9/"},
			in:      []link{{"veth1", true, false}},
			out:     []link{{"veth2", true, false}, {"veth99", true, false}},
		},
		{
			name:    "exclusions on the default",
			exclude: []string{"/^docker/"},
			in:      []link{{"eth0", true, false}},
			out:     []link{{"docker0", true, false}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRules(tt.include, tt.exclude)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.in {
				if !r.Match(lk(l)) {
					t.Errorf("%+v not selected by %s", l, r)
				}
			}
			for _, l := range tt.out {
				if r.Match(lk(l)) {
					t.Errorf("%+v selected by %s", l, r)
				}
			}
		})
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, bad := range [][]string{{"/[/"}, {"/unclosed"}, {"name with space"}, {"sixteen-chars-xx"}} {
		if _, err := ParseRules(bad, nil); err == nil {
			t.Errorf("ParseRules(%q): no error", bad)
		}
	}
}

func TestRulesDirection(t *testing.T) {
	r, err := ParseRules([]string{"rc0:ingress", "/^rs/:both", "/a:b/", "eth0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Direction{"rc0": DirIngress, "rs1": DirBoth, "a:b": DirDefault, "eth0": DirDefault, "zz": DirDefault} {
		if got := r.Direction(Link{Name: name, Up: true}); got != want {
			t.Errorf("Direction(%q) = %v, want %v", name, got, want)
		}
	}
	if got := r.String(); got != "rc0:ingress,/^rs/:both,/a:b/,eth0" {
		t.Errorf("String() = %q", got)
	}
	if in, eg := DirEgress.Hooks(true, true); in || !eg {
		t.Error("DirEgress.Hooks")
	}
	if in, eg := DirDefault.Hooks(true, false); !in || eg {
		t.Error("DirDefault.Hooks keeps the default")
	}
	for _, bad := range [][2][]string{{{"eth0:sideways"}, nil}, {{"eth0"}, {"eth1:ingress"}}} {
		if _, err := ParseRules(bad[0], bad[1]); err == nil {
			t.Errorf("ParseRules(%q, %q): no error", bad[0], bad[1])
		}
	}
	if got := SplitList("/^rs/:both,rc0:ingress"); !slices.Equal(got, []string{"/^rs/:both", "rc0:ingress"}) {
		t.Errorf("SplitList = %q", got)
	}
}
