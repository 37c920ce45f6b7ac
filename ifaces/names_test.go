package ifaces

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

// TestManagerName: Name answers from the manager's view of the links and
// follows renames and removals, selected links or not.
func TestManagerName(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.IP(t, "link", "add", "hfn0", "type", "veth", "peer", "name", "other0")
	rules, err := ParseRules([]string{"hfn0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(&recorder{}, rules, slog.New(slog.DiscardHandler))
	if err := ns.Do(m.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	idx := indexOf(t, m, "hfn0")
	peer := indexOf(t, m, "other0")
	if got := m.Name(idx); got != "hfn0" {
		t.Errorf("Name(%d) = %q, want hfn0", idx, got)
	}
	if got := m.Name(peer); got != "other0" {
		t.Errorf("Name(%d) = %q, want other0 (known, not selected)", peer, got)
	}
	if got := m.Name(99999); got != "" {
		t.Errorf("Name(99999) = %q, want empty", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return m.Run(ctx) }) }()
	t.Cleanup(func() { cancel(); <-done })

	ns.IP(t, "link", "set", "other0", "name", "renamed0")
	waitName(t, m, peer, "renamed0")
	ns.IP(t, "link", "del", "hfn0") // takes its peer along
	waitName(t, m, idx, "")
	waitName(t, m, peer, "")
}

func waitName(t *testing.T, m *Manager, idx int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.Name(idx) != want {
		if time.Now().After(deadline) {
			t.Fatalf("Name(%d) = %q, want %q", idx, m.Name(idx), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
