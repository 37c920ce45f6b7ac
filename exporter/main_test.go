package exporter

import (
	"testing"

	"github.com/hostflow/hostflow/internal/testutil"
)

// TestMain runs the package's tests in a network namespace of their own,
// so that what they open on 127.0.0.1, [::1] and localhost stays off the
// host's network.
func TestMain(m *testing.M) { testutil.RunInPrivateNetns(m) }
