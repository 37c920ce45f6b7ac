// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket filters that account every packet to its flow, for hosts where
 * the TC hooks cannot be used (no tcx, clsact owned by someone else, ...).
 * User space attaches them with SO_ATTACH_BPF to an AF_PACKET socket bound
 * to one interface with ETH_P_ALL: such a tap is handed every packet the
 * interface receives (before the IP stack) and every packet it sends
 * (dev_queue_xmit_nit, after the qdiscs), once per direction.
 *
 * The maps and the accounting are those of the TC programs (account.h), and
 * so is the parser: the filter reads the packet with bpf_skb_load_bytes
 * only, as TC does.
 *
 * A socket filter's return value is how many bytes of the packet to queue on
 * the socket; 0 drops the socket's copy. The filter runs before that
 * decision, on every packet the tap is handed, so returning 0 always lets it
 * see everything while the socket's receive queue stays empty: no packet is
 * ever copied to user space, and the packet's own fate is not affected (the
 * tap only ever holds a reference or a clone). */
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>

#include "flow.h"
#include "parse.h"
#include "account.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* direction maps skb->pkt_type to flowDirection. PACKET_OUTGOING is what
 * the interface sends. Everything else was received: PACKET_HOST,
 * _BROADCAST and _MULTICAST, PACKET_LOOPBACK (multicast looped back to the
 * host) and PACKET_OTHERHOST (a frame for another MAC address, seen in
 * promiscuous mode or on a veth) are ingress, as TC ingress counts them
 * too: the IP stack drops OTHERHOST frames only after both hooks. */
static __always_inline __u8 direction(const struct __sk_buff *skb)
{
	return skb->pkt_type == PACKET_OUTGOING ? 1 : 0;
}

/* For devices with an Ethernet header: the packet socket hands the filter
 * the frame from the MAC header on, in both directions. */
SEC("socket")
int sock_flow_parse(struct __sk_buff *skb)
{
	account(skb, direction(skb), true, false);
	return 0;
}

/* For devices without a link-layer header (tun, wireguard, ...): the
 * packet starts at the IP header and skb->protocol names it. */
SEC("socket")
int sock_flow_parse_l3(struct __sk_buff *skb)
{
	account(skb, direction(skb), false, false);
	return 0;
}
