// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Types shared by the kernel programs and, through bpf2go -type, by Go.
 * Every struct here is mirrored in Go by generation only: change it here and
 * run `make generate`. Fields are ordered largest first so that no implicit
 * padding appears; explicit padding is named so that zeroed keys hash alike. */
#ifndef HOSTFLOW_FLOW_H
#define HOSTFLOW_FLOW_H

#include <linux/types.h>

/* flow_id6_t is the key of IPv6 flows: the first 48 bytes of flow_id (its
 * ethertype, always 0x86dd there, comes after them), so a program looks a
 * flow up with a pointer to its flow_id and hashes 48 bytes. */
typedef struct flow_id6_t {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u32 if_index;
	__u16 src_port;
	__u16 dst_port;
	__u16 vlan_id;
	__u8 transport_protocol;
	__u8 direction;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 tos;
	/* flow_id's fate. */
	__u8 fate;
} flow_id6;

/* flow_id_t is the flow key: one flow per distinct value. What the parser
 * fills, what the ring buffer carries; the maps are keyed by its first 48
 * bytes (flow_id6, IPv6) or by flow_id4 (IPv4). */
typedef struct flow_id_t {
	/* IPv4 addresses are stored as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
	__u8 src_ip[16];
	__u8 dst_ip[16];
	/* Interface the packet was seen on (skb->ifindex). */
	__u32 if_index;
	/* Transport ports, host byte order; 0 where the protocol has none or
	 * the packet is a non-first fragment. */
	__u16 src_port;
	__u16 dst_port;
	/* Outer 802.1Q/802.1ad VLAN id, 0 when untagged. */
	__u16 vlan_id;
	/* IANA protocol number of the transport header. */
	__u8 transport_protocol;
	/* 0 ingress, 1 egress (IANA flowDirection, IE 61). */
	__u8 direction;
	/* ICMP/ICMPv6 type and code, 0 for other protocols. */
	__u8 icmp_type;
	__u8 icmp_code;
	/* The IPv4 ToS byte or the IPv6 Traffic Class (DSCP and ECN), as in
	 * the packet: IANA ipClassOfService (IE 5). A packet with another
	 * value starts another flow, as in NetFlow v5/v9. */
	__u8 tos;
	/* Router mode: what became of the packet, as IANA forwardingStatus
	 * (IE 89): 64 forwarded (counted at TC egress), 128-143 dropped with
	 * a reason (counted where the kernel freed it); 0 for a packet
	 * counted as it arrived or left, whatever became of it. A packet of
	 * fate F is keyed as it arrived (if_index the interface it came in
	 * on, direction ingress, addresses and ports before NAT), so user
	 * space finds its arrival record by setting fate to 0. */
	__u8 fate;
	/* Ethertype of the L3 header (0x0800, 0x86dd), host byte order:
	 * behind the 48 bytes of flow_id6. */
	__u16 eth_protocol;
	/* Always zero. */
	__u8 pad2[2];
} flow_id;

/* flow_id4_t is the key of IPv4 flows: flow_id without the 24 bytes an
 * IPv4-mapped address pair wastes and without the ethertype (0x0800), so
 * that the hash of every IPv4 packet covers 24 bytes, not 48. Addresses in
 * network byte order, as in the packet. */
typedef struct flow_id4_t {
	__u8 src_ip[4];
	__u8 dst_ip[4];
	__u32 if_index;
	__u16 src_port;
	__u16 dst_port;
	__u16 vlan_id;
	__u8 transport_protocol;
	__u8 direction;
	__u8 icmp_type;
	__u8 icmp_code;
	/* flow_id's tos and fate, in what was padding: the key stays 24
	 * bytes. */
	__u8 tos;
	__u8 fate;
} flow_id4;

/* The layouts the maps and user space rely on. */
_Static_assert(sizeof(flow_id6) == 48, "flow_id6 is 48 bytes");
_Static_assert(__builtin_offsetof(flow_id, eth_protocol) == sizeof(flow_id6),
	       "flow_id starts with flow_id6");
_Static_assert(sizeof(flow_id) == 52, "flow_id is 52 bytes");
_Static_assert(sizeof(flow_id4) == 24, "flow_id4 is 24 bytes");
/* account() copies flow_id's if_index..fate into flow_id4 as one block. */
_Static_assert(__builtin_offsetof(flow_id4, if_index) == 8 &&
		       __builtin_offsetof(flow_id4, tos) - __builtin_offsetof(flow_id4, if_index) ==
			       __builtin_offsetof(flow_id, tos) - __builtin_offsetof(flow_id, if_index) &&
		       __builtin_offsetof(flow_id4, fate) - __builtin_offsetof(flow_id4, if_index) ==
			       __builtin_offsetof(flow_id, fate) - __builtin_offsetof(flow_id, if_index) &&
		       __builtin_offsetof(flow_id4, icmp_code) - __builtin_offsetof(flow_id4, if_index) ==
			       __builtin_offsetof(flow_id, icmp_code) - __builtin_offsetof(flow_id, if_index) &&
		       __builtin_offsetof(flow_id4, src_port) - __builtin_offsetof(flow_id4, if_index) ==
			       __builtin_offsetof(flow_id, src_port) - __builtin_offsetof(flow_id, if_index) &&
		       __builtin_offsetof(flow_id4, vlan_id) - __builtin_offsetof(flow_id4, if_index) ==
			       __builtin_offsetof(flow_id, vlan_id) - __builtin_offsetof(flow_id, if_index),
	       "flow_id4 ends with flow_id's if_index..fate");

/* flow_metrics_t is what the kernel accumulates per flow and per CPU:
 * packets and bytes since the flow entered the map (user space computes
 * what is new since its last read). */
typedef struct flow_metrics_t {
	__u64 packets;
	/* IP bytes: IP header and payload, no link-layer header. */
	__u64 bytes;
	/* CLOCK_MONOTONIC of the first packet since epoch last changed, and of
	 * the last packet. */
	__u64 start_mono_time_ts;
	__u64 end_mono_time_ts;
	/* OR of the TCP header flag bits (FIN=0x01 ... CWR=0x80, NS=0x100). */
	__u16 flags;
	/* flow_state.epoch when this CPU last counted a packet of the flow:
	 * start_mono_time_ts and flags start over when it changes (see
	 * account.h). */
	__u16 epoch;
	/* N of the 1-in-N sampling these packets were counted with (0 or 1:
	 * every packet); multiply the counts by it to estimate the total. */
	__u32 sampling;
	/* Router mode, fate 64 (forwarded): the interface the packet left
	 * by (skb->ifindex at TC egress) when this CPU last counted one; 0
	 * otherwise. */
	__u32 out_if_index;
	/* Always zero. */
	__u32 pad;
} flow_metrics;

/* flow_record_t travels through the direct_flows ring buffer when a flow
 * cannot be inserted into the aggregation map. */
typedef struct flow_record_t {
	flow_id id;
	/* Always zero: aligns metrics to 8 bytes. */
	__u32 pad;
	flow_metrics metrics;
} flow_record;

/* flow_state_t is the one entry of the flow_state array, written by user
 * space only. */
typedef struct flow_state_t {
	/* Which of flows_0 and flows_1 programs count into. */
	__u32 active;
	/* Bumped by user space after each read of the active map. */
	__u16 epoch;
	/* Bit 0: a sampling change swapped the names of each map pair since
	 * load (see add_flow in account.h). */
	__u16 swapped;
} flow_state;

/* counter_key indexes the per-CPU global_counters array. Every place where
 * the kernel side loses or diverts a packet has one; COUNTER_TCP_END is a
 * hint for user space, not a loss. */
enum counter_key {
	/* Packets sent to direct_flows because the aggregation map was full. */
	COUNTER_MAP_FULL = 0,
	/* Packets lost because direct_flows had no room: the only real loss. */
	COUNTER_RINGBUF_FULL = 1,
	/* Frames that carry no IPv4/IPv6 packet (ARP, LLDP, ...): not flows. */
	COUNTER_NOT_IP = 2,
	/* Frames too short or malformed to read an IP header from. */
	COUNTER_MALFORMED = 3,
	/* Packets seen while flow_state could not be read (never expected). */
	COUNTER_NO_MAP = 4,
	/* Packets skipped by sampling. */
	COUNTER_SAMPLED_OUT = 5,
	/* Router mode: forwarded or dropped packets whose fate could not be
	 * counted because their headers could not be read or keyed (fate.h):
	 * their arrival count stands alone. */
	COUNTER_FATE_MALFORMED = 6,
	/* TCP packets with FIN or RST counted into a flow: a flow may end
	 * within the TCP end grace. While it does not grow, user space need
	 * not read the flows before the idle timeout of the last read. */
	COUNTER_TCP_END = 7,
	COUNTER_MAX = 8,
};

/* sampling_algorithm selects how 1-in-N packets are picked. */
enum sampling_algorithm {
	/* A random packet in N (bpf_get_prandom_u32): unbiased against
	 * periodic traffic. */
	SAMPLING_RANDOM = 0,
	/* Every Nth packet on each CPU: deterministic, reproducible. */
	SAMPLING_COUNT = 1,
};

#endif
