package integration

import (
	"testing"

	"github.com/hostflow/hostflow/internal/testutil"
)

// TestMain runs the package's tests in a network namespace of their own.
// Most of their traffic already goes through namespaces they create (ip
// netns exec); this covers what they open directly, such as the stream
// exports to collectors on 127.0.0.1.
func TestMain(m *testing.M) { testutil.RunInPrivateNetns(m) }
