package bpf

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/hostflow/hostflow/internal/testutil"
)

var errRefused = errors.New("refused")

// fakeLink is a hook whose program is prog; the Update numbered failAt
// (counted over every fakeLink sharing calls) fails.
type fakeLink struct {
	prog   *ebpf.Program
	calls  *int
	failAt int
	given  []*ebpf.Program // every program Update was given
}

func (l *fakeLink) Update(p *ebpf.Program) error {
	*l.calls++
	l.given = append(l.given, p)
	if *l.calls == l.failAt {
		return errRefused
	}
	l.prog = p
	return nil
}

func (l *fakeLink) Close() error { return nil }

// TestSetSamplingRollsBack: when the second hook refuses the new program,
// the first gets the old one back, the rate stays and the new programs
// are closed: no hook samples at a rate the options do not announce.
func TestSetSamplingRollsBack(t *testing.T) {
	testutil.RequireBPF(t)
	f, err := NewFlowFetcher(0, 256, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	calls := 0
	in := &fakeLink{prog: f.progs.IngressFlowParse, calls: &calls, failAt: 2}
	out := &fakeLink{prog: f.progs.EgressFlowParse, calls: &calls, failAt: 2}
	f.attached[7] = &ifaceAttachment{name: "fake0", l2: true,
		links: []hookLink{{ingress: true, link: in}, {ingress: false, link: out}}}
	defer delete(f.attached, 7)

	err = f.SetSampling(10)
	if !errors.Is(err, errRefused) {
		t.Fatalf("SetSampling: %v, want the refusal", err)
	}
	if calls < 2 {
		t.Fatalf("%d updates, want the second to fail", calls)
	}
	if in.prog != f.progs.IngressFlowParse {
		t.Errorf("ingress hook holds %v, want the old program back", in.prog)
	}
	if out.prog != f.progs.EgressFlowParse {
		t.Errorf("egress hook holds %v, want the old program", out.prog)
	}
	if f.Sampling() != 0 {
		t.Errorf("sampling %d, want 0 kept", f.Sampling())
	}
	for _, p := range append(in.given, out.given...) {
		if p != f.progs.IngressFlowParse && p != f.progs.EgressFlowParse && p.FD() >= 0 {
			t.Errorf("new program %v left open", p)
		}
	}
}

// TestSockSetSamplingRollsBack is TestSetSamplingRollsBack for the
// socket filters.
func TestSockSetSamplingRollsBack(t *testing.T) {
	testutil.RequireBPF(t)
	f, err := NewSockFlowFetcher(0, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &sockAttachment{name: "fake0", l2: true, fd: -1}
	b := &sockAttachment{name: "fake1", l2: false, fd: -1}
	f.attached[7], f.attached[8] = a, b
	defer func() { delete(f.attached, 7); delete(f.attached, 8) }()
	filter := map[*sockAttachment]*ebpf.Program{a: f.progs.program(true), b: f.progs.program(false)}
	calls := 0
	defer func(prev func(*sockAttachment, *ebpf.Program) error) { setSockFilter = prev }(setSockFilter)
	setSockFilter = func(s *sockAttachment, p *ebpf.Program) error {
		calls++
		if calls == 2 {
			return errRefused
		}
		filter[s] = p
		return nil
	}

	if err := f.SetSampling(10); !errors.Is(err, errRefused) {
		t.Fatalf("SetSampling: %v, want the refusal", err)
	}
	if calls < 2 {
		t.Fatalf("%d updates, want the second to fail", calls)
	}
	for s, want := range map[*sockAttachment]*ebpf.Program{a: f.progs.program(true), b: f.progs.program(false)} {
		if filter[s] != want {
			t.Errorf("socket %s holds %v, want the old filter back", s.name, filter[s])
		}
	}
	if f.Sampling() != 0 {
		t.Errorf("sampling %d, want 0 kept", f.Sampling())
	}
}

// TestSetSamplingDrainWaits: the drain after a sampling change waits for
// the old programs still running, so it reads every packet they counted
// at the old rate.
func TestSetSamplingDrainWaits(t *testing.T) {
	testutil.RequireBPF(t)
	f, err := NewFlowFetcher(0, 256, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Drain(func(NetFlowId, []NetFlowMetrics) {}); err != nil {
		t.Fatal(err)
	}
	before := f.waits
	if err := f.SetSampling(10); err != nil {
		t.Fatal(err)
	}
	if err := f.Drain(func(NetFlowId, []NetFlowMetrics) {}); err != nil {
		t.Fatal(err)
	}
	if f.waits != before+1 {
		t.Errorf("the drain after SetSampling waited %d times, want 1", f.waits-before)
	}
}
