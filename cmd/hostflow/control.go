package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/control"
)

// ctlRequest is a control command on its way to the loop goroutine, which
// owns the cache: the socket's goroutines never touch it. The loop answers
// on reply (buffered: it never waits for the asker).
type ctlRequest struct {
	command string
	reply   chan ctlReply
}

type ctlReply struct {
	flows   []control.Flow
	stats   control.Stats
	expired int
}

// startControl opens the control socket, if one is configured. Another
// hostflow answering on it stops the start: two daemons would fight over
// the path. Any other failure (no permission on the directory) is logged,
// and hostflow runs without one.
func (d *daemon) startControl() error {
	d.ctlReq = make(chan ctlRequest)
	d.ctlDone = make(chan struct{})
	if d.cfg.ControlSocket == "" {
		return nil
	}
	srv, err := control.Listen(d.cfg.ControlSocket, control.ServerOptions{Logger: d.log})
	if errors.Is(err, control.ErrInUse) {
		return fmt.Errorf("%w; stop it first, or give this one another control_socket", err)
	}
	if err != nil {
		d.log.Error("control socket: the commands flows, stats and expire will not reach this daemon", "err", err)
		return nil
	}
	d.ctl = srv
	go srv.Serve(ctlHandler{d})
	d.log.Info("control socket", "path", srv.Path())
	return nil
}

// stopControl stops serving the control socket and removes it. Commands
// waiting for the loop are answered with an error.
func (d *daemon) stopControl() {
	if d.ctlDone != nil {
		select {
		case <-d.ctlDone:
		default:
			close(d.ctlDone)
		}
	}
	if d.ctl != nil {
		if err := d.ctl.Close(); err != nil {
			d.log.Warn("close control socket", "err", err)
		}
		d.ctl = nil
	}
}

// ctlHandler hands each command to the loop and waits for its answer.
type ctlHandler struct{ d *daemon }

var errStopping = errors.New("hostflow is stopping")

func (h ctlHandler) ask(ctx context.Context, command string) (ctlReply, error) {
	r := ctlRequest{command: command, reply: make(chan ctlReply, 1)}
	select {
	case h.d.ctlReq <- r:
	case <-h.d.ctlDone:
		return ctlReply{}, errStopping
	case <-ctx.Done():
		return ctlReply{}, ctx.Err()
	}
	select {
	case a := <-r.reply:
		return a, nil
	case <-ctx.Done():
		return ctlReply{}, ctx.Err()
	}
}

func (h ctlHandler) Flows(ctx context.Context) ([]control.Flow, error) {
	a, err := h.ask(ctx, control.CommandFlows)
	return a.flows, err
}

func (h ctlHandler) Stats(ctx context.Context) (control.Stats, error) {
	a, err := h.ask(ctx, control.CommandStats)
	return a.stats, err
}

func (h ctlHandler) Expire(ctx context.Context) (int, error) {
	a, err := h.ask(ctx, control.CommandExpire)
	return a.expired, err
}

// serveControl runs one command on the loop goroutine.
func (d *daemon) serveControl(r ctlRequest) {
	var a ctlReply
	switch r.command {
	case control.CommandFlows:
		// Drained first: the counts are those of the kernel now, not
		// of the last poll.
		d.drain()
		snap := d.cache.Snapshot(nil)
		a.flows = make([]control.Flow, len(snap))
		for i := range snap {
			a.flows[i] = controlFlow(&snap[i], d.ifName(snap[i].Key.IfIndex))
		}
	case control.CommandStats:
		d.drain()
		d.updateActive()
		a.stats = d.controlStats()
		p, b := d.cache.Totals()
		a.stats.PacketsSeen, a.stats.BytesSeen = a.stats.Packets+p, a.stats.Bytes+b
	case control.CommandExpire:
		d.drain()
		a.expired = d.flushTo(d.sinks)
		d.updateActive()
		d.log.Info("exported every cached flow on request (forced end)", "flows", a.expired)
	}
	r.reply <- a
}

// controlFlow is f as the control socket lists it, with the field names of
// the JSON lines.
func controlFlow(f *exporter.Flow, ifname string) control.Flow {
	k := &f.Key
	s := f.SamplingInterval
	if s <= 1 {
		s = 0
	}
	return control.Flow{
		Src: k.Src.String(), Dst: k.Dst.String(), SrcPort: k.SrcPort, DstPort: k.DstPort,
		Proto: k.Proto, EtherType: k.EtherType(), IfIndex: k.IfIndex, IfName: ifname,
		Direction: exporter.DirectionName(k.Direction), VLAN: k.VLAN, ICMPType: k.ICMPType, ICMPCode: k.ICMPCode, TOS: k.TOS,
		Packets: f.Packets, Bytes: f.Bytes, Start: f.Start.UTC().Format(exporter.JSONTimeLayout), End: f.End.UTC().Format(exporter.JSONTimeLayout), TCPFlags: f.TCPFlags, Sampling: s,
	}
}

// controlStats gathers the counters /metrics serves.
func (d *daemon) controlStats() control.Stats {
	f := d.Flows()
	st := control.Stats{Packets: f.Packets, Bytes: f.Bytes, FlowsActive: f.Active, FlowsExported: f.Exported,
		DirectRecords: f.DirectRecords, DrainErrors: f.DrainErrors, ExportErrors: f.ExportErrors,
		Collectors: []control.CollectorStatus{}}
	k, err := d.Kernel()
	if err != nil {
		st.KernelError = err.Error()
	}
	st.Kernel = control.KernelStats{MapFull: k.MapFull, RingBufFull: k.RingBufFull, NotIP: k.NotIP,
		Malformed: k.Malformed, NoMap: k.NoMap, SampledOut: k.SampledOut, FateMalformed: k.FateMalformed}
	for _, c := range d.Collectors() {
		state := "disconnected"
		if c.Connected {
			state = "connected"
		}
		st.Collectors = append(st.Collectors, control.CollectorStatus{URL: c.URL, State: state, Queued: c.QueuedRecords,
			Messages: c.Messages, Records: c.Records, SendErrors: c.SendErrors, RecordsLost: c.RecordsLost,
			Dropped: c.DroppedRecords, Unreachable: c.Unreachable, Reconnects: c.Reconnects})
	}
	return st
}
