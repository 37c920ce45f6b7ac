package bpf

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestCleanupStale simulates a hostflow killed in clsact mode: its filters
// and the qdisc it created stay behind when its file descriptors close
// without Detach. CleanupStale must remove exactly those, and keep a
// foreign filter and the qdisc it sits on.
func TestCleanupStale(t *testing.T) {
	e := newVethEnv(t)
	// One state dir per namespace, as one daemon per namespace has:
	// interface indexes are per namespace.
	stateA, stateB := t.TempDir(), t.TempDir()
	foreign := loadNoop(t)

	// B: hostflow creates the qdisc; A: a foreign qdisc and filter exist.
	if err := e.hA.QdiscAdd(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: e.ifA,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}); err != nil {
		t.Fatalf("add foreign clsact: %v", err)
	}
	addForeignFilter(t, e.hA, e.ifA, foreign, netlink.HANDLE_MIN_INGRESS)
	for _, side := range []struct {
		ns    func(func() error) error
		idx   int
		name  string
		state string
	}{{e.A.Do, e.ifA, e.NameA, stateA}, {e.B.Do, e.ifB, e.NameB, stateB}} {
		f, err := NewFlowFetcher(0, 64, true, true, WithAttachMode(AttachClsact), WithStateDir(side.state))
		if err != nil {
			t.Fatal(err)
		}
		if err := side.ns(func() error { return f.Attach(side.idx, side.name) }); err != nil {
			t.Fatal(err)
		}
		// "SIGKILL": drop everything without detaching.
		f.rb.Close()
		f.progs.Close()
		f.objs.Close()
		f.graceMap.Close()
	}
	if _, err := os.Stat(filepath.Join(stateB, "clsact-"+strconv.Itoa(e.ifB))); err != nil {
		t.Fatalf("created qdisc not recorded: %v", err)
	}
	if _, err := os.Stat(filepath.Join(stateA, "clsact-"+strconv.Itoa(e.ifA))); err == nil {
		t.Fatalf("foreign qdisc recorded as hostflow's")
	}

	var removedA, removedB int
	if err := e.A.Do(func() (err error) { removedA, err = CleanupStale(stateA); return }); err != nil {
		t.Fatalf("CleanupStale in A: %v", err)
	}
	if err := e.B.Do(func() (err error) { removedB, err = CleanupStale(stateB); return }); err != nil {
		t.Fatalf("CleanupStale in B: %v", err)
	}
	// A: two filters; B: two filters and the qdisc.
	if removedA != 2 || removedB != 3 {
		t.Errorf("removed %d in A, %d in B; want 2 and 3", removedA, removedB)
	}
	checkClsact(t, "A after cleanup", readClsact(t, e.hA, e.linkA), clsactState{qdisc: true, ingress: []string{foreignFilter}})
	checkClsact(t, "B after cleanup", readClsact(t, e.hB, e.linkB), clsactState{})
	if left, _ := filepath.Glob(filepath.Join(stateB, "*")); len(left) != 0 {
		t.Errorf("state left: %v", left)
	}
}
