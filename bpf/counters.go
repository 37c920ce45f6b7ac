package bpf

// KernelCounters are the kernel side's totals since load, summed over CPUs.
// Every place where the programs lose or divert a packet has one.
type KernelCounters struct {
	// MapFull: packets diverted to direct_flows because the aggregation
	// map was full. They are not lost.
	MapFull uint64
	// RingBufFull: packets lost because direct_flows had no room.
	RingBufFull uint64
	// NotIP: frames with no IPv4/IPv6 packet (ARP, LLDP, ...).
	NotIP uint64
	// Malformed: frames too short or broken to read.
	Malformed uint64
	// NoMap: packets seen while no aggregation map was installed.
	NoMap uint64
	// SampledOut: packets skipped by sampling.
	SampledOut uint64
	// FateMalformed: router mode (FetcherOptions.Fate), forwarded or
	// dropped packets whose fate was not counted because their headers
	// could not be read (a malformed packet, or headers outside the
	// skb's linear area at a drop): only their arrival is counted.
	FateMalformed uint64
}
