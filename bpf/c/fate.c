// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Router mode's drop counter (see fate.h): a tp_btf program on the
 * kfree_skb tracepoint counts each dropped packet that arrived on an
 * interface of hostflow's network namespace, with the IANA forwardingStatus
 * code of the kernel's drop reason, under the key it had on arrival.
 *
 * Loaded only in router mode, on the maps of the TC programs (user space
 * passes them in): it runs only when the kernel frees a packet with a drop
 * reason, never on the forwarding path. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "flow.h"
#include "parse.h"
#include "account.h"
#include "kern.h"
#include "fate.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The inode number of hostflow's network namespace, set by user space
 * before load: drops in other namespaces (a container's, the peer of a
 * veth) are not this router's. */
volatile const __u32 netns_inum = 0;

/* How many drop reasons fate_reasons covers; a reason beyond it (or a
 * subsystem's, with high bits set) counts as 128, unknown. */
#define FATE_REASONS 512

/* What a reason code means, as user space fills fate_reasons from the
 * kernel's BTF enum skb_drop_reason (the numbers differ between kernels,
 * the names do not): the low byte is the forwardingStatus code, 0 when
 * the drop is no fate of an arrival (see fate.h); FATE_TTL_CHECK makes it
 * 137 (bad TTL) when the packet's TTL or hop limit is 0 or 1; with
 * FATE_ONLY_ON_ARRIVAL the drop counts only while skb->dev is still the
 * interface the packet arrived by. Mirrored in bpf/fate.go. */
#define FATE_TTL_CHECK 0x100
#define FATE_ONLY_ON_ARRIVAL 0x200

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, FATE_REASONS);
} fate_reasons SEC(".maps");

#define ETH_P_IPV6_ 0x86DD
#define ETH_P_IP_ 0x0800

/* fate_pkt is an IP packet in an skb's linear area: base is its IP header
 * (head + network_header), lim the linear bytes from there, len the
 * packet's length from its IP header on. */
struct fate_pkt {
	const __u8 *base;
	__u32 lim;
	__u32 len;
};

/* fate_read copies n bytes at off of the packet, inside the linear area
 * only: bytes in page fragments are not at base + off. */
static __always_inline int fate_read(const struct fate_pkt *p, __u32 off, void *dst, __u32 n)
{
	if (off > p->lim || n > p->lim - off)
		return -1;
	return bpf_probe_read_kernel(dst, n, p->base + off);
}

/* fate_l4 is parse_l4 (parse.h) on kernel memory. */
static __always_inline int fate_l4(const struct fate_pkt *p, __u32 off, __u32 end, __u8 proto,
				   flow_id *id, struct packet_info *pi)
{
	__u8 buf[TCP_HLEN_];
	__u32 n;

	switch (proto) {
	case IPPROTO_TCP:
		n = TCP_HLEN_;
		break;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE_:
		n = UDP_HLEN_;
		break;
	case IPPROTO_SCTP_:
		n = SCTP_HLEN_;
		break;
	case IPPROTO_ICMP:
		n = ICMP_HLEN_;
		break;
	case IPPROTO_ICMPV6_:
		n = ICMPV6_HLEN_;
		break;
	default:
		return PARSE_OK;
	}
	if (off + n > end || fate_read(p, off, buf, n) < 0)
		return PARSE_MALFORMED;
	switch (proto) {
	case IPPROTO_TCP:
		id->src_port = ((__u16)buf[0] << 8) | buf[1];
		id->dst_port = ((__u16)buf[2] << 8) | buf[3];
		pi->tcp_flags = ((__u16)(buf[12] & 0x01) << 8) | buf[13];
		pi->hdr_len += (buf[12] >> 4) * 4;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		id->icmp_type = buf[0];
		id->icmp_code = buf[1];
		pi->hdr_len += proto == IPPROTO_ICMP ? ICMP_HLEN_ : 8;
		break;
	default:
		id->src_port = ((__u16)buf[0] << 8) | buf[1];
		id->dst_port = ((__u16)buf[2] << 8) | buf[3];
		pi->hdr_len += n;
	}
	return PARSE_OK;
}

/* fate_ipv4 is parse_ipv4 on kernel memory; it also gives the TTL and the
 * header's length. */
static __always_inline int fate_ipv4(const struct fate_pkt *p, flow_id *id, struct packet_info *pi,
				     __u8 *ttl, __u32 *ihl_out)
{
	__u8 h[20];

	if (fate_read(p, 0, h, sizeof(h)) < 0 || (h[0] >> 4) != 4)
		return PARSE_MALFORMED;
	__u32 ihl = (h[0] & 0x0f) * 4;
	if (ihl < 20)
		return PARSE_MALFORMED;
	id->eth_protocol = ETH_P_IP_;
	ipv4_key(h, ihl, id, pi);
	*ttl = h[8];
	*ihl_out = ihl;
	if (pi->ip_len && pi->ip_len < ihl)
		return PARSE_MALFORMED;
	__u32 end = p->len;
	if (pi->ip_len && pi->ip_len < end)
		end = pi->ip_len;
	if (ihl > end)
		return PARSE_MALFORMED;
	if (((((__u16)h[6] << 8) | h[7]) & 0x1fff) != 0)
		return PARSE_OK;
	return fate_l4(p, ihl, end, h[9], id, pi);
}

/* fate_ipv6 is parse_ipv6 on kernel memory; it also gives the hop
 * limit. */
static __always_inline int fate_ipv6(const struct fate_pkt *p, flow_id *id, struct packet_info *pi,
				     __u8 *ttl)
{
	__u8 h[40];

	if (fate_read(p, 0, h, sizeof(h)) < 0 || (h[0] >> 4) != 6)
		return PARSE_MALFORMED;
	id->eth_protocol = ETH_P_IPV6_;
	__builtin_memcpy(id->src_ip, &h[8], 16);
	__builtin_memcpy(id->dst_ip, &h[24], 16);
	id->tos = (h[0] << 4) | (h[1] >> 4);
	*ttl = h[7];
	__u32 payload = ((__u32)h[4] << 8) | h[5];
	__u32 end = p->len;
	if (payload) {
		pi->ip_len = 40 + payload;
		if (pi->ip_len < end)
			end = pi->ip_len;
	}
	__u8 next = h[6];
	__u32 l4 = 40;
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		__u8 ext[8];

		if (next != IPPROTO_HOPOPTS_ && next != IPPROTO_ROUTING_ &&
		    next != IPPROTO_DSTOPTS_ && next != IPPROTO_FRAGMENT_ && next != IPPROTO_AH_)
			break;
		if (l4 + sizeof(ext) > end || fate_read(p, l4, ext, sizeof(ext)) < 0)
			return PARSE_MALFORMED;
		if (next == IPPROTO_FRAGMENT_) {
			__u16 frag_off = (((__u16)ext[2] << 8) | ext[3]) >> 3;
			next = ext[0];
			l4 += 8;
			if (frag_off != 0) {
				id->transport_protocol = next;
				pi->hdr_len = l4;
				return PARSE_OK;
			}
			continue;
		}
		__u32 len = next == IPPROTO_AH_ ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
		next = ext[0];
		l4 += len;
		if (l4 > end)
			return PARSE_MALFORMED;
	}
	id->transport_protocol = next;
	pi->hdr_len = l4;
	return fate_l4(p, l4, end, next, id, pi);
}

/* fate_count_defrag counts the fate of an IPv4 datagram that reassembly
 * (conntrack's defrag at prerouting, or ip_defrag) made of the fragments
 * it arrived in as those fragments, as they were counted on arrival:
 * IPCB(skb)->frag_max_size, set by reassembly only, is the length of the
 * largest one. Taking all but the last to be that long, as Linux and
 * common stacks cut them, there were k = ceil(payload / (max - ihl)):
 * the first, max octets, under id; the k - 1 others under id without
 * ports (parse keys a later fragment by addresses and protocol), with
 * the rest of the octets and a header each. ip_len and ihl are the
 * datagram's. It returns false, counting nothing, for a packet that was
 * not reassembled (frag_max_size 0, or not below ip_len). */
static __always_inline bool fate_count_defrag(struct sk_buff *kskb, flow_id *id, __u32 ip_len,
					      __u32 ihl, __u16 tcp_flags)
{
	if (id->eth_protocol != ETH_P_IP_ ||
	    !bpf_core_field_exists(struct inet_skb_parm, frag_max_size))
		return false;
	const struct inet_skb_parm *parm = (const struct inet_skb_parm *)kskb->cb;
	__u32 max = parm->frag_max_size;
	if (max < ihl + 8 || max >= ip_len)
		return false;
	__u32 per = max - ihl;
	__u32 k = (ip_len - ihl + per - 1) / per;
	if (k < 2)
		return false;
	add_flow(id, 1, max, tcp_flags, 0, true);
	flow_id rest = *id;
	rest.src_port = 0;
	rest.dst_port = 0;
	rest.icmp_type = 0;
	rest.icmp_code = 0;
	add_flow(&rest, k - 1, ip_len - max + (__u64)(k - 1) * ihl, 0, 0, true);
	return true;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(fate_kfree_skb, struct sk_buff *skb, void *location, unsigned int reason)
{
	/* Arrived on an interface: skb_iif is set on receive. Locally
	 * generated packets have none. */
	int iif = skb->skb_iif;
	if (iif <= 0)
		return 0;
	struct net_device *dev = skb->dev;
	if (!dev || dev->nd_net.net->ns.inum != netns_inum)
		return 0;

	__u32 r = reason;
	__u32 v = FATE_DROP_UNKNOWN;
	if (r < FATE_REASONS) {
		__u32 *c = bpf_map_lookup_elem(&fate_reasons, &r);
		if (c)
			v = *c;
	}
	if ((v & 0xff) == 0)
		return 0;
	if ((v & FATE_ONLY_ON_ARRIVAL) && dev->ifindex != iif)
		return 0;
	if (!fate_watched(iif))
		return 0;

	flow_id id = {};
	struct packet_info pi = {};
	__u16 nh = skb->network_header;
	unsigned char *head = skb->head;
	unsigned char *data = skb->data;
	__u32 tail = skb->tail;
	/* The IP packet's length from its header on: skb->len counts from
	 * data, which may be before the IP header (still at the link
	 * layer) or after it (pulled to the transport header). */
	__s64 len = (__s64)skb->len + (data - head) - nh;
	if (nh == 0xffff || nh > tail || len <= 0) {
		count(COUNTER_FATE_MALFORMED);
		return 0;
	}
	struct fate_pkt p = {.base = head + nh, .lim = tail - nh, .len = len};
	__u8 ttl = 255;
	__u32 ihl = 0;
	int res;
	__be16 proto = skb->protocol;
	if (proto == bpf_htons(ETH_P_IP_))
		res = fate_ipv4(&p, &id, &pi, &ttl, &ihl);
	else if (proto == bpf_htons(ETH_P_IPV6_))
		res = fate_ipv6(&p, &id, &pi, &ttl);
	else
		return 0; /* not IP: not a flow */
	if (res != PARSE_OK) {
		count(COUNTER_FATE_MALFORMED);
		return 0;
	}

	__u8 code = v & 0xff;
	if ((v & FATE_TTL_CHECK) && ttl <= 1)
		code = FATE_DROP_BAD_TTL;
	fate_key(&id, iif, code, skb_nfct(skb));

	/* GSO as in count_packet (account.h). */
	__u64 packets = 1;
	__u64 bytes = p.len;
	if (pi.ip_len && pi.ip_len < bytes)
		bytes = pi.ip_len;
	struct skb_shared_info *shinfo = (struct skb_shared_info *)(head + skb->end);
	__u16 segs = 0, gso_size = 0;
	bpf_core_read(&segs, sizeof(segs), &shinfo->gso_segs);
	bpf_core_read(&gso_size, sizeof(gso_size), &shinfo->gso_size);
	__u32 nsegs = segs;
	if (nsegs == 0 && gso_size && bytes > pi.hdr_len)
		nsegs = (bytes - pi.hdr_len + gso_size - 1) / gso_size;
	if (nsegs > 1) {
		packets = nsegs;
		bytes += (__u64)(nsegs - 1) * pi.hdr_len;
	}
	/* A datagram reassembled from fragments, as its fragments. Not
	 * TCP's: the TCP layer moves the IPCB within skb->cb (its drops,
	 * 141, would read something else). */
	if (nsegs <= 1 && id.eth_protocol == ETH_P_IP_ && id.transport_protocol != IPPROTO_TCP &&
	    fate_count_defrag(skb, &id, bytes, ihl, pi.tcp_flags))
		return 0;
	add_flow(&id, packets, bytes, pi.tcp_flags, 0, true);
	return 0;
}
