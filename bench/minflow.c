// Reference copy, unchanged, from shared/bench/minflow.c (the project's shared
// benchmark floor; see shared/bench/README.md). Built by bpf/internal/minflow.
// The floor for per-packet flow accounting on this machine: read Ethernet,
// IPv4 and the ports with one bpf_skb_load_bytes (works for non-linear skbs), key a 16-byte 5-tuple,
// add packets and bytes in a per-CPU hash.  No IPv6, no options, no timestamps, no swap: a lower bound
// that any real flow probe's TC program can be held against, not a probe.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct key { __u32 sa, da; __u16 sp, dp; __u8 proto, pad[3]; };
struct val { __u64 packets, bytes; };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct key);
	__type(value, struct val);
	__uint(max_entries, 1 << 18);
} minflow_map SEC(".maps");
SEC("tc") int hf_minflow(struct __sk_buff *skb)
{
	__u8 b[38];
	if (skb->protocol != __builtin_bswap16(0x0800) || bpf_skb_load_bytes(skb, 0, b, sizeof(b)) < 0)
		return -1;
	struct key k = {};
	__builtin_memcpy(&k.sa, b + 26, 4); __builtin_memcpy(&k.da, b + 30, 4);
	__builtin_memcpy(&k.sp, b + 34, 2); __builtin_memcpy(&k.dp, b + 36, 2);
	k.proto = b[23];
	struct val *v = bpf_map_lookup_elem(&minflow_map, &k);
	if (v) { v->packets++; v->bytes += skb->len; return -1; }
	struct val nv = {1, skb->len};
	bpf_map_update_elem(&minflow_map, &k, &nv, BPF_ANY);
	return -1;
}
char _license[] SEC("license") = "GPL";
