package bpf

import (
	"errors"
	"fmt"
	"math"
	"os"
)

// DefaultRingBufSize is the size of direct_flows in bytes: room for about
// 43,000 diverted packets between two reads.
const DefaultRingBufSize = 1 << 22

// FetcherOptions say how NewFetcher loads the TC programs and where Attach
// puts them.
type FetcherOptions struct {
	// Sampling is N of 1-in-N packet sampling; 0 or 1 counts every
	// packet.
	Sampling int
	// KernelMapSize is how many flows each kernel aggregation map holds
	// (one for IPv4, one for IPv6, and a spare of each) before packets of
	// new flows are diverted to the ring buffer. A map is switched for the
	// empty one when 7/8 full or 60 s old. Required.
	KernelMapSize int
	// Ingress and Egress choose the hooks Attach uses; at least one.
	Ingress, Egress bool
	// Attach forces AttachTCX or AttachClsact; AttachAuto (the zero value)
	// probes for tcx on the first attach and falls back to clsact.
	Attach AttachMode
	// SamplingAlgorithm is SamplingRandom (the zero value) or
	// SamplingCount.
	SamplingAlgorithm SamplingAlgorithm
	// RingBufSize is the size of direct_flows in bytes: a power of two, at
	// least a page. 0 is DefaultRingBufSize.
	RingBufSize uint32
	// PreciseTimestamps makes the programs stamp flows with the precise
	// monotonic clock instead of the coarse one (the last timer tick: 4 ms
	// on a 250 Hz kernel). The precise clock costs about a third of the
	// program's time per packet on a KVM guest; flow start and end to the
	// tick are what most collectors and routers offer. The coarse clock
	// needs Linux 5.11: on an older kernel the programs use the precise one
	// even when this is false, and PreciseClock reports that fallback.
	PreciseTimestamps bool
	// Fate is router mode's fate counting: the egress programs count each
	// forwarded packet that arrived on an interface with the ingress hook
	// (its arrival counted) with fate 64, keyed as it arrived (interface,
	// direction ingress, addresses and ports before NAT: see FateNAT),
	// and the interface it left by in OutIfIndex; a drop program on the
	// kfree_skb tracepoint counts each packet the kernel drops that
	// arrived on such an interface of the fetcher's network namespace (the
	// calling thread's at NewFetcher), with the IANA forwardingStatus code
	// of its drop reason, keyed the same way, unsampled. Arrivals keep
	// fate 0. Attach puts the egress program on
	// every interface, even when only ingress is asked for: then it
	// counts forwarded packets only, not what the host sends. Needs Linux
	// 6.3: on an older kernel NewFetcher fails with ErrFateNotSupported.
	// See c/fate.h.
	Fate bool
	// StateDir records the clsact qdiscs Attach creates, so that
	// CleanupStale can remove them after a crash. Empty: nothing is
	// recorded.
	StateDir string

	// clockProbe reports whether the coarse clock exists (nil: the
	// kernel's feature probe; tests replace it).
	clockProbe func() error
	// fateProbe reports whether the kernel can count fates (nil:
	// ProbeFate; tests replace it).
	fateProbe func() error
}

// SockFetcherOptions say how NewSockFetcher loads the socket filters. A
// packet socket sees both directions and has no TC hook, so there is no
// hook or attach mode to choose; the other fields mean what they mean in
// FetcherOptions.
type SockFetcherOptions struct {
	Sampling          int
	KernelMapSize     int
	SamplingAlgorithm SamplingAlgorithm
	RingBufSize       uint32
	PreciseTimestamps bool

	clockProbe func() error
}

// fetcherConfig is the load-time configuration both fetchers share, once
// validated. configure and newFlowMaps read it.
type fetcherConfig struct {
	sampling     int // at load; the fetcher's sampling field tracks changes
	mapSize      int // max_entries of each aggregation map
	algorithm    SamplingAlgorithm
	ringBufSize  uint32
	stateDir     string
	preciseClock bool
	// clockProbe reports whether the coarse clock exists (nil: the
	// kernel's feature probe); clockFallback records that it did not.
	clockProbe    func() error
	clockFallback bool
	// fate: router mode's fate counting (FetcherOptions.Fate).
	fate bool
}

// config validates o and returns the load-time configuration.
func (o FetcherOptions) config() (fetcherConfig, error) {
	if !o.Ingress && !o.Egress {
		return fetcherConfig{}, errors.New("fetcher options: neither ingress nor egress: nothing to capture")
	}
	switch o.Attach {
	case AttachAuto, AttachTCX, AttachClsact:
	default:
		return fetcherConfig{}, fmt.Errorf("fetcher options: attach mode %s: want auto, tcx or clsact", o.Attach)
	}
	cfg := fetcherConfig{
		sampling: o.Sampling, mapSize: o.KernelMapSize, algorithm: o.SamplingAlgorithm,
		ringBufSize: o.RingBufSize, stateDir: o.StateDir, preciseClock: o.PreciseTimestamps,
		clockProbe: o.clockProbe, fate: o.Fate,
	}
	return cfg, cfg.validate()
}

// config validates o and returns the load-time configuration.
func (o SockFetcherOptions) config() (fetcherConfig, error) {
	cfg := fetcherConfig{
		sampling: o.Sampling, mapSize: o.KernelMapSize, algorithm: o.SamplingAlgorithm,
		ringBufSize: o.RingBufSize, preciseClock: o.PreciseTimestamps, clockProbe: o.clockProbe,
	}
	return cfg, cfg.validate()
}

// validate checks what both fetchers' options share, and sets the default
// ring buffer size.
func (c *fetcherConfig) validate() error {
	if err := checkSampling(c.sampling); err != nil {
		return fmt.Errorf("fetcher options: %w", err)
	}
	if c.mapSize <= 0 || c.mapSize > math.MaxUint32 {
		return fmt.Errorf("fetcher options: kernel map size %d: want 1 to %d flows", c.mapSize, uint32(math.MaxUint32))
	}
	switch c.algorithm {
	case SamplingRandom, SamplingCount:
	default:
		return fmt.Errorf("fetcher options: sampling algorithm %d: want random (%d) or count (%d)", c.algorithm, SamplingRandom, SamplingCount)
	}
	if c.ringBufSize == 0 {
		c.ringBufSize = DefaultRingBufSize
	}
	if n := c.ringBufSize; n&(n-1) != 0 || n < uint32(os.Getpagesize()) {
		return fmt.Errorf("fetcher options: ring buffer size %d: want a power of two of at least %d bytes", n, os.Getpagesize())
	}
	return nil
}

// checkSampling checks N of 1-in-N sampling: the programs hold it in 32
// bits.
func checkSampling(n int) error {
	if n < 0 || n > math.MaxUint32 {
		return fmt.Errorf("sampling %d: want 0 to %d", n, uint32(math.MaxUint32))
	}
	return nil
}

// FetcherOption changes the FetcherOptions NewFlowFetcher and
// NewSockFlowFetcher build from their positional arguments.
type FetcherOption func(*FetcherOptions)

// WithPreciseTimestamps sets FetcherOptions.PreciseTimestamps.
func WithPreciseTimestamps(on bool) FetcherOption {
	return func(o *FetcherOptions) { o.PreciseTimestamps = on }
}

// WithSamplingAlgorithm sets FetcherOptions.SamplingAlgorithm.
func WithSamplingAlgorithm(a SamplingAlgorithm) FetcherOption {
	return func(o *FetcherOptions) { o.SamplingAlgorithm = a }
}

// WithAttachMode sets FetcherOptions.Attach.
func WithAttachMode(m AttachMode) FetcherOption {
	return func(o *FetcherOptions) { o.Attach = m }
}

// WithRingBufSize sets FetcherOptions.RingBufSize.
func WithRingBufSize(n uint32) FetcherOption {
	return func(o *FetcherOptions) { o.RingBufSize = n }
}

// WithStateDir sets FetcherOptions.StateDir.
func WithStateDir(dir string) FetcherOption {
	return func(o *FetcherOptions) { o.StateDir = dir }
}

// WithFate sets FetcherOptions.Fate.
func WithFate(on bool) FetcherOption {
	return func(o *FetcherOptions) { o.Fate = on }
}

// withFateProbe replaces the fate probe (tests).
func withFateProbe(probe func() error) FetcherOption {
	return func(o *FetcherOptions) { o.fateProbe = probe }
}

// withClockProbe replaces the coarse clock probe (tests).
func withClockProbe(probe func() error) FetcherOption {
	return func(o *FetcherOptions) { o.clockProbe = probe }
}

// SamplingAlgorithm says how 1-in-N sampling picks packets.
type SamplingAlgorithm = NetSamplingAlgorithm

const (
	// SamplingRandom picks each packet with probability 1/N.
	SamplingRandom = NetSamplingAlgorithmSAMPLING_RANDOM
	// SamplingCount picks every Nth packet on each CPU.
	SamplingCount = NetSamplingAlgorithmSAMPLING_COUNT
)
