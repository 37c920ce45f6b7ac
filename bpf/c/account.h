// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The maps and the accounting shared by every hostflow program (the TC
 * programs in flows.c, the socket filter in sock.c), so that each object
 * carries the same map design and counts a packet the same way.
 *
 * Aggregation happens in per-CPU hashes (no locks, no atomics): flows4_0
 * and flows_0 (IPv4 and IPv6 flows) or flows4_1 and flows_1, whichever
 * pair flow_state.active names. Both are top-level maps, so
 * the verifier inlines their lookups. User space reads the active one every
 * poll without deleting anything (the counts only grow; it computes what
 * is new since its last read) and switches maps only to evict (map filling
 * up, or a bounded age): it flips flow_state.active, waits for an RCU grace
 * period (an update of grace_period, an array of maps, makes the kernel run
 * synchronize_rcu), and only then drains the old map, which no program can
 * still be writing: no increment is lost. Nothing is ever deleted from the
 * map programs write to. A per-CPU hash, not an LRU: a full map must divert
 * packets to direct_flows, never evict a flow silently.
 *
 * Include it once per object: it defines the maps and load-time constants. */
#ifndef HOSTFLOW_ACCOUNT_H
#define HOSTFLOW_ACCOUNT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <stdbool.h>

#include "flow.h"
#include "parse.h"

/* Set by user space before load. 0 or 1 count every packet; N > 1 counts
 * 1-in-N, picked as sampling_mode says. Constants, so the verifier prunes
 * the sampling code when it is off. */
volatile const __u32 sampling = 0;
volatile const __u32 sampling_mode = SAMPLING_RANDOM;
/* Flow timestamps: 0 reads the coarse monotonic clock (the last tick,
 * 1-4 ms resolution, a few ns), 1 the precise one (bpf_ktime_get_ns reads
 * the clock source: measured at ~125 ns per packet on a KVM guest, a third
 * of the whole program). Both are CLOCK_MONOTONIC. */
volatile const __u32 precise_clock = 0;

/* IPv4 flows, the bulk of most hosts' traffic, have their own maps with a
 * 24-byte key. */
struct flows4_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, flow_id4);
	__type(value, flow_metrics);
	/* Overridden by user space (cacheMaxSize). */
	__uint(max_entries, 1 << 16);
};

/* IPv6 flows. Not preallocated: a host with little IPv6 traffic does not
 * pay for a full map of it; the maps are read in place, so inserts (where
 * the allocation happens) are rare. */
struct flows6_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, flow_id6);
	__type(value, flow_metrics);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	/* Overridden by user space (cacheMaxSize). */
	__uint(max_entries, 1 << 16);
};

struct flows4_map flows4_0 SEC(".maps");
struct flows4_map flows4_1 SEC(".maps");
struct flows6_map flows_0 SEC(".maps");
struct flows6_map flows_1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, flow_state);
	__uint(max_entries, 1);
} flow_state_map SEC(".maps");

/* Never read by a program: user space updates its slot to wait for an RCU
 * grace period (maybe_wait_bpf_programs). */
struct grace_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct grace_inner);
} grace_period SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* Overridden by user space. */
	__uint(max_entries, 1 << 20);
} direct_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, COUNTER_MAX);
} global_counters SEC(".maps");

/* Per-CPU packet counter of count-based sampling. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} sampling_count SEC(".maps");

/* Per-CPU cache of the coarse clock: its value as last read, and jiffies
 * then. The coarse clock and jiffies move together, at the tick
 * (tick_do_update_jiffies64 advances jiffies, then the timekeeper), so
 * while jiffies stays the same the coarse clock does too: a packet then
 * takes the cached value instead of calling bpf_ktime_get_coarse_ns
 * (a helper call: ~17 ns of ~130 per packet on a KVM guest), and reads
 * jiffies, which the verifier inlines as one load. A CPU that reads the
 * clock between the two updates finds it where it was at its last read
 * and keeps asking; one idle since an earlier tick may take the previous
 * tick's value for the rest of this tick: a time at most one tick early,
 * the coarse clock's own resolution. */
struct coarse_clock_cache {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct coarse_clock_cache);
	__uint(max_entries, 1);
} coarse_clock SEC(".maps");

/* Force the types user space needs into BTF for bpf2go -type. */
const flow_record *unused_flow_record __attribute__((unused));
const enum counter_key *unused_counter_key __attribute__((unused));
const flow_state *unused_flow_state __attribute__((unused));
const flow_id4 *unused_flow_id4 __attribute__((unused));
const flow_id6 *unused_flow_id6 __attribute__((unused));
const enum sampling_algorithm *unused_sampling_algorithm __attribute__((unused));

static __always_inline void count(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&global_counters, &key);
	if (v)
		*v += 1;
}

static __always_inline void divert(flow_id *id, flow_metrics *m)
{
	flow_record *r = bpf_ringbuf_reserve(&direct_flows, sizeof(*r), 0);
	if (!r) {
		count(COUNTER_RINGBUF_FULL);
		return;
	}
	r->id = *id;
	r->pad = 0;
	r->metrics = *m;
	bpf_ringbuf_submit(r, 0);
}

/* coarse_now is bpf_ktime_get_coarse_ns, read once per tick and CPU (see
 * coarse_clock). */
static __always_inline __u64 coarse_now(void)
{
	__u32 zero = 0;
	struct coarse_clock_cache *c = bpf_map_lookup_elem(&coarse_clock, &zero);
	if (!c)
		return bpf_ktime_get_coarse_ns();
	__u64 j = bpf_jiffies64();
	/* ns 0: never read on this CPU (jiffies may be 0). */
	if (__builtin_expect(c->jiffies == j && c->ns != 0, 1))
		return c->ns;
	__u64 now = bpf_ktime_get_coarse_ns();
	/* jiffies moved and the clock not yet (read between the two
	 * updates): keep the old jiffies, so that the next packet reads the
	 * clock again. */
	if (now != c->ns)
		c->jiffies = j;
	c->ns = now;
	return now;
}

/* sampled_out says whether sampling skips this packet. */
static __always_inline bool sampled_out(void)
{
	if (sampling <= 1)
		return false;
	if (sampling_mode == SAMPLING_COUNT) {
		__u32 zero = 0;
		__u32 *n = bpf_map_lookup_elem(&sampling_count, &zero);
		if (!n)
			return false;
		if (++*n < sampling)
			return true;
		*n = 0;
		return false;
	}
	return bpf_get_prandom_u32() % sampling != 0;
}

/* add_to counts packets (bytes) seen at now into flows under key (id, or
 * its IPv4 form); a packet that finds the map full goes to direct_flows
 * with id. Each call site names one map, so the verifier inlines the
 * lookup. */
static __always_inline void add_to(void *flows, const void *key, flow_id *id, __u64 packets,
				   __u64 bytes, __u64 now, __u16 tcp_flags, __u16 epoch, __u32 out_if)
{
	flow_metrics *m = bpf_map_lookup_elem(flows, key);
	if (!m) {
		flow_metrics nm = {
			.packets = packets,
			.bytes = bytes,
			.start_mono_time_ts = now,
			.end_mono_time_ts = now,
			.flags = tcp_flags,
			.epoch = epoch,
			.sampling = sampling,
			.out_if_index = out_if,
		};
		long err = bpf_map_update_elem(flows, key, &nm, BPF_NOEXIST);
		if (err == 0)
			return;
		/* Another CPU inserted the key first: this CPU's slot exists
		 * now (zeroed), so fall through and add to it. */
		m = bpf_map_lookup_elem(flows, key);
		if (!m) {
			count(COUNTER_MAP_FULL);
			divert(id, &nm);
			return;
		}
	}
	/* Per-CPU value: only this CPU writes it, no atomics needed. User
	 * space may copy it while this runs (word by word, packets before
	 * bytes): bytes are added first, so that on a strongly ordered CPU
	 * (x86) a read never sees a packet without its bytes, at most bytes
	 * ahead of their packet. The barrier keeps the compiler from
	 * swapping the two stores. User space copes with either tear (see
	 * flowMaps.delta). */
	m->bytes += bytes;
	asm volatile("" ::: "memory");
	m->packets += packets;
	/* First packet on this CPU since user space last read the map (or
	 * ever: a zeroed slot has epoch 0, user space starts at 1). */
	if (m->epoch != epoch) {
		m->epoch = epoch;
		m->start_mono_time_ts = now;
		m->flags = 0;
	}
	m->end_mono_time_ts = now;
	m->flags |= tcp_flags;
	m->sampling = sampling;
	/* A constant 0 except for forwarded packets (fate.h): no store
	 * at all in the other programs. Last writer wins on this CPU; user
	 * space takes the value of the CPU that counted last. */
	if (out_if)
		m->out_if_index = out_if;
}

/* add_flow counts packets (bytes) of flow id into the map pair flow_state
 * names. out_if is the interface a forwarded packet left by (0 for every
 * other count). tracing is for fate.c's drop counter, a tracing program
 * loaded once for the fetcher's life: it names the maps as they were at
 * load, and flow_state.swapped says whether a sampling change has since
 * swapped the names of each pair (the TC programs, reloaded by it, ignore
 * it); and it may not read the coarse clock (the kernel refuses the helper
 * to tracing programs), so it reads the precise one: the same
 * CLOCK_MONOTONIC, at most a tick ahead of the coarse one. */
static __always_inline void add_flow(flow_id *id, __u64 packets, __u64 bytes, __u16 tcp_flags,
				     __u32 out_if, const bool tracing)
{
	__u64 now = (tracing || precise_clock) ? bpf_ktime_get_ns() : coarse_now();

	/* FIN (0x01) or RST (0x04): the flow may end soon (COUNTER_TCP_END). */
	if (tcp_flags & 0x05)
		count(COUNTER_TCP_END);

	__u32 zero = 0;
	flow_state *st = bpf_map_lookup_elem(&flow_state_map, &zero);
	if (!st) {
		count(COUNTER_NO_MAP);
		return;
	}
	/* One read of the state: the whole packet goes to the map it names. */
	__u32 active = st->active;
	__u16 epoch = st->epoch;
	if (tracing)
		active ^= st->swapped & 1;
	if (id->eth_protocol == ETH_P_IP) {
		/* flow_id4 is the IPv4 addresses, then flow_id's 16 bytes
		 * from if_index to fate in the same layout (asserted in
		 * flow.h): four word copies, not one per field. */
		flow_id4 k;
		__builtin_memcpy(k.src_ip, &id->src_ip[12], 4);
		__builtin_memcpy(k.dst_ip, &id->dst_ip[12], 4);
		__builtin_memcpy(&k.if_index, &id->if_index, 16);
		if (active)
			add_to(&flows4_1, &k, id, packets, bytes, now, tcp_flags, epoch, out_if);
		else
			add_to(&flows4_0, &k, id, packets, bytes, now, tcp_flags, epoch, out_if);
		return;
	}
	/* The map's key is flow_id6, the first 48 bytes of id. */
	if (active)
		add_to(&flows_1, id, id, packets, bytes, now, tcp_flags, epoch, out_if);
	else
		add_to(&flows_0, id, id, packets, bytes, now, tcp_flags, epoch, out_if);
}

/* count_packet counts one parsed packet of skb under id (GSO: gso_segs
 * packets). */
static __always_inline void count_packet(struct __sk_buff *skb, flow_id *id,
					 const struct packet_info *pi, __u32 out_if)
{
	/* A GSO skb stands for gso_segs packets on the wire, each repeating
	 * the IP and transport headers. */
	__u64 packets = 1;
	__u64 bytes = skb->len - pi->l3_off;
	/* Ethernet pads short frames to 60 bytes: the padding is not IP.
	 * The smaller of the two is right for GSO too, whose IP header
	 * declares either the whole packet or 0 (BIG TCP). */
	if (pi->ip_len && pi->ip_len < bytes)
		bytes = pi->ip_len;
	__u32 segs = skb->gso_segs;
	/* A vnet header sender (tap, virtio, packet socket) leaves gso_segs 0
	 * (SKB_GSO_DODGY) until the skb is segmented: derive it as the
	 * segmentation will, from the payload after the headers. */
	__u32 gso_size = skb->gso_size;
	if (segs == 0 && gso_size && bytes > pi->hdr_len)
		segs = (bytes - pi->hdr_len + gso_size - 1) / gso_size;
	if (segs > 1) {
		packets = segs;
		bytes += (__u64)(segs - 1) * pi->hdr_len;
	}
	add_flow(id, packets, bytes, pi->tcp_flags, out_if, false);
}

/* account counts one packet of skb, seen in direction (0 ingress, 1 egress),
 * to its flow. It never changes the packet: each program returns its own
 * type's "let it pass" verdict. */
static __always_inline void account(struct __sk_buff *skb, __u8 direction, const bool l2,
				    const bool direct)
{
	if (sampled_out()) {
		count(COUNTER_SAMPLED_OUT);
		return;
	}

	flow_id id = {};
	struct packet_info pi = {};
	int res = parse_packet(skb, &id, &pi, l2, direct);
	if (res == PARSE_NOT_IP) {
		count(COUNTER_NOT_IP);
		return;
	}
	if (res != PARSE_OK) {
		count(COUNTER_MALFORMED);
		return;
	}
	id.if_index = skb->ifindex;
	id.direction = direction;
	count_packet(skb, &id, &pi, 0);
}

#endif
