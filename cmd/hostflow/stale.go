package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hostflow/hostflow/bpf"
	"golang.org/x/sys/unix"
)

// lockState takes an exclusive lock in the state directory and, holding
// it, removes what a killed hostflow left behind (cls_bpf filters and
// clsact qdiscs; tcx links die with their process). Another hostflow
// holding the lock is running: then nothing is removed. The returned
// function releases the lock; it is a no-op when none was taken.
func lockState(dir string, log *slog.Logger) func() {
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("state directory: stale clsact filters are not cleaned up", "dir", dir, "err", err)
		return func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		log.Warn("state directory: stale clsact filters are not cleaned up", "dir", dir, "err", err)
		return func() {}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		log.Info("another hostflow uses the state directory: not cleaning up stale filters", "dir", dir)
		return func() {}
	}
	n, err := bpf.CleanupStale(dir)
	if err != nil {
		log.Warn("clean up stale filters", "err", fmt.Errorf("cleanup stale: %w", err))
	}
	if n > 0 {
		log.Info("removed filters and qdiscs left by a previous hostflow", "count", n)
	}
	return func() { f.Close() }
}
