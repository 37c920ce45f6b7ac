package main

import (
	"io"
	"log/slog"

	"github.com/hostflow/hostflow/internal/config"
)

// newLogger returns the daemon's logger: text or JSON on w, at a level
// SIGHUP can change.
func newLogger(format config.LogFormat, level *slog.LevelVar, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
