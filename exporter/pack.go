package exporter

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// Packing: records into sets, sets into messages of at most max bytes,
// messages to the writer.

// export encodes flows into as few messages as fit max and sends them.
// Records are grouped by template, so a message holds at most one data set
// per template. If templates are due (never sent, sent refresh ago or
// more, or refreshMessages messages ago), the
// message starts with them: in the same datagram as the data, they cannot
// arrive after it. Options data, when due, follow the templates.
//
// For an IPFIX exporter whose writer uses UDP GSO, exportFill chooses the
// records of each message instead, so that messages are one length
// (fill.go).
//
// A message that fails to send is counted and skipped; export goes on with
// the rest and returns an error wrapping the first failure.
func (e *encoder) export(flows []Flow) error {
	if e.closed {
		return fmt.Errorf("%s export: exporter closed", e.wire.name())
	}
	now := e.now()
	optionsDue := e.opts != nil && (!e.optionsSent || now.Sub(e.lastOptions) >= e.opts.interval)
	if len(flows) == 0 && !optionsDue {
		return nil
	}
	e.setMsgTime(now)
	e.res = exportResult{}
	e.filling, e.padding = false, false
	if g, ok := e.w.(gsoWriter); ok && e.exactFill && g.GSO() {
		e.filling, e.padding = true, e.padFull
	}
	if !e.templatesSent || (e.refresh > 0 && now.Sub(e.lastTemplates) >= e.refresh) {
		// Until a message carrying them is sent. If it fails, templates
		// are due again at the next export, not at the next message:
		// that could loop forever against a writer that always fails.
		e.templatesSent = false
		e.forceTemplates = true
	}
	e.begin(true)
	if optionsDue {
		e.appendOptions(now)
	}
	// The template of each flow, chosen once (templates.Variant); then
	// one pass per template groups records into few sets without
	// reordering (or copying) the caller's slice. variants is reused:
	// it grows to the largest batch, then allocates no more.
	vs := e.variants[:0]
	var n [templates.NumTemplates]int
	for i := range flows {
		v := flows[i].Key.variant()
		vs = append(vs, uint8(v))
		n[v]++
	}
	e.variants = vs
	if e.filling {
		e.exportFill(flows, &n)
		e.send()
		if e.res.firstErr != nil {
			return fmt.Errorf("%s export: %d of %d messages not sent: %w", e.wire.name(), e.res.failed, e.res.total, e.res.firstErr)
		}
		return nil
	}
	for ti := range e.compiled {
		if n[ti] == 0 {
			continue
		}
		ct := &e.compiled[ti]
		for i, v := range vs {
			if int(v) != ti {
				continue
			}
			e.room(ct.t.ID, ct.recLen)
			e.appendFlow(ct, &flows[i])
		}
	}
	e.send()
	if e.res.firstErr != nil {
		return fmt.Errorf("%s export: %d of %d messages not sent: %w", e.wire.name(), e.res.failed, e.res.total, e.res.firstErr)
	}
	return nil
}

// setMsgTime sets the time of the messages about to be built: now on the
// wall clock, and the v9 sysUptime from the monotonic clock.
func (e *encoder) setMsgTime(now time.Time) {
	e.msgTime = now
	up := max(e.mono()-e.startMono, 0).Milliseconds()
	// sysUptime is modulo 2^32 ms (RFC 3954 section 5.1).
	e.msgUptime = uint32(up)
	e.msgOrigin = now.UnixMilli() - up
}

// exportResult tallies the messages of one export.
type exportResult struct {
	firstErr      error
	failed, total int
}

// room makes sure a record of template id and length n fits the message,
// sending it and starting the next one if not.
func (e *encoder) room(id uint16, n int) {
	if e.fits(id, n) {
		return
	}
	e.send()
	e.begin(true)
	if !e.fits(id, n) {
		// The templates a refresh put in took the room; the config
		// check guarantees a record fits a message without them.
		e.send()
		e.begin(false)
	}
}

// send sends the message built so far, if it holds anything.
func (e *encoder) send() {
	if e.msgRecords == 0 && !e.msgTemplate {
		return
	}
	e.res.total++
	if e.msgTemplate {
		e.sinceTemplates = 0
	}
	e.sinceTemplates++
	if err := e.flush(); err != nil {
		e.res.failed++
		if e.res.firstErr == nil {
			e.res.firstErr = err
		}
		return
	}
	if e.msgTemplate {
		e.templatesSent = true
		e.lastTemplates = e.msgTime
	}
}

// begin starts a message, with the template block first if it is due and
// allowed.
func (e *encoder) begin(allowTemplates bool) {
	e.buf = e.buf[:e.wire.headerLen()]
	e.msgRecords, e.msgFlows = 0, 0
	e.setStart = -1
	e.nPadSets = 0
	t := false
	if allowTemplates {
		t = e.forceTemplates ||
			(e.refreshMessages > 0 && e.sinceTemplates >= e.refreshMessages)
		e.forceTemplates = false
	}
	e.msgTemplate = t
	if t {
		e.buf = append(e.buf, e.templateBlock...)
	}
}

// fits reports whether a record of set id and length n fits in the
// message, with a set header if it needs a new set and padding if the
// protocol pads.
func (e *encoder) fits(id uint16, n int) bool {
	need := n
	if e.setStart < 0 || e.setID != id {
		need += setHeaderLen
	}
	return align(len(e.buf)+need, e.wire.pad()) <= e.max
}

// openSet makes sure the open set is id's.
func (e *encoder) openSet(id uint16) {
	if e.setStart >= 0 && e.setID == id {
		return
	}
	e.closeSet()
	e.setStart = len(e.buf)
	e.setID = id
	e.buf = binary.BigEndian.AppendUint16(e.buf, id)
	e.buf = append(e.buf, 0, 0) // length, set by closeSet
}

func (e *encoder) appendFlow(ct *compiledTemplate, f *Flow) {
	e.openSet(ct.t.ID)
	n := len(e.buf)
	e.buf = e.buf[:n+ct.recLen]
	ct.putRecord(e.buf[n:], f, e.msgOrigin)
	e.msgRecords++
	e.msgFlows++
}

func (e *encoder) closeSet() {
	if e.setStart < 0 {
		return
	}
	for e.wire.pad() && (len(e.buf)-e.setStart)%4 != 0 {
		e.buf = append(e.buf, 0)
	}
	binary.BigEndian.PutUint16(e.buf[e.setStart+2:], uint16(len(e.buf)-e.setStart))
	e.setStart = -1
}

// flush completes the message header and writes the message.
func (e *encoder) flush() error {
	e.closeSet()
	b := e.buf
	count := e.msgRecords
	if e.msgTemplate {
		count += uint32(e.templateRecords)
	}
	e.wire.putHeader(b, msgHeader{export: e.msgTime, uptime: e.msgUptime, count: count, seq: e.seq, domain: e.domain})
	e.flushing, e.flushSeq = true, e.seq
	e.seq = e.wire.nextSeq(e.seq, e.msgRecords)
	n := e.msgFlows
	e.msgRecords, e.msgFlows = 0, 0
	var err error
	if rw, ok := e.w.(RecordWriter); ok {
		err = rw.WriteMessageRecords(b, int(n))
	} else {
		err = e.w.WriteMessage(b)
	}
	e.flushing = false
	if err != nil {
		e.sendErrors.Add(1)
		e.recordsLost.Add(uint64(n))
		if !e.failing {
			// Log the change of state, not every failure: a collector
			// that is down fails every message.
			e.failing = true
			e.log.Warn(e.wire.name()+" send failing; records are lost until it recovers", "err", err)
		}
		return err
	}
	if e.failing {
		e.failing = false
		e.log.Info(e.wire.name()+" send recovered", "records_lost_total", e.recordsLost.Load())
	}
	e.messages.Add(1)
	e.records.Add(uint64(n))
	return nil
}
