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
 * Why no packet gets two fates: a packet is freed once, so it meets the
 * kfree_skb tracepoint at most once (consume_skb, the normal end of a
 * delivered or transmitted skb, fires another tracepoint). It passes TC
 * egress at most once per interface it leaves by. The only packets that
 * can meet both are those dropped after TC egress: by the egress qdisc or
 * the device. Those reasons are marked "not a fate" (code 0) in the
 * reason table user space fills (bpf/fate.go), and reasons that can also
 * come from a driver after TC egress (unspecified, no memory) count only
 * while the packet is still on the interface it arrived by (skb->dev is
 * skb_iif): a forwarded packet's device is its output interface from
 * ip_output on. Drops before the packet was counted on arrival (XDP, the
 * CPU backlog, a TC ingress program before hostflow's) are not fates of
 * an arrival either: code 0. A drop is thus never counted beside its
 * packet's forwarded count, and only ever as the end of a packet that
 * arrived: user space subtracts the fates from the arrivals.
 *
 * Drops are counted unsampled (their records say sampling 0): the drop
 * program runs only when the kernel frees a packet, so it costs nothing
 * on the forwarding path. */
#ifndef HOSTFLOW_FATE_H
#define HOSTFLOW_FATE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flow.h"
#include "kern.h"

/* IANA forwardingStatus (RFC 7270). */
#define FATE_FORWARDED 64
#define FATE_DROP_UNKNOWN 128
#define FATE_DROP_BAD_TTL 137

#define IPPROTO_DCCP_ 33
#define IPPROTO_SCTP_F 132
#define IPPROTO_UDPLITE_F 136

/* ctinfo values of skb->_nfct's low bits (enum ip_conntrack_info). */
#define CT_ESTABLISHED 0
#define CT_NEW 2
#define CT_ESTABLISHED_REPLY 3
#define NFCT_INFOMASK 7UL

/* The tuple halves as read from the kernel: their inner layout has not
 * changed since conntrack became protocol independent (checked against
 * the kernel's BTF at load in fate_arrival_tuple). */
struct ct_man_src {
	__u8 u3[16];
	__be16 port;
};

struct ct_man_dst {
	__u8 u3[16];
	__be16 port;
	__u8 protonum;
};

/* fate_arrival_tuple rewrites id's addresses and ports to what they were
 * when the packet arrived, before NAT: the conntrack entry the packet
 * carries (nfct is skb->_nfct) holds, for each direction, the tuple of
 * the packets of that direction as they came in. Only for packets of the
 * connection itself (new, established or their replies): a related
 * packet (an ICMP error) carries its parent connection's entry, whose
 * tuple is not the packet's. Without conntrack in the kernel's BTF, or
 * without an entry, the headers stand as they are. */
static __always_inline void fate_arrival_tuple(flow_id *id, unsigned long nfct)
{
	if (!bpf_core_type_exists(struct nf_conn))
		return;
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~NFCT_INFOMASK);
	__u32 ctinfo = nfct & NFCT_INFOMASK;
	if (!ct || (ctinfo != CT_ESTABLISHED && ctinfo != CT_NEW && ctinfo != CT_ESTABLISHED_REPLY))
		return;
	/* The inner layout read below, as the kernel has it. */
	if (bpf_core_field_offset(struct nf_conntrack_man, u) != 16 ||
	    bpf_core_field_offset(struct nf_conntrack_tuple, dst.u) -
			    bpf_core_field_offset(struct nf_conntrack_tuple, dst) != 16 ||
	    bpf_core_field_offset(struct nf_conntrack_tuple, dst.protonum) -
			    bpf_core_field_offset(struct nf_conntrack_tuple, dst) != 18)
		return;
	struct nf_conntrack_tuple *t = &ct->tuplehash[0].tuple;
	if (ctinfo == CT_ESTABLISHED_REPLY)
		t = &ct->tuplehash[1].tuple;
	struct ct_man_src src;
	struct ct_man_dst dst;
	if (bpf_probe_read_kernel(&dst, sizeof(dst), &t->dst) < 0 ||
	    bpf_probe_read_kernel(&src, sizeof(src), &t->src) < 0)
		return;
	if (dst.protonum != id->transport_protocol)
		return;
	if (id->eth_protocol == ETH_P_IP) {
		__builtin_memcpy(&id->src_ip[12], src.u3, 4);
		__builtin_memcpy(&id->dst_ip[12], dst.u3, 4);
	} else {
		__builtin_memcpy(id->src_ip, src.u3, 16);
		__builtin_memcpy(id->dst_ip, dst.u3, 16);
	}
	switch (dst.protonum) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE_F:
	case IPPROTO_SCTP_F:
	case IPPROTO_DCCP_:
		/* A non-first fragment is keyed without ports on arrival. */
		if (id->src_port == 0 && id->dst_port == 0)
			break;
		id->src_port = bpf_ntohs(src.port);
		id->dst_port = bpf_ntohs(dst.port);
	}
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
