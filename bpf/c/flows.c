// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC programs that account every packet to its flow. The maps and the
 * accounting live in account.h, shared with the socket filter (sock.c);
 * unlike it, they may read packets in place (direct packet access). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "parse.h"
#include "account.h"
#include "fate.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Router mode (fate.h), set by user space before load: the router-mode
 * egress programs count forwarded packets with fate 64. A constant, so
 * that without it the verifier prunes their code (and its kfunc). */
volatile const __u32 fate_mode = 0;

/* Linux 6.3+. Weak: without it the programs load as long as fate_mode is
 * off, which prunes the call (user space probes for it first). */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/* account_forwarded counts a forwarded packet (it arrived on iif) at TC
 * egress with fate 64, under its arrival key (fate.h), with the interface
 * it leaves by. A packet that arrived whole and that the router fragments
 * on output is counted once, by its first fragment (the one with the
 * ports of its arrival key, and that fragment's length); the later ones
 * are not counted (fate.h). */
static __always_inline void account_forwarded(struct __sk_buff *skb, __u32 iif, const bool l2)
{
	if (sampled_out()) {
		count(COUNTER_SAMPLED_OUT);
		return;
	}
	flow_id id = {};
	struct packet_info pi = {};
	int res = parse_packet(skb, &id, &pi, l2, true);
	/* Not IP (a bridged frame): not a flow, counted as such on
	 * arrival. */
	if (res == PARSE_NOT_IP)
		return;
	if (res != PARSE_OK) {
		count(COUNTER_FATE_MALFORMED);
		return;
	}
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	unsigned long nfct = skb_nfct(kskb);
	/* A later fragment (offset > 0) the router cut from a packet that
	 * arrived whole. With a conntrack entry the packet went through
	 * conntrack's defrag: it arrived in fragments, which the router cuts
	 * again as they were (fate.h), each counted. */
	if (pi.later_fragment && !nfct && fate_router_fragment(kskb))
		return;
	fate_key(&id, iif, FATE_FORWARDED, nfct);
	count_packet(skb, &id, &pi, skb->ifindex);
}

/* account_router counts a packet at TC egress in router mode: a packet
 * that arrived on an interface whose arrivals hostflow counts
 * (ingress_ifindex in fate_ifaces: it is being forwarded) is counted as
 * forwarded, under its arrival key, with the interface it leaves by;
 * local is whether the user asked for egress counting on this interface:
 * then a packet the host itself sends, or one forwarded from an interface
 * without an arrival record, is counted as an egress packet, as without
 * router mode. A forwarded packet with an arrival record is never also
 * counted as an egress packet: its arrival record and its forwarded
 * record stand for it.
 *
 * Only the router-mode programs call it; without router mode they do
 * nothing (fate_mode prunes them, bpf_cast_to_kern_ctx with them, so
 * that they load on any kernel), and the host-mode programs are the ones
 * they were before router mode existed, instruction for instruction. */
static __always_inline void account_router(struct __sk_buff *skb, const bool l2, const bool local)
{
	if (!fate_mode)
		return;
	__u32 iif = skb->ingress_ifindex;
	if (iif != 0 && fate_watched(iif))
		account_forwarded(skb, iif, l2);
	else if (local)
		account(skb, 1, l2, true);
}

SEC("tc")
int ingress_flow_parse(struct __sk_buff *skb)
{
	account(skb, 0, true, true);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int egress_flow_parse(struct __sk_buff *skb)
{
	account(skb, 1, true, true);
	return TC_ACT_UNSPEC;
}

/* Router mode's egress program where the user asked for egress: it counts
 * forwarded packets with their fate, and what the host sends. */
SEC("tc")
int egress_router_parse(struct __sk_buff *skb)
{
	account_router(skb, true, true);
	return TC_ACT_UNSPEC;
}

/* Router mode's egress program on an interface where the user asked for
 * ingress only: it counts forwarded packets, nothing the host sends. */
SEC("tc")
int egress_fate_parse(struct __sk_buff *skb)
{
	account_router(skb, true, false);
	return TC_ACT_UNSPEC;
}

/* The same for devices without a link-layer header (tun, wireguard, ...):
 * the packet starts at the IP header and skb->protocol names it. */
SEC("tc")
int ingress_flow_parse_l3(struct __sk_buff *skb)
{
	account(skb, 0, false, true);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int egress_flow_parse_l3(struct __sk_buff *skb)
{
	account(skb, 1, false, true);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int egress_router_parse_l3(struct __sk_buff *skb)
{
	account_router(skb, false, true);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int egress_fate_parse_l3(struct __sk_buff *skb)
{
	account_router(skb, false, false);
	return TC_ACT_UNSPEC;
}
