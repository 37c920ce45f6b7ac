// Command hostflow captures every packet's flow with eBPF on the host's
// interfaces and exports flow records as IPFIX to collectors, or as JSON
// lines on stdout when no collector is given. It runs as a systemd service:
// SIGHUP reloads the configuration, SIGTERM detaches and flushes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hostflow/hostflow/internal/config"
)

func main() {
	// SIGHUP is caught from the start: its default action would kill the
	// daemon before the loop listens for it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], hup, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostflow:", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
