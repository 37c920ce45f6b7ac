package bpf

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/hostflow/hostflow/internal/testutil"
)

// kernelWithoutConntrack returns the running kernel's BTF as a kernel
// built without conntrack has it: struct sk_buff without _nfct.
func kernelWithoutConntrack(t *testing.T) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	var skb *btf.Struct
	if err := spec.TypeByName("sk_buff", &skb); err != nil {
		t.Fatal(err)
	}
	n := len(skb.Members)
	skb.Members = removeMember(skb.Members, "_nfct")
	if len(skb.Members) == n {
		t.Fatal("struct sk_buff has no _nfct member to remove")
	}
	return spec
}

func removeMember(ms []btf.Member, name string) []btf.Member {
	var out []btf.Member
	for _, m := range ms {
		if m.Name != name {
			out = append(out, m)
		}
	}
	return out
}

// TestFateLoadsWithoutConntrack: the router-mode programs relocated
// against a kernel without conntrack (no skb->_nfct) still load; they
// only cannot recover pre-NAT tuples.
func TestFateLoadsWithoutConntrack(t *testing.T) {
	testutil.RequireBPF(t)
	kernel := kernelWithoutConntrack(t)
	cfg, err := FetcherOptions{Ingress: true, KernelMapSize: 256, Fate: true}.config()
	if err != nil {
		t.Fatal(err)
	}
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}

	tc, err := LoadNet()
	if err != nil {
		t.Fatal(err)
	}
	if tc, err = configure(tc, 0, 256, cfg); err != nil {
		t.Fatal(err)
	}
	var objs NetObjects
	if err := tc.LoadAndAssign(&objs, opts); err != nil {
		t.Errorf("TC programs in router mode without conntrack: %v", err)
	} else {
		_ = objs.Close()
	}

	drop, err := LoadNetFate()
	if err != nil {
		t.Fatal(err)
	}
	if drop, err = configure(drop, 0, 256, cfg); err != nil {
		t.Fatal(err)
	}
	var fobjs NetFateObjects
	if err := drop.LoadAndAssign(&fobjs, opts); err != nil {
		t.Errorf("drop counter without conntrack: %v", err)
	} else {
		_ = fobjs.Close()
	}
}

// specOf builds a BTF spec of types.
func specOf(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestFateNATTypes: NAT recovery needs skb->_nfct (possibly in an
// anonymous member) and struct nf_conn, in vmlinux or a loaded module.
func TestFateNATTypes(t *testing.T) {
	ulong := &btf.Int{Name: "unsigned long", Size: 8}
	skb := func(ms ...btf.Member) *btf.Struct {
		return &btf.Struct{Name: "sk_buff", Size: 16, Members: append([]btf.Member{{Name: "len", Type: ulong}}, ms...)}
	}
	nfct := btf.Member{Name: "_nfct", Type: ulong, Offset: 64}
	anon := btf.Member{Type: &btf.Union{Size: 8, Members: []btf.Member{{Name: "_nfct", Type: ulong}}}, Offset: 64}
	conn := &btf.Struct{Name: "nf_conn", Size: 8, Members: []btf.Member{{Name: "x", Type: ulong}}}
	for _, tc := range []struct {
		name    string
		kernel  *btf.Spec
		modules []*btf.Spec
		want    bool
	}{
		{"built in", specOf(t, skb(nfct), conn), nil, true},
		{"in an anonymous union", specOf(t, skb(anon), conn), nil, true},
		{"module loaded", specOf(t, skb(nfct)), []*btf.Spec{specOf(t, ulong), specOf(t, conn)}, true},
		{"module not loaded", specOf(t, skb(nfct)), []*btf.Spec{specOf(t, ulong)}, false},
		{"no conntrack", specOf(t, skb()), nil, false},
		{"nf_conn without _nfct", specOf(t, skb(), conn), nil, false},
	} {
		if got := fateNATTypes(tc.kernel, tc.modules); got != tc.want {
			t.Errorf("%s: fateNATTypes = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The running kernel's BTF, _nfct removed.
	if fateNATTypes(kernelWithoutConntrack(t), nil) {
		t.Error("fateNATTypes true for a kernel whose sk_buff has no _nfct")
	}
}
