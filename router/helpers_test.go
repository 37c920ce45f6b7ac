package router

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func syscallErr(name string) error {
	m := map[string]unix.Errno{"ENETUNREACH": unix.ENETUNREACH, "EINVAL": unix.EINVAL, "EHOSTUNREACH": unix.EHOSTUNREACH, "EACCES": unix.EACCES, "ENODEV": unix.ENODEV}
	return fmt.Errorf("route get: %w", m[name])
}
