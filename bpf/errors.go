package bpf

import (
	"errors"
	"fmt"
)

// ErrNotAttached is returned when detaching an interface hostflow has no
// programs on.
var ErrNotAttached = errors.New("interface not attached")

// ErrAlreadyAttached is returned when attaching an interface twice.
var ErrAlreadyAttached = errors.New("interface already attached")

// AttachError tells which interface and hook an attach or detach failed on.
type AttachError struct {
	Interface string
	Index     int
	Hook      string // "ingress", "egress", or "drop counter" (router mode)
	Mode      AttachMode
	Err       error
}

func (e *AttachError) Error() string {
	return fmt.Sprintf("attach %s %s (ifindex %d) via %s: %v", e.Hook, e.Interface, e.Index, e.Mode, e.Err)
}

func (e *AttachError) Unwrap() error { return e.Err }
