// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Router mode: each packet's fate, counted where the kernel decides it.
 *
 * A packet that arrives on an interface hostflow watches is counted by the
 * TC ingress program as always, with fate 0 (the "arrival" record). What
 * becomes of it afterwards is counted once more, under the same key but
 * for the fate byte (the key it had on arrival: if_index the interface it
 * came in on, direction ingress, addresses and ports before NAT):
 *
 * - forwarded (64): by the TC egress program of the interface it leaves
 *   by, when skb->ingress_ifindex says it arrived on an interface (flows.c);
 * - dropped (128-143): by the kfree_skb tracepoint program (fate.c), with
 *   the IANA code of the kernel's drop reason;
 * - consumed (delivered to a local socket): never counted here; user space
 *   derives it as arrived minus the fates counted.
 *
 * Why no packet gets two fates:
 *
 * - Forwarded vs dropped: a packet is freed once, so it meets the
 *   kfree_skb tracepoint at most once (consume_skb, the normal end of a
 *   delivered or transmitted skb, fires another tracepoint). The only
 *   packets that meet both TC egress and a drop are those dropped after
 *   TC egress, by the egress qdisc or the device: those reasons are "not a
 *   fate" (code 0) in the reason table user space fills (bpf/fate.go), and
 *   the reasons a driver may also give after TC egress (unspecified, no
 *   memory) count only while the packet is still on the interface it
 *   arrived by (skb->dev is skb_iif; a forwarded packet's device is its
 *   output interface from ip_output on, before TC egress). Netfilter's
 *   forward, postrouting and netdev egress hooks, the neighbour layer and
 *   the routing all run before TC egress: their drops are fates, and such
 *   a packet never reaches TC egress.
 * - Dropped vs arrival: the arrival record is not a fate; a drop is
 *   counted only for a packet that came in on an interface whose TC
 *   ingress program counted it (fate_ifaces, kept by user space), in
 *   hostflow's network namespace. Drops before that program saw the
 *   packet (XDP, the CPU backlog, a TC ingress program that runs before
 *   hostflow's: with tcx hostflow's program is the last on the hook) are
 *   code 0. User space subtracts the fates from the arrivals: what is
 *   left was consumed.
 * - Forwarded twice: TC egress sees a packet once per interface it leaves
 *   by. A packet that leaves through stacked devices (a VLAN device and
 *   its port, a bridge and its port) is counted forwarded on each that is
 *   watched, as it is counted on each in host mode: watch one layer.
 *   Multicast copies are each forwarded.
 *
 * - Fate without arrival: both the forwarded and the drop count require
 *   the arrival interface (skb_iif) in fate_ifaces. A packet forwarded
 *   from another interface is counted at TC egress only where egress
 *   counting was asked for, as an egress packet (fate 0), as in host
 *   mode. The arrival interface is the one skb_iif names: for a VLAN
 *   subinterface or a VRF slave's VRF device, that device, not the lower
 *   link; watch that device for ingress to get the fates.
 *
 * - Fragments (IPv4), counted as they arrived:
 *   - without conntrack, fragments are forwarded as they came, each
 *     counted. A packet that arrived whole and that the router fragments
 *     on output is one forwarded packet, counted by its first fragment
 *     (with that fragment's length, less than the arrival's); the later
 *     ones, which carry IPSKB_FRAG_COMPLETE in their IPCB
 *     (fate_router_fragment), are not counted;
 *   - with conntrack, its defrag reassembles the fragments at prerouting,
 *     and the datagram meets its fate as one skb. Dropped, it is counted
 *     as the fragments it arrived in (fate_count_defrag, from the size of
 *     the largest, which reassembly keeps). Forwarded, the router always
 *     cuts it again at that size, so the fragments leave as they arrived:
 *     each is counted (a packet with a conntrack entry is not checked for
 *     IPSKB_FRAG_COMPLETE). The gap: a packet that arrived whole on a
 *     router with conntrack and that the router fragments is counted once
 *     per fragment, the later ones under a key without ports that no
 *     arrival has.
 *
 * Known gaps: with clsact (Linux < 6.6), hostflow's filter runs first on
 * its hook, so a drop by a later TC ingress filter (code 0) is reported as
 * consumed by user space, and one by a later TC egress filter is counted
 * as a drop (138) beside the forwarded count.
 *
 * Drops are counted unsampled (their records say sampling 0) while
 * arrivals and forwarded packets are sampled as configured: the drop
 * program runs only when the kernel frees a packet, never on the
 * forwarding path. */
#ifndef HOSTFLOW_FATE_H
#define HOSTFLOW_FATE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flow.h"
#include "kern.h"

/* The interfaces whose arrivals hostflow counts: those with its TC
 * ingress program (user space keeps them, in router mode only). A fate is
 * counted, forwarded or dropped, only for a packet that arrived
 * (skb->skb_iif, the __sk_buff's ingress_ifindex) on one of them: one
 * that came in on another interface (the loopback, an interface hostflow
 * does not watch or watches for egress only, a VLAN or VRF device whose
 * lower link is the one watched) has no arrival record for its fate to
 * end. Shared by the TC programs and the drop counter.
 *
 * An ifindex below FATE_IFACE_BITS is a bit of fate_iface_bits (bit i % 64
 * of word i / 64): an array lookup the verifier inlines, on the path of
 * every forwarded packet. Larger ones (a namespace that has created a
 * quarter million devices) are keys of fate_ifaces. User space shrinks
 * both to one entry without router mode. Mirrored in bpf/fate.go. */
#define FATE_IFACE_WORDS 4096
#define FATE_IFACE_BITS (FATE_IFACE_WORDS * 64)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FATE_IFACE_WORDS);
} fate_iface_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
} fate_ifaces SEC(".maps");

/* fate_watched reports whether hostflow counts the arrivals of ifindex
 * iif. */
static __always_inline bool fate_watched(__u32 iif)
{
	if (iif < FATE_IFACE_BITS) {
		__u32 w = iif / 64;
		__u64 *bits = bpf_map_lookup_elem(&fate_iface_bits, &w);
		return bits && ((*bits >> (iif % 64)) & 1);
	}
	return bpf_map_lookup_elem(&fate_ifaces, &iif) != 0;
}

/* IANA forwardingStatus (RFC 7270). */
#define FATE_FORWARDED 64
#define FATE_DROP_UNKNOWN 128
#define FATE_DROP_BAD_TTL 137

#define IPPROTO_DCCP_ 33
#define IPPROTO_SCTP_F 132
#define IPPROTO_UDPLITE_F 136

/* ctinfo values of skb->_nfct's low bits (enum ip_conntrack_info): from
 * IP_CT_IS_REPLY (3) on, the packet goes in the reply direction; above
 * IP_CT_RELATED_REPLY (4), there is no connection (untracked). */
#define CT_IS_REPLY 3
#define CT_RELATED_REPLY 4
#define NFCT_INFOMASK 7UL

/* The two tuple hashes of a struct nf_conn as read from the kernel in one
 * copy: their layout has not changed since conntrack became protocol
 * independent, and fate_arrival_tuple checks it against the kernel's BTF
 * (the checks are constants at load: the verifier prunes the ones that
 * pass). */
struct ct_tuple_raw {
	__u32 src[4];
	__be16 src_port;
	__u16 l3num;
	__u32 dst[4];
	__be16 dst_port;
	__u8 protonum;
	__u8 dir;
};

struct ct_hash_raw {
	__u8 hnnode[16];
	struct ct_tuple_raw tuple;
};

_Static_assert(sizeof(struct ct_tuple_raw) == 40, "nf_conntrack_tuple is 40 bytes");
_Static_assert(sizeof(struct ct_hash_raw) == 56, "nf_conntrack_tuple_hash is 56 bytes");

/* fate_arrival_tuple rewrites id's addresses and ports to what they were
 * when the packet arrived, before NAT, from the conntrack entry the packet
 * carries (nfct is skb->_nfct). An entry holds, for each direction, the
 * tuple of that direction's packets as they come in (in), and NAT makes
 * a packet leave as the inverse of the other direction's tuple (other):
 * so a source equal to other's destination was in's source on arrival,
 * and a destination equal to other's source was in's destination; a field
 * NAT did not touch (yet: a drop between DNAT and SNAT) stays. The same
 * rule holds for a related packet, an ICMP error that carries its
 * parent connection's entry: its outer addresses are NATed as the
 * parent's (an error from a router on the way keeps that router's
 * address). Ports only when the entry is the packet's own connection
 * (same protocol). Without conntrack in the kernel's BTF, or without an
 * entry, the headers stand as they are. */
static __always_inline void fate_arrival_tuple(flow_id *id, unsigned long nfct)
{
	if (!bpf_core_type_exists(struct nf_conn))
		return;
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~NFCT_INFOMASK);
	__u32 ctinfo = nfct & NFCT_INFOMASK;
	if (!ct || ctinfo > CT_RELATED_REPLY)
		return;
	if (bpf_core_type_size(struct nf_conntrack_tuple_hash) != sizeof(struct ct_hash_raw) ||
	    bpf_core_field_offset(struct nf_conntrack_tuple_hash, tuple) != 16 ||
	    bpf_core_field_size(struct nf_conn, tuplehash) != 2 * sizeof(struct ct_hash_raw) ||
	    bpf_core_field_offset(struct nf_conntrack_man, u) != 16 ||
	    bpf_core_field_offset(struct nf_conntrack_tuple, dst) != 20 ||
	    bpf_core_field_offset(struct nf_conntrack_tuple, dst.u) != 36 ||
	    bpf_core_field_offset(struct nf_conntrack_tuple, dst.protonum) != 38)
		return;
	struct ct_hash_raw h[2];
	if (bpf_probe_read_kernel(h, sizeof(h), &ct->tuplehash[0]) < 0)
		return;
	const struct ct_tuple_raw *in = &h[0].tuple, *other = &h[1].tuple;
	if (ctinfo >= CT_IS_REPLY) {
		in = &h[1].tuple;
		other = &h[0].tuple;
	}
	if (id->eth_protocol == ETH_P_IP) {
		hf_u32 *s = (hf_u32 *)&id->src_ip[12], *d = (hf_u32 *)&id->dst_ip[12];
		if (*s == other->dst[0])
			*s = in->src[0];
		if (*d == other->src[0])
			*d = in->dst[0];
	} else {
		hf_u32 *s = (hf_u32 *)id->src_ip, *d = (hf_u32 *)id->dst_ip;
		if (s[0] == other->dst[0] && s[1] == other->dst[1] && s[2] == other->dst[2] &&
		    s[3] == other->dst[3])
			__builtin_memcpy(s, in->src, 16);
		if (d[0] == other->src[0] && d[1] == other->src[1] && d[2] == other->src[2] &&
		    d[3] == other->src[3])
			__builtin_memcpy(d, in->dst, 16);
	}
	if (in->protonum != id->transport_protocol)
		return;
	switch (in->protonum) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE_F:
	case IPPROTO_SCTP_F:
	case IPPROTO_DCCP_:
		if (id->src_port == bpf_ntohs(other->dst_port))
			id->src_port = bpf_ntohs(in->src_port);
		if (id->dst_port == bpf_ntohs(other->src_port))
			id->dst_port = bpf_ntohs(in->dst_port);
	}
}

/* IPSKB_FRAG_COMPLETE (include/net/ip.h, a #define: not in the BTF, the
 * same bit since Linux 4.x): ip_do_fragment sets it in the IPCB of the
 * packet it cuts, and copies it into each fragment. */
#define IPSKB_FRAG_COMPLETE_ 8

/* fate_router_fragment reports whether the IPv4 packet is a fragment the
 * router itself cut on output (kskb is the kernel's skb): its IPCB says
 * so. At TC egress the IPCB is still there (IP output hands the skb to
 * the device with it; struct qdisc_skb_cb overlays only its first bytes,
 * and a TC program that writes skb->cb[3] before hostflow's would mislead
 * this). Called for fragments only: the read is off the fast path. */
static __always_inline bool fate_router_fragment(struct sk_buff *kskb)
{
	const struct inet_skb_parm *parm = (const struct inet_skb_parm *)kskb->cb;
	return parm->flags & IPSKB_FRAG_COMPLETE_;
}

/* fate_key turns a parsed packet's key into its arrival key with fate:
 * arrived on iif, direction ingress, no VLAN (the interface skb_iif names
 * is the one the tag, if any, was taken off by), before NAT. */
static __always_inline void fate_key(flow_id *id, __u32 iif, __u8 fate, unsigned long nfct)
{
	fate_arrival_tuple(id, nfct);
	id->if_index = iif;
	id->direction = 0;
	id->vlan_id = 0;
	id->fate = fate;
}

#endif
