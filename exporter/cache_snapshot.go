package exporter

// Snapshot appends a record of every cached flow to out, from the most to
// the least recently seen, and changes nothing: the flows stay cached and
// no end reason is counted. The records' EndReason is 0 (the flows have
// not ended); their counts are those since each flow's previous record.
func (c *Cache) Snapshot(out []Flow) []Flow {
	t := &c.flows
	wall, mono := c.clock.Now(), c.clock.Monotonic()
	stats := c.stats
	for i := t.head; i != none; i = t.at(i).next {
		out = append(out, c.record(t.at(i), 0, wall, mono))
	}
	c.stats = stats // record counts what it exports; a snapshot is not
	return out
}

// Totals returns the packets and bytes of the cached flows (since each
// flow's previous record), without changing anything. Added to what was
// exported, they are everything the cache was given. With
// CacheConfig.Fates, "given" is the arrivals: Totals adds those not yet
// exported as a fate or as consumed (fateTable.unreported).
func (c *Cache) Totals() (packets, bytes uint64) {
	t := &c.flows
	for i := t.head; i != none; i = t.at(i).next {
		e := t.at(i)
		packets += e.packets
		bytes += e.bytes
	}
	if c.fates != nil {
		p, b := c.fates.unreported()
		packets = uint64(max(0, int64(packets)+p))
		bytes = uint64(max(0, int64(bytes)+b))
	}
	return packets, bytes
}
