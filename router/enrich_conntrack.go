package router

import (
	"errors"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/vishvananda/netlink"
)

// Cost model of ConntrackAuto, in units of one dumped entry (6-7 µs on
// the 2-CPU test VM, parsing included): a dump costs a fixed part (the
// kernel walks every bucket of the conntrack hash table, which all
// namespaces share: about 10 ms there) plus one unit per entry; a get
// costs about 17 µs, between two and three units (BenchmarkConntrackDump,
// BenchmarkConntrackGet).
const (
	dumpFixedUnits = 1500
	getUnits       = 3
)

// conntrackMode decides how this Enrich call reads conntrack.
func (e *Enricher) conntrackMode(flows []exporter.Flow) ConntrackMode {
	if e.opts.Conntrack != ConntrackAuto {
		return e.opts.Conntrack
	}
	n := e.ctCount.count()
	if n == 0 {
		return ConntrackOff // nothing tracked in this namespace
	}
	if n < 0 {
		return ConntrackDump // unknown size: one dump is bounded
	}
	ingress := 0
	for i := range flows {
		if flows[i].Key.Direction == bpf.DirectionIngress {
			ingress++
		}
	}
	if getUnits*ingress < dumpFixedUnits+n {
		return ConntrackGet
	}
	return ConntrackDump
}

// postNAT returns the post-NAT tuple of a packet with tuple t, from the
// dump index or, in ConntrackGet mode, from a get (cached for the call).
func (e *Enricher) postNAT(mode ConntrackMode, t Tuple) (Tuple, bool) {
	if r, ok := e.nat.Lookup(t); ok || mode != ConntrackGet {
		return r, ok
	}
	key := normalTuple(t)
	if _, miss := e.noCT[key]; miss || !hasPorts(t.Proto) {
		return Tuple{}, false
	}
	e.ctGets.Add(1)
	orig, reply, ok, err := e.ctGet.get(key)
	if err != nil {
		e.ctErrors.Add(1)
		if !e.ctWarned.Swap(true) {
			e.log.Warn("router: conntrack get failed; post-NAT fields stay empty", "err", err)
		}
	}
	if !ok {
		e.noCT[key] = struct{}{}
		return Tuple{}, false
	}
	e.nat.Add(orig, reply)
	return e.nat.Lookup(t)
}

// loadConntrack dumps conntrack for the families of the ingress flows into
// e.nat.
func (e *Enricher) loadConntrack(flows []exporter.Flow) {
	var v4, v6 bool
	for i := range flows {
		if flows[i].Key.Direction != bpf.DirectionIngress {
			continue
		}
		if flows[i].Key.IsIPv4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	n := 0
	for _, fam := range []struct {
		want bool
		f    netlink.InetFamily
	}{{v4, netlink.FAMILY_V4}, {v6, netlink.FAMILY_V6}} {
		if !fam.want {
			continue
		}
		cts, err := e.h.ConntrackTableList(netlink.ConntrackTable, fam.f)
		e.ctDumps.Add(1)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// The table changed during the dump: what was read is
			// still right, some entries may be missing.
			err = nil
		}
		if err != nil {
			e.ctErrors.Add(1)
			if !e.ctWarned.Swap(true) {
				e.log.Warn("router: conntrack dump failed; post-NAT fields stay empty", "err", err)
			}
			continue
		}
		indexFlows(e.nat, cts)
		n += len(cts)
	}
	e.ctFlows.Store(uint64(n))
}
