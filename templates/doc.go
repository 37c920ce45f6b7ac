// Package templates holds the record layouts hostflow exports over IPFIX
// (RFC 7011) and NetFlow v9 (RFC 3954), as data.
//
// One table (elements.go) lists every element a flow can fill, with its
// IPFIX field specifier and, where v9 can carry it, its v9 one: v9 has its
// own encodings for times (FIRST/LAST_SWITCHED, 32-bit milliseconds of
// sysUptime), TCP flags (one byte) and ICMP (ICMP_TYPE for both families).
// A layout is a list of element names (the default ones are in
// elements.go; FromNames takes a user's, resolved through the IANA
// registry) and becomes a Set of four templates, because a flow key carries
// either IPv4 or IPv6 addresses and either an ingress or an egress
// interface, each a distinct element: IPv4-ingress (256), IPv4-egress
// (257), IPv6-ingress (258) and IPv6-egress (259). Every field says which
// flow value fills it, so the exporter compiles each template to encode
// functions once and encodes records without looking at element IDs.
//
// The options templates (interface table, sampling, exporter reliability;
// IDs 260-262) are data here too.
package templates
