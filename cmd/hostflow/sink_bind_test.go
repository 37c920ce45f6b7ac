package main

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestBuildSinksBind: a reload that changes source_address, vrf or
// interface_index rebuilds the collectors (new sockets); one that changes
// none reuses them; a vrf that does not exist fails the build, naming it.
func TestBuildSinksBind(t *testing.T) {
	env := sinkEnv{stdout: &bytes.Buffer{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	col := "ipfix+udp://127.0.0.1:47394"
	first, _, _, err := buildSinks(sinkConfig(t, "--collector", col), nil, env)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { first.Close() }()
	same, _, created, err := buildSinks(sinkConfig(t, "--collector", col), first, env)
	if err != nil || len(created) != 0 || same[0] != first[0] {
		t.Fatalf("unchanged: created %v, %v", urls(created), err)
	}
	for _, args := range [][]string{
		{"--source-address", "127.0.0.1"},
		{"--interface-index", "lo=100"},
	} {
		next, unused, created, err := buildSinks(sinkConfig(t, append([]string{"--collector", col}, args...)...), first, env)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if len(created) != 1 || len(unused) != 1 || next[0] == first[0] {
			t.Errorf("%v: created %v unused %v: the collector was not rebuilt", args, urls(created), urls(unused))
		}
		created.Close()
	}
	_, _, _, err = buildSinks(sinkConfig(t, "--collector", col, "--vrf", "hf-novrf0"), first, env)
	if err == nil || !strings.Contains(err.Error(), "vrf") || !strings.Contains(err.Error(), `"hf-novrf0"`) {
		t.Errorf("missing vrf: %v", err)
	}
}
