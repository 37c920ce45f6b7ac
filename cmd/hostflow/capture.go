package main

import (
	"errors"
	"os"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/hostflow/hostflow/bpf"
)

// readRingBuf sends the records of the ring buffer to out and closes it
// once the buffer is flushed (at shutdown) or closed. A full out makes it
// wait, counted in readerWaits. An unexpected read
// error also ends it, counted in the drain errors: it is not retried, as
// the ring buffer has no error the next read would recover from. The map
// is still drained on every tick; what the kernel diverts to the ring
// buffer afterwards is lost and counted by the kernel as ring buffer full.
// Restart hostflow to read it again. A record that says the map programs
// count into is full (bpf's Diverted) calls for an early drain, on d.full.
func (d *daemon) readRingBuf(out chan<- bpf.Record) {
	defer close(out)
	for {
		raw, err := d.fetcher.ReadRingBuf()
		if err != nil {
			if !errors.Is(err, ringbuf.ErrFlushed) && !errors.Is(err, os.ErrClosed) {
				d.mu.Lock()
				d.counts.drainErrors++
				d.ringStopped = true
				d.mu.Unlock()
				d.log.Error("read ring buffer: stopped reading it; packets the kernel diverts to it are lost "+
					"(hostflow_kernel_ringbuf_full_total) until hostflow restarts", "err", err)
			}
			return
		}
		r, err := bpf.DecodeRecord(raw.RawSample)
		if err != nil {
			// The packet it stood for is lost: counted with the
			// drain errors, as every loss is.
			d.mu.Lock()
			d.counts.drainErrors++
			d.mu.Unlock()
			d.log.Error("decode ring buffer record: its packet is lost", "err", err)
			continue
		}
		if d.fetcher.Diverted(&r) {
			select {
			case d.full <- struct{}{}:
			default: // a drain is already called for
			}
		}
		select {
		case out <- r:
		default: // the loop is behind: wait for it, counted
			d.readerWaits.Add(1)
			out <- r
		}
	}
}

// directQueue is how many ring buffer records wait for the loop.
const directQueue = 4096

// takeDirect adds to the cache every record the kernel diverted to the
// ring buffer so far: the reader is flushed, its records handled until it
// ends, and a new reader started. A sampling change calls it once the old
// programs stopped, so that none of their records reaches the new sinks.
// Called from the loop goroutine only, which then reads the new d.direct.
func (d *daemon) takeDirect() {
	if d.direct == nil {
		return // no loop
	}
	if err := d.fetcher.FlushRingBuf(); err != nil {
		d.log.Error("flush ring buffer: records it holds may be exported at the new sampling rate", "err", err)
		return
	}
	for r := range d.direct { // closed by readRingBuf after the flush
		d.addDirect(r)
	}
	d.mu.Lock()
	stopped := d.ringStopped
	d.mu.Unlock()
	if stopped {
		return // it failed before: not read again until a restart
	}
	d.direct = make(chan bpf.Record, directQueue)
	go d.readRingBuf(d.direct)
}
