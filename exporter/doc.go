// Package exporter turns what the kernel counted into flow records and sends
// them to collectors.
//
// Cache aggregates per-CPU kernel metrics by NetFlowId and expires flows on
// active timeout, idle timeout and shutdown, with an injected clock so it is
// tested without a kernel. Expired flows go to a Sink: the IPFIX exporter
// (RFC 7011) over UDP, or a JSON-lines writer when no collector is set.
package exporter
