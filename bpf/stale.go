package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// A hostflow killed with SIGKILL cannot detach. Its tcx links die with its
// file descriptors, so nothing stays behind on tcx; cls_bpf filters and a
// clsact qdisc it created stay in the kernel, keeping the dead process's
// programs and maps alive. CleanupStale finds and removes them at the next
// start. Filters are recognised by hostflow's own handle, priority and name;
// a clsact qdisc is removed only if hostflow recorded creating it (a file in
// the state directory) and no filter is left on it.

// DefaultStateDir is where the daemon records the clsact qdiscs it created
// (systemd: RuntimeDirectory=hostflow).
const DefaultStateDir = "/run/hostflow"

func qdiscRecord(dir string, ifindex int) string {
	return filepath.Join(dir, "clsact-"+strconv.Itoa(ifindex))
}

// recordQdisc notes that hostflow created the clsact qdisc of ifindex.
func recordQdisc(dir string, ifindex int, name string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return os.WriteFile(qdiscRecord(dir, ifindex), []byte(name+"\n"), 0o644)
}

func forgetQdisc(dir string, ifindex int) {
	if dir != "" {
		_ = os.Remove(qdiscRecord(dir, ifindex))
	}
}

// isOurFilter reports whether f is a cls_bpf filter hostflow adds.
func isOurFilter(f netlink.Filter) bool {
	bf, ok := f.(*netlink.BpfFilter)
	if !ok {
		return false
	}
	a := bf.Attrs()
	return a.Handle == filterHandle && a.Priority == filterPriority && strings.HasPrefix(bf.Name, "hostflow_")
}

// CleanupStale removes the cls_bpf filters a killed hostflow left on the
// links of the calling thread's network namespace, and the clsact qdiscs it
// recorded creating in stateDir once they hold no filter. Call it before
// loading, never while another hostflow runs in the same namespace. It
// returns how many filters and qdiscs it removed.
func CleanupStale(stateDir string) (int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	removed := 0
	var errs []error
	for _, l := range links {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, err := netlink.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc on this link
			}
			for _, f := range filters {
				if !isOurFilter(f) {
					continue
				}
				if err := netlink.FilterDel(f); err != nil {
					errs = append(errs, fmt.Errorf("delete stale filter on %s: %w", l.Attrs().Name, err))
					continue
				}
				removed++
			}
		}
	}
	if stateDir == "" {
		return removed, errors.Join(errs...)
	}
	records, _ := filepath.Glob(filepath.Join(stateDir, "clsact-*"))
	for _, r := range records {
		idx, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(r), "clsact-"))
		if err != nil {
			continue
		}
		if _, err := netlink.LinkByIndex(idx); err == nil {
			had := hasClsact(idx)
			if err := releaseClsact(idx); err != nil {
				errs = append(errs, err)
				continue
			}
			if had && !hasClsact(idx) {
				removed++
			}
		}
		_ = os.Remove(r)
	}
	return removed, errors.Join(errs...)
}

// hasClsact reports whether ifindex has a clsact qdisc.
func hasClsact(ifindex int) bool {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return false
	}
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true
		}
	}
	return false
}
