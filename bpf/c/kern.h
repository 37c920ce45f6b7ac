// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The few kernel types router mode reads (fate.h), declared with only the
 * fields used and relocated at load against the running kernel's BTF
 * (CO-RE, preserve_access_index): their layout here is never trusted. A
 * vmlinux.h would pin the build to one kernel's headers; these are enough.
 * Names must be the kernel's: CO-RE matches types by name (a ___suffix
 * is ignored). */
#ifndef HOSTFLOW_KERN_H
#define HOSTFLOW_KERN_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
};

struct sk_buff {
	struct net_device *dev;
	/* The layer's control buffer: IPCB(skb), a struct inet_skb_parm,
	 * from IP receive to the driver. */
	char cb[48];
	unsigned long _nfct;
	unsigned int len;
	int skb_iif;
	__be16 protocol;
	__u16 network_header;
	/* Offsets from head on 64-bit kernels (sk_buff_data_t). */
	unsigned int tail;
	unsigned int end;
	unsigned char *head;
	unsigned char *data;
};

struct inet_skb_parm {
	__u16 flags;
	__u16 frag_max_size;
};

struct skb_shared_info {
	unsigned short gso_size;
	unsigned short gso_segs;
};

union nf_inet_addr {
	__u32 all[4];
};

union nf_conntrack_man_proto {
	__be16 all;
};

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union nf_conntrack_man_proto u;
	__u16 l3num;
};

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
	struct {
		union nf_inet_addr u3;
		union {
			__be16 all;
		} u;
		__u8 protonum;
	} dst;
};

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
};

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2];
};

#pragma clang attribute pop

/* skb_nfct returns skb->_nfct, the packet's conntrack entry and ctinfo,
 * or 0 (no entry) on a kernel built without conntrack, whose sk_buff has
 * no such field: the check is a constant at load, so the read is pruned
 * there and the programs still load. */
static __always_inline unsigned long skb_nfct(const struct sk_buff *skb)
{
	if (!bpf_core_field_exists(skb->_nfct))
		return 0;
	return skb->_nfct;
}

#endif
