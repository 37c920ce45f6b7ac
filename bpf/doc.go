// Package bpf holds hostflow's kernel side: the eBPF programs under c/, the
// objects bpf2go generates from them, and the fetchers that load, attach and
// drain them.
//
// FlowFetcher (NewFetcher) attaches ingress_flow_parse and
// egress_flow_parse to the TC hooks of the chosen interfaces (tcx where the
// kernel has it, a clsact qdisc with a direct-action filter otherwise). The programs aggregate packets per
// NetFlowId in one of two per-CPU hashes; Drain (and LookupAndDeleteMap)
// reads the active one and hands out what each flow counted since the last
// call, and switches hashes only to evict idle flows, draining the old one
// once no program can touch it any more. Flows that find the hash full
// arrive one packet at a time through ReadRingBuf. SockFlowFetcher
// (NewSockFetcher) puts the same parser on AF_PACKET sockets as a socket
// filter instead, for hosts where the TC hooks cannot be used; both share
// one core for loading, sampling changes, detaching and closing.
//
// In router mode (FetcherOptions.Fate) each packet's fate is counted too,
// under the key it had on arrival with the fate byte set (IANA
// forwardingStatus): forwarded packets (64) by egress_router_parse or
// egress_fate_parse on every attached interface's egress hook, drops
// (128-143, from the kernel's drop reason) by fate_kfree_skb on the
// kfree_skb tracepoint (c/fate.c). Arrivals keep fate 0; user space
// derives what was consumed. c/fate.h says why no packet gets two fates.
//
// Everything here needs CAP_BPF and CAP_NET_ADMIN (and CAP_PERFMON for the
// ring buffer on some kernels); the tests that load programs skip without
// them, except under CI=true where a missing privilege fails the test.
package bpf
