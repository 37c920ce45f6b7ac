package main

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// checkCapabilities fails early, naming what is missing, when the process
// cannot load and attach the eBPF programs: CAP_BPF and CAP_PERFMON (or
// CAP_SYS_ADMIN, which includes both) and CAP_NET_ADMIN.
func checkCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	eff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	has := func(c int) bool { return eff&(1<<uint(c)) != 0 }
	var missing []string
	if !has(unix.CAP_BPF) && !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(unix.CAP_PERFMON) && !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: hostflow needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON "+
			"(run it as root, or as the packaged systemd service, which grants them)", strings.Join(missing, ", "))
	}
	return nil
}
