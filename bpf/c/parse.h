// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The one packet parser, shared by every hostflow program.
 *
 * Every frame can be parsed with bpf_skb_load_bytes (parse_slow): an skb
 * built by an AF_PACKET sender with a TX ring (and many drivers' receive
 * paths) keeps only the Ethernet header in the linear area, and a parser
 * that reads only data..data_end sees nothing behind it. The common frames
 * are read with one look (parse_fast: in place, or from one copy of the
 * first bytes), the rest with parse_slow. */
#ifndef HOSTFLOW_PARSE_H
#define HOSTFLOW_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <stdbool.h>

#include "flow.h"

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HEADERS 8

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60
#define IPPROTO_SCTP_ 132
#define IPPROTO_UDPLITE_ 136

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP = 1,
	PARSE_MALFORMED = 2,
};

/* packet_info is what the parser learns besides the flow key. */
struct packet_info {
	/* Offset of the IP header from skb->data. */
	__u32 l3_off;
	/* Length of all headers from the IP header to the end of the transport
	 * header; every segment of a GSO packet repeats them. */
	__u32 hdr_len;
	/* Length the IP header declares (IPv4 total length, IPv6 40 + payload
	 * length); 0 when it declares none (IPv6 jumbograms, BIG TCP). */
	__u32 ip_len;
	__u16 tcp_flags;
	/* An IPv4 fragment other than the first (offset > 0). */
	__u8 later_fragment;
};

/* Fixed transport header sizes: TCP 20 bytes (RFC 9293), UDP and UDP-Lite
 * 8, the SCTP common header 12, ICMP 8 (RFC 792), ICMPv6 type, code and
 * checksum 4 (RFC 4443). A packet that ends before its transport header
 * does is malformed. */
#define TCP_HLEN_ 20
#define UDP_HLEN_ 8
#define SCTP_HLEN_ 12
#define ICMP_HLEN_ 8
#define ICMPV6_HLEN_ 4

/* parse_l4 reads ports, ICMP type/code and TCP flags at off. end is where
 * the IP packet ends (its declared length, or the frame's end): a header
 * must lie before it, so that Ethernet padding or a trailer behind a short
 * packet is never read as ports. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u32 end, __u8 proto,
				    flow_id *id, struct packet_info *pi)
{
	__u8 buf[TCP_HLEN_];

	switch (proto) {
	case IPPROTO_TCP:
		if (off + TCP_HLEN_ > end || bpf_skb_load_bytes(skb, off, buf, TCP_HLEN_) < 0)
			return PARSE_MALFORMED;
		id->src_port = ((__u16)buf[0] << 8) | buf[1];
		id->dst_port = ((__u16)buf[2] << 8) | buf[3];
		/* NS is the low bit of byte 12, the other eight flags byte 13. */
		pi->tcp_flags = ((__u16)(buf[12] & 0x01) << 8) | buf[13];
		pi->hdr_len += (buf[12] >> 4) * 4;
		return PARSE_OK;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE_:
		if (off + UDP_HLEN_ > end || bpf_skb_load_bytes(skb, off, buf, UDP_HLEN_) < 0)
			return PARSE_MALFORMED;
		id->src_port = ((__u16)buf[0] << 8) | buf[1];
		id->dst_port = ((__u16)buf[2] << 8) | buf[3];
		pi->hdr_len += UDP_HLEN_;
		return PARSE_OK;
	case IPPROTO_SCTP_:
		if (off + SCTP_HLEN_ > end || bpf_skb_load_bytes(skb, off, buf, SCTP_HLEN_) < 0)
			return PARSE_MALFORMED;
		id->src_port = ((__u16)buf[0] << 8) | buf[1];
		id->dst_port = ((__u16)buf[2] << 8) | buf[3];
		pi->hdr_len += SCTP_HLEN_;
		return PARSE_OK;
	case IPPROTO_ICMP:
		if (off + ICMP_HLEN_ > end || bpf_skb_load_bytes(skb, off, buf, ICMP_HLEN_) < 0)
			return PARSE_MALFORMED;
		id->icmp_type = buf[0];
		id->icmp_code = buf[1];
		pi->hdr_len += ICMP_HLEN_;
		return PARSE_OK;
	case IPPROTO_ICMPV6_:
		if (off + ICMPV6_HLEN_ > end || bpf_skb_load_bytes(skb, off, buf, ICMPV6_HLEN_) < 0)
			return PARSE_MALFORMED;
		id->icmp_type = buf[0];
		id->icmp_code = buf[1];
		pi->hdr_len += 8;
		return PARSE_OK;
	}
	return PARSE_OK;
}

/* ipv4_key fills the IPv4 part of id (IPv4-mapped addresses, protocol,
 * TOS) and of pi (header and total lengths) from h, a copy of the 20 bytes
 * of a header of ihl bytes. */
static __always_inline void ipv4_key(const __u8 *h, __u32 ihl, flow_id *id,
				     struct packet_info *pi)
{
	id->src_ip[10] = 0xff;
	id->src_ip[11] = 0xff;
	id->dst_ip[10] = 0xff;
	id->dst_ip[11] = 0xff;
	__builtin_memcpy(&id->src_ip[12], &h[12], 4);
	__builtin_memcpy(&id->dst_ip[12], &h[16], 4);
	id->transport_protocol = h[9];
	id->tos = h[1];
	pi->hdr_len = ihl;
	pi->ip_len = ((__u32)h[2] << 8) | h[3];
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, flow_id *id,
				      struct packet_info *pi)
{
	__u8 h[20];

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 4)
		return PARSE_MALFORMED;
	__u32 ihl = (h[0] & 0x0f) * 4;
	if (ihl < 20)
		return PARSE_MALFORMED;

	ipv4_key(h, ihl, id, pi);

	/* The packet ends where its total length says, or with the frame
	 * when that is 0 (TSO, BIG TCP). Its header, options included, must
	 * fit in it. */
	if (pi->ip_len && pi->ip_len < ihl)
		return PARSE_MALFORMED;
	__u32 end = skb->len;
	if (pi->ip_len && off + pi->ip_len < end)
		end = off + pi->ip_len;
	if (off + ihl > end)
		return PARSE_MALFORMED;

	/* A non-first fragment carries no transport header: what follows the
	 * IP header is payload and must never be read as ports. Such fragments
	 * are keyed by addresses and protocol with ports 0. */
	__u16 frag_off = (((__u16)h[6] << 8) | h[7]) & 0x1fff;
	if (frag_off != 0) {
		pi->later_fragment = 1;
		return PARSE_OK;
	}
	return parse_l4(skb, off + ihl, end, h[9], id, pi);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, flow_id *id,
				      struct packet_info *pi)
{
	__u8 h[40];

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 6)
		return PARSE_MALFORMED;
	__builtin_memcpy(id->src_ip, &h[8], 16);
	__builtin_memcpy(id->dst_ip, &h[24], 16);
	/* Traffic Class: the 8 bits after the version. */
	id->tos = (h[0] << 4) | (h[1] >> 4);
	__u32 payload = ((__u32)h[4] << 8) | h[5];
	__u32 end = skb->len;
	if (payload) {
		pi->ip_len = 40 + payload;
		if (off + pi->ip_len < end)
			end = off + pi->ip_len;
	}

	__u8 next = h[6];
	__u32 l4 = off + 40;

	/* Walk a bounded chain of extension headers to the transport header. */
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		__u8 ext[8];

		if (next != IPPROTO_HOPOPTS_ && next != IPPROTO_ROUTING_ &&
		    next != IPPROTO_DSTOPTS_ && next != IPPROTO_FRAGMENT_ &&
		    next != IPPROTO_AH_)
			break;
		if (l4 + sizeof(ext) > end || bpf_skb_load_bytes(skb, l4, ext, sizeof(ext)) < 0)
			return PARSE_MALFORMED;
		if (next == IPPROTO_FRAGMENT_) {
			__u16 frag_off = (((__u16)ext[2] << 8) | ext[3]) >> 3;
			next = ext[0];
			l4 += 8;
			if (frag_off != 0) {
				/* Non-first fragment: no transport header. */
				id->transport_protocol = next;
				pi->hdr_len = l4 - off;
				return PARSE_OK;
			}
			continue;
		}
		__u32 len = next == IPPROTO_AH_ ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
		next = ext[0];
		l4 += len;
		/* An extension header must end inside the packet. */
		if (l4 > end)
			return PARSE_MALFORMED;
	}
	id->transport_protocol = next;
	pi->hdr_len = l4 - off;
	return parse_l4(skb, l4, end, next, id, pi);
}

/* parse_l3 dispatches on the ethertype proto of an L3 header at off. */
static __always_inline int parse_l3(struct __sk_buff *skb, __u32 off, __u16 proto,
				    flow_id *id, struct packet_info *pi)
{
	id->eth_protocol = proto;
	pi->l3_off = off;
	switch (proto) {
	case ETH_P_IP:
		return parse_ipv4(skb, off, id, pi);
	case ETH_P_IPV6:
		return parse_ipv6(skb, off, id, pi);
	}
	return PARSE_NOT_IP;
}

/* parse_slow parses any frame with bpf_skb_load_bytes. */
static __always_inline int parse_slow(struct __sk_buff *skb, flow_id *id,
				      struct packet_info *pi, const bool l2)
{
	__u8 eth[4];
	__u32 off = 12;

	/* The outer tag's VID, even when it is 0 (a priority tag): VID 0
	 * cannot stand for "no tag yet". */
	bool tagged = skb->vlan_present;

	if (tagged)
		id->vlan_id = skb->vlan_tci & 0x0fff;
	if (!l2)
		return parse_l3(skb, 0, bpf_ntohs(skb->protocol), id, pi);

	if (bpf_skb_load_bytes(skb, off, eth, 2) < 0)
		return PARSE_MALFORMED;
	__u16 proto = ((__u16)eth[0] << 8) | eth[1];
	off += 2;

	/* A tag the kernel already took off the frame (hardware or
	 * skb_vlan_untag) is the outer one: it was read above. */
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != ETH_P_8021Q_ && proto != ETH_P_8021AD_)
			break;
		if (bpf_skb_load_bytes(skb, off, eth, 4) < 0)
			return PARSE_MALFORMED;
		if (!tagged)
			id->vlan_id = (((__u16)eth[0] << 8) | eth[1]) & 0x0fff;
		tagged = true;
		proto = ((__u16)eth[2] << 8) | eth[3];
		off += VLAN_HLEN_;
	}
	return parse_l3(skb, off, proto, id, pi);
}


#define PARSE_FAST_MISS 3

/* parse_fast reads 16- and 32-bit fields with one load each, not byte by
 * byte: packet data may be read unaligned on the architectures where the
 * verifier allows it (it is not strict about packet alignment where the
 * CPU is not), and the copy parse_fast_copy takes is placed so that every
 * field it reads is aligned to its size (the verifier always is strict
 * about the stack). */
typedef __u16 __attribute__((may_alias)) hf_u16;
typedef __u32 __attribute__((may_alias)) hf_u32;

static __always_inline __u16 be16(const __u8 *p)
{
	return bpf_ntohs(*(const hf_u16 *)p);
}

static __always_inline void copy32(__u8 *dst, const __u8 *src)
{
	*(hf_u32 *)dst = *(const hf_u32 *)src;
}

/* parse_fast_l4 reads the transport header at the constant offset l4 of
 * an IP packet that ends at end (relative to data). It handles TCP, UDP and
 * ICMP(v6) only; anything else, or anything parse_l4 would call malformed,
 * is a miss. */
static __always_inline int parse_fast_l4(const __u8 *data, const __u8 *data_end, const __u32 l4,
					 __u32 end, __u8 proto, flow_id *id, struct packet_info *pi)
{
	const __u8 *t = data + l4;

	switch (proto) {
	case IPPROTO_TCP:
		if (l4 + TCP_HLEN_ > end || t + TCP_HLEN_ > data_end)
			return PARSE_FAST_MISS;
		id->src_port = be16(t);
		id->dst_port = be16(t + 2);
		pi->tcp_flags = ((__u16)(t[12] & 0x01) << 8) | t[13];
		pi->hdr_len += (t[12] >> 4) * 4;
		return PARSE_OK;
	case IPPROTO_UDP:
		if (l4 + UDP_HLEN_ > end || t + UDP_HLEN_ > data_end)
			return PARSE_FAST_MISS;
		id->src_port = be16(t);
		id->dst_port = be16(t + 2);
		pi->hdr_len += UDP_HLEN_;
		return PARSE_OK;
	case IPPROTO_ICMP:
		if (l4 + ICMP_HLEN_ > end || t + ICMP_HLEN_ > data_end)
			return PARSE_FAST_MISS;
		id->icmp_type = t[0];
		id->icmp_code = t[1];
		pi->hdr_len += ICMP_HLEN_;
		return PARSE_OK;
	case IPPROTO_ICMPV6_:
		if (l4 + ICMPV6_HLEN_ > end || t + ICMPV6_HLEN_ > data_end)
			return PARSE_FAST_MISS;
		id->icmp_type = t[0];
		id->icmp_code = t[1];
		pi->hdr_len += 8;
		return PARSE_OK;
	}
	return PARSE_FAST_MISS;
}

/* parse_fast reads, from data..data_end (the skb's linear area in place,
 * or a copy of the frame's first bytes), the frames that make most of the
 * traffic: untagged Ethernet, IPv4 without options and
 * not fragmented, or IPv6 without extension headers, then TCP, UDP or
 * ICMP. Every offset is a constant, so the verifier sees one straight
 * path. It gives exactly what parse_slow gives for those frames (the
 * differential fuzz test runs both); for every other frame, and for any
 * frame parse_slow would call malformed, it returns PARSE_FAST_MISS
 * without deciding anything. len is the whole frame's length (skb->len). */
static __always_inline int parse_fast(const __u8 *data, const __u8 *data_end, __u32 len,
				      flow_id *id, struct packet_info *pi)
{
	if (data + ETH_HLEN_ > data_end)
		return PARSE_FAST_MISS;
	__u16 proto = be16(data + 12);

	if (proto == ETH_P_IP) {
		const __u8 *h = data + ETH_HLEN_;
		if (h + 20 > data_end || h[0] != 0x45)
			return PARSE_FAST_MISS;
		__u32 ip_len = be16(h + 2);
		/* Fragments, and a total length of 0 (TSO), take the slow path. */
		/* Fragment offset, and the more-fragments flag, in one load. */
		if ((*(const hf_u16 *)(h + 6) & bpf_htons(0x3fff)) != 0 || ip_len < 20)
			return PARSE_FAST_MISS;
		__u32 end = len;
		if (ETH_HLEN_ + ip_len < end)
			end = ETH_HLEN_ + ip_len;
		if (ETH_HLEN_ + 20 > end)
			return PARSE_FAST_MISS;
		id->eth_protocol = ETH_P_IP;
		id->src_ip[10] = 0xff;
		id->src_ip[11] = 0xff;
		id->dst_ip[10] = 0xff;
		id->dst_ip[11] = 0xff;
		copy32(&id->src_ip[12], h + 12);
		copy32(&id->dst_ip[12], h + 16);
		id->transport_protocol = h[9];
		id->tos = h[1];
		pi->l3_off = ETH_HLEN_;
		pi->hdr_len = 20;
		pi->ip_len = ip_len;
		return parse_fast_l4(data, data_end, ETH_HLEN_ + 20, end, h[9], id, pi);
	}
	if (proto == ETH_P_IPV6) {
		const __u8 *h = data + ETH_HLEN_;
		if (h + 40 > data_end || (h[0] >> 4) != 6)
			return PARSE_FAST_MISS;
		__u32 payload = be16(h + 4);
		__u8 next = h[6];
		if (payload == 0 || (next != IPPROTO_TCP && next != IPPROTO_UDP && next != IPPROTO_ICMPV6_))
			return PARSE_FAST_MISS;
		__u32 end = len;
		if (ETH_HLEN_ + 40 + payload < end)
			end = ETH_HLEN_ + 40 + payload;
		id->eth_protocol = ETH_P_IPV6;
		for (int i = 0; i < 16; i += 4) {
			copy32(&id->src_ip[i], h + 8 + i);
			copy32(&id->dst_ip[i], h + 24 + i);
		}
		id->tos = (h[0] << 4) | (h[1] >> 4);
		id->transport_protocol = next;
		pi->l3_off = ETH_HLEN_;
		pi->hdr_len = 40;
		pi->ip_len = 40 + payload;
		return parse_fast_l4(data, data_end, ETH_HLEN_ + 40, end, next, id, pi);
	}
	return PARSE_FAST_MISS;
}

/* FAST_CHUNK covers Ethernet, an IPv6 header without extensions and a TCP
 * header without options: every header parse_fast reads. */
#define FAST_CHUNK (ETH_HLEN_ + 40 + TCP_HLEN_)

/* parse_fast_copy is parse_fast on a copy of the frame's first FAST_CHUNK
 * bytes (fewer for a shorter frame), taken with one bpf_skb_load_bytes:
 * for skbs whose headers are not in the linear area (an AF_PACKET sender's
 * TX ring, page frags) and for socket filters, which have no direct packet
 * access. One helper call instead of one per header. */
static __always_inline int parse_fast_copy(struct __sk_buff *skb, flow_id *id,
					   struct packet_info *pi)
{
	/* The frame starts 2 bytes into an 8-byte aligned buffer, so the IP
	 * header (after 14 bytes of Ethernet) starts 8-byte aligned and each
	 * field parse_fast reads as a word is aligned to its size. */
	__u8 raw[FAST_CHUNK + 6] __attribute__((aligned(8)));
	__u8 *buf = raw + 2;
	__u32 len = skb->len;

	/* Shorter than Ethernet + IPv4 + UDP: leave it to parse_slow. */
	if (len < ETH_HLEN_ + 20 + UDP_HLEN_)
		return PARSE_FAST_MISS;
	/* n in [1, FAST_CHUNK] in a form the verifier follows. */
	__u64 n = len > FAST_CHUNK ? FAST_CHUNK : len;
	asm volatile("" : "+r"(n));
	if (n < 1 || n > FAST_CHUNK)
		return PARSE_FAST_MISS;
	if (bpf_skb_load_bytes(skb, 0, buf, n) < 0)
		return PARSE_FAST_MISS;
	return parse_fast(buf, buf + n, len, id, pi);
}

/* parse_packet fills id (except direction and ifindex) and pi from an skb
 * whose data starts at the Ethernet header, or, when l2 is false (tun, wg
 * and other devices without a link-layer header), at the IP header. l2 is
 * a constant in every caller, so each program carries one branch only.
 *
 * The common frames of an untagged Ethernet device are read by parse_fast:
 * with direct (TC programs) in place when the linear area holds all their
 * headers (no helper call at all), otherwise from one copy of the frame's
 * first bytes. The rest are parsed from scratch by parse_slow, one
 * bpf_skb_load_bytes per header. */
static __always_inline int parse_packet(struct __sk_buff *skb, flow_id *id,
					struct packet_info *pi, const bool l2, const bool direct)
{
	if (l2 && !skb->vlan_present) {
		int res = PARSE_FAST_MISS;
		if (direct) {
			const __u8 *data = (const __u8 *)(long)skb->data;
			const __u8 *data_end = (const __u8 *)(long)skb->data_end;
			__u32 len = skb->len;
			__u32 want = len < FAST_CHUNK ? len : FAST_CHUNK;
			if (data + want <= data_end)
				res = parse_fast(data, data_end, len, id, pi);
			else
				res = parse_fast_copy(skb, id, pi);
		} else {
			res = parse_fast_copy(skb, id, pi);
		}
		if (res != PARSE_FAST_MISS)
			return res;
		__builtin_memset(id, 0, sizeof(*id));
		__builtin_memset(pi, 0, sizeof(*pi));
	}
	return parse_slow(skb, id, pi, l2);
}

#endif
