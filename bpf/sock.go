package bpf

import (
	"github.com/cilium/ebpf"
)

// SockFlowFetcher is the --capture socket fallback of FlowFetcher, for
// hosts where the TC hooks cannot be used. It attaches a socket filter
// (c/sock.c) to one AF_PACKET socket per interface instead of TC programs;
// the filter shares the parser, the maps and the accounting with the TC
// programs, so the flows it produces are the same NetFlowId and
// NetFlowMetrics, drained the same way. It is safe for concurrent use.
//
// The filter returns 0 for every packet, so the socket never receives
// anything: a packet socket runs its filter on every packet it is handed
// and only then decides, by the returned length, whether to queue a copy.
// The program thus sees all traffic while nothing is copied to user space.
//
// What differs from TC: egress packets are seen after the qdiscs (what the
// interface really sends, not what TC egress was handed), and the kernel
// clones every outgoing skb for the tap, which costs more than a TC hook.
type SockFlowFetcher struct {
	fetcherCore[*NetSkPrograms, *sockAttachment]
	objs NetSkObjects // maps and variables; the programs are fetcherCore.progs
}

// sockKind loads the socket filters.
var sockKind = kind[*NetSkPrograms]{
	what:     "socket programs",
	progType: ebpf.SocketFilter,
	spec:     LoadNetSk,
	newProgs: func() *NetSkPrograms { return new(NetSkPrograms) },
}

// NewSockFetcher loads the socket filters and the maps into the kernel.
// Nothing is attached until Attach.
func NewSockFetcher(opts SockFetcherOptions) (*SockFlowFetcher, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	f := &SockFlowFetcher{}
	if err := f.init(sockKind, cfg, &f.objs); err != nil {
		return nil, err
	}
	return f, nil
}

// NewSockFlowFetcher is NewSockFetcher with positional arguments, like
// NewFlowFetcher: sampling is SockFetcherOptions.Sampling, cacheMaxSize
// KernelMapSize. Of the options, those that set SamplingAlgorithm,
// RingBufSize and PreciseTimestamps apply; WithAttachMode and WithStateDir
// have no meaning here and are ignored.
func NewSockFlowFetcher(sampling, cacheMaxSize int, opts ...FetcherOption) (*SockFlowFetcher, error) {
	var o FetcherOptions
	for _, opt := range opts {
		opt(&o)
	}
	return NewSockFetcher(SockFetcherOptions{
		Sampling:          sampling,
		KernelMapSize:     cacheMaxSize,
		SamplingAlgorithm: o.SamplingAlgorithm,
		RingBufSize:       o.RingBufSize,
		PreciseTimestamps: o.PreciseTimestamps,
		clockProbe:        o.clockProbe,
	})
}

// takePrograms moves the programs out of o.
func (o *NetSkObjects) takePrograms() *NetSkPrograms {
	p := o.NetSkPrograms
	o.NetSkPrograms = NetSkPrograms{}
	return &p
}

// program returns the filter for a device with an Ethernet header or
// without one.
func (p *NetSkPrograms) program(l2 bool) *ebpf.Program {
	if l2 {
		return p.SockFlowParse
	}
	return p.SockFlowParseL3
}

// Mode returns AttachSocket: the interface the daemon reports attach
// state through is the same for both fetchers.
func (m *SockFlowFetcher) Mode() AttachMode { return AttachSocket }
