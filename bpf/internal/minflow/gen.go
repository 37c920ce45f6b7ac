// Package minflow holds the floor of per-packet flow accounting that
// hostflow's TC program is held against (bench/minflow.c, a reference copy
// from shared/bench): one bpf_skb_load_bytes, a 16-byte IPv4 5-tuple, a
// per-CPU hash. Used by the kernel-cost benchmark only.
package minflow

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel Minflow ../../../bench/minflow.c -- -I/usr/include/x86_64-linux-gnu
