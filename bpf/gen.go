package bpf

// The kernel programs are compiled by bpf2go; -type makes it emit the C structs
// as Go types so nothing is mirrored by hand. Run `make generate` after any
// change under c/ and commit the .o and .go files it writes.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type flow_id_t -type flow_metrics_t -type flow_record_t -type flow_state_t -type flow_id4_t -type flow_id6_t -type counter_key -type sampling_algorithm Net c/flows.c -- -I/usr/include/x86_64-linux-gnu

// The socket filters (the --capture socket fallback) share the maps, the
// accounting and the parser with the TC programs; their Go code uses the
// Net types above, so no -type here.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel NetSk c/sock.c -- -I/usr/include/x86_64-linux-gnu

// Router mode's drop counter (c/fate.c), loaded only with FetcherOptions.Fate
// on the TC programs' maps.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel NetFate c/fate.c -- -I/usr/include/x86_64-linux-gnu
