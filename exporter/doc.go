// Package exporter turns what the kernel counted into flow records and sends
// them to collectors.
//
// Cache aggregates per-CPU kernel metrics by bpf.NetFlowId, the kernel's
// key, and expires flows on active timeout, idle timeout, TCP end and
// shutdown, with an injected clock so it is tested without a kernel; under
// a flood it pushes out the least recently seen flow. A record leaving the
// Cache is a Flow, keyed by FlowKey (netip addresses): nothing past the
// Cache sees the kernel's layout.
//
// Flows go to a Sink. IPFIX (RFC 7011) and NetFlow9 (RFC 3954) encode
// them with the templates of package templates, through one codec table
// (fields.go) and one framing per protocol (wire.go), and write each
// message to a MessageWriter: a UDPWriter (sendmmsg batches, optionally
// from a Bind address), or a StreamTransport, TCP or TLS, which writes the
// templates first on every connection. A Collector puts an encoder behind
// a bounded queue and its own goroutine. NewJSONLines writes one JSON
// object per flow instead, when no collector is set.
package exporter
