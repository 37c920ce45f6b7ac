package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/ifaces"
	"github.com/hostflow/hostflow/internal/config"
	"github.com/vishvananda/netlink"
)

// TestReloadFollowsLinksAgain: when the link subscription ends, new links
// are not attached until a reload; the reload subscribes again.
func TestReloadFollowsLinksAgain(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hostflow.yaml")
	// Rules that select no link: the test subscribes in the namespace it
	// runs in and must attach nothing there (the source is a stand-in).
	if err := os.WriteFile(file, []byte("interfaces: [\"/^hf-never-such-link$/\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", file}
	cfg, err := config.Load(args, "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	d := &daemon{args: args, stdout: &bytes.Buffer{}, log: log, level: new(slog.LevelVar), cfg: cfg, fetcher: newFakeFetcher(t)}
	if d.sinks, _, _, err = buildSinks(cfg, nil, d.sinkEnv()); err != nil {
		t.Fatal(err)
	}
	d.links = ifaces.NewManager(d.fetcher, cfg.Rules(), log)

	var mu sync.Mutex
	subscriptions := 0
	d.links.SetSubscribe(func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, _ netlink.LinkSubscribeOptions) error {
		mu.Lock()
		defer mu.Unlock()
		subscriptions++
		if subscriptions == 1 {
			close(ch) // the first subscription dies at once
		}
		return nil // the next ones last until done
	})
	d.followLinks()
	select {
	case <-d.linksDone:
	case <-time.After(5 * time.Second):
		t.Fatal("link following did not stop when its subscription ended")
	}

	d.reload()
	t.Cleanup(func() {
		d.stopLinks()
		<-d.linksDone
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return subscriptions
	}
	for deadline := time.Now().Add(5 * time.Second); count() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := count(); n != 2 {
		t.Errorf("%d subscriptions after the reload, want 2", n)
	}
	select {
	case <-d.linksDone:
		t.Error("link following stopped again")
	default:
	}
	if d.reloads.Success != 1 {
		t.Errorf("reloads %+v, want one success", d.reloads)
	}
}
