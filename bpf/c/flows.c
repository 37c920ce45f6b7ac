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

char __license[] SEC("license") = "Dual BSD/GPL";

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
