// Package templates holds the record layouts hostflow exports over IPFIX
// (RFC 7011) and NetFlow v9 (RFC 3954), as data.
//
// One table (elements.go) lists every element a flow can fill, with its
// IPFIX field specifier and, where v9 can carry it, its v9 one: v9 has its
// own encodings for times (FIRST/LAST_SWITCHED, 32-bit milliseconds of
// sysUptime), TCP flags (one byte) and ICMP (ICMP_TYPE for both families).
// A layout is a list of element names (the default ones are in
// elements.go; FromNames takes a user's, resolved through the IANA
// registry) and becomes a Set of eight templates, because a flow key
// carries either IPv4 or IPv6 addresses and either an ingress or an egress
// interface, each a distinct element, and ICMP flows have their own (ICMP
// type and code, no ports): IPv4-ingress (256), IPv4-egress (257),
// IPv6-ingress (258), IPv6-egress (259), and the same four for ICMP and
// ICMPv6 (260-263). Every field says which flow value fills it, so the
// exporter compiles each template to encode functions once and encodes
// records without looking at element IDs.
//
// The options templates (interface table, sampling, exporter reliability;
// IDs 264-266) are data here too.
package templates
