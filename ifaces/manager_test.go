package ifaces

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// recorder is an Attacher that records what it is asked.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) Attach(idx int, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "attach "+name)
	return nil
}

func (r *recorder) AttachHooks(idx int, name string, ingress, egress bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("attach %s in=%v out=%v", name, ingress, egress))
	return nil
}

func (r *recorder) SetHooks(idx int, ingress, egress bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("hooks %d in=%v out=%v", idx, ingress, egress))
	return nil
}

func (r *recorder) Hooks() (bool, bool) { return true, true }

func (r *recorder) Detach(idx int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("detach %d", idx))
	return nil
}

func (r *recorder) has(call string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.calls, call)
}

// waitFor waits until the recorder saw call, bounded in time.
func (r *recorder) waitFor(t *testing.T, call string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r.has(call) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("no %q in %q", call, r.calls)
}

// TestManagerFollowsLinks runs a Manager in a test namespace and changes
// links under it: new links that match are attached, renamed and removed
// ones are released, and new rules apply at once.
func TestManagerFollowsLinks(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.IP(t, "link", "add", "hft0", "type", "veth", "peer", "name", "other0")
	rules, err := ParseRules([]string{`/^hft\d+$/`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	m := NewManager(rec, rules, slog.New(slog.DiscardHandler))
	if err := ns.Do(m.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !rec.has("attach hft0") || rec.has("attach other0") {
		t.Fatalf("after Start: %q", rec.calls)
	}
	idx0 := indexOf(t, m, "hft0")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return m.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	ns.IP(t, "link", "add", "hft1", "type", "veth", "peer", "name", "other1")
	rec.waitFor(t, "attach hft1")
	idx1 := indexOf(t, m, "hft1")

	ns.IP(t, "link", "set", "hft1", "name", "zzz1")
	rec.waitFor(t, fmt.Sprintf("detach %d", idx1))

	ns.IP(t, "link", "del", "hft0")
	rec.waitFor(t, fmt.Sprintf("detach %d", idx0))

	zzz, _ := ParseRules([]string{"zzz1"}, nil)
	if err := m.SetRules(zzz); err != nil {
		t.Fatalf("SetRules: %v", err)
	}
	if !rec.has("attach zzz1") {
		t.Fatalf("after SetRules: %q", rec.calls)
	}
	if st := m.States(); len(st) != 1 || !st[idx1].Attached || st[idx1].Name != "zzz1" {
		t.Errorf("States() = %+v", st)
	}
	if err := m.DetachAll(); err != nil || len(m.States()) != 0 {
		t.Errorf("DetachAll: %v, states %+v", err, m.States())
	}
}

// TestManagerStartWarns: a named link that does not exist yet, or rules
// that select nothing yet, are no error at start but warnings; the link is
// attached when it appears.
func TestManagerStartWarns(t *testing.T) {
	for _, tc := range []struct {
		include []string
		warn    []string
	}{
		{[]string{"hft0"}, []string{`msg="interface does not exist yet: attached when it appears" interface=hft0`, "no interface selected yet"}},
		{[]string{"/^hft/"}, []string{"no interface selected yet", "rules=/^hft/"}},
	} {
		t.Run(tc.include[0], func(t *testing.T) {
			ns := testutil.NewNetns(t)
			rules, _ := ParseRules(tc.include, nil)
			var logs bytes.Buffer
			rec := &recorder{}
			m := NewManager(rec, rules, slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)))
			if err := ns.Do(m.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			for _, w := range tc.warn {
				if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks a warning with %q:\n%s", w, logs.String())
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- ns.Do(func() error { return m.Run(ctx) }) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			ns.IP(t, "link", "add", "hft0", "type", "veth", "peer", "name", "other0")
			rec.waitFor(t, "attach hft0")
		})
	}
}

// syncWriter serialises writes of the manager's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func indexOf(t *testing.T, m *Manager, name string) int {
	t.Helper()
	for _, l := range m.Links() {
		if l.Name == name {
			return l.Index
		}
	}
	t.Fatalf("no link %s", name)
	return 0
}

// TestManagerDirections: a rule's direction picks the hooks, and a reload
// that changes it changes the hooks in place, never detaching the link.
func TestManagerDirections(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.IP(t, "link", "add", "hft0", "type", "veth", "peer", "name", "hft1")
	rules, _ := ParseRules([]string{"hft0:ingress", "hft1"}, nil)
	rec := &recorder{}
	m := NewManager(rec, rules, slog.New(slog.DiscardHandler))
	if err := ns.Do(m.Start); err != nil {
		t.Fatal(err)
	}
	if !rec.has("attach hft0 in=true out=false") || !rec.has("attach hft1") {
		t.Fatalf("calls %q", rec.calls)
	}
	idx0 := indexOf(t, m, "hft0")
	both, _ := ParseRules([]string{"hft0:both", "hft1"}, nil)
	if err := ns.Do(func() error { return m.SetRules(both) }); err != nil {
		t.Fatal(err)
	}
	if rec.has(fmt.Sprintf("detach %d", idx0)) || !rec.has(fmt.Sprintf("hooks %d in=true out=true", idx0)) {
		t.Fatalf("calls %q", rec.calls)
	}
	// hft1 goes from the default (both here) to both: no change at all.
	n := len(rec.calls)
	bothBoth, _ := ParseRules([]string{"hft0:both", "hft1:both"}, nil)
	if err := ns.Do(func() error { return m.SetRules(bothBoth) }); err != nil {
		t.Fatal(err)
	}
	if len(rec.calls) != n {
		t.Fatalf("calls after a change to the same hooks: %q", rec.calls[n:])
	}
}

// TestManagerRunReleasesLinksGoneMeanwhile: a link removed while no
// subscription ran (before Run, or between a Run that ended and the next)
// is released when Run starts: the list it takes prunes what is gone.
func TestManagerRunReleasesLinksGoneMeanwhile(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.IP(t, "link", "add", "hft0", "type", "veth", "peer", "name", "other0")
	ns.IP(t, "link", "add", "hft1", "type", "veth", "peer", "name", "other1")
	rules, _ := ParseRules([]string{`/^hft\d$/`}, nil)
	rec := &recorder{}
	m := NewManager(rec, rules, slog.New(slog.DiscardHandler))
	if err := ns.Do(m.Start); err != nil {
		t.Fatal(err)
	}
	idx0, idx1 := indexOf(t, m, "hft0"), indexOf(t, m, "hft1")
	ns.IP(t, "link", "del", "hft0")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return m.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	rec.waitFor(t, fmt.Sprintf("detach %d", idx0))
	if rec.has(fmt.Sprintf("detach %d", idx1)) {
		t.Errorf("hft1 released too: %q", rec.calls)
	}
	for _, l := range m.Links() {
		if l.Index == idx0 {
			t.Errorf("hft0 still known: %+v", m.Links())
		}
	}
	if st := m.States(); len(st) != 1 || !st[idx1].Attached {
		t.Errorf("States() = %+v", st)
	}
}

// TestManagerRunSubscriptionEnds: a subscription that fails or whose
// channel closes ends Run with an error, and Run can be called again.
func TestManagerRunSubscriptionEnds(t *testing.T) {
	ns := testutil.NewNetns(t)
	rules, _ := ParseRules([]string{`/^hft/`}, nil)
	m := NewManager(&recorder{}, rules, slog.New(slog.DiscardHandler))
	calls := 0
	m.SetSubscribe(func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, _ netlink.LinkSubscribeOptions) error {
		calls++
		if calls == 1 {
			return errors.New("no netlink socket")
		}
		close(ch)
		return nil
	})
	for i, want := range []string{"no netlink socket", "subscription closed"} {
		err := ns.Do(func() error { return m.Run(context.Background()) })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run %d: %v, want an error with %q", i+1, err, want)
		}
	}
	if calls != 2 {
		t.Errorf("%d subscriptions, want 2", calls)
	}
}

// TestManagerFollowsMasters: the default selection of a port depends on its
// master. A physical link is captured until a bond that enslaves it
// appears (then the bond is, not the link), and a veth is released when it
// becomes a bridge port.
func TestManagerFollowsMasters(t *testing.T) {
	rec := &recorder{}
	m := NewManager(rec, Rules{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	up := netlink.LinkAttrs{Flags: net.FlagUp}
	attrs := func(idx, master int, name string) netlink.LinkAttrs {
		a := up
		a.Index, a.MasterIndex, a.Name = idx, master, name
		return a
	}
	newLink := func(l netlink.Link) {
		m.handle(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l})
	}
	newLink(&netlink.Device{LinkAttrs: attrs(5, 50, "eth5")})
	newLink(&netlink.Veth{LinkAttrs: attrs(6, 0, "veth6")})
	newLink(&netlink.Bond{LinkAttrs: attrs(50, 0, "bond5")})
	newLink(&netlink.Bridge{LinkAttrs: attrs(60, 0, "br6")})
	newLink(&netlink.Veth{LinkAttrs: attrs(6, 60, "veth6")})
	want := []string{"attach eth5", "attach veth6", "attach bond5", "detach 5", "detach 6"}
	if !slices.Equal(rec.calls, want) {
		t.Errorf("calls %q, want %q", rec.calls, want)
	}
	if st := m.States(); len(st) != 1 || !st[50].Attached {
		t.Errorf("states %v: want bond5 alone", st)
	}
}
