// Package templates holds the IPFIX (RFC 7011) record layouts hostflow
// exports, as data.
//
// Each layout is one table of field specifiers: the IANA information element
// and its encoded length. The exporter walks these tables to write both the
// template records and the data records, so a layout is changed here, in one
// place, and the wire format follows. There are four default templates,
// because a flow key carries either IPv4 or IPv6 addresses (IPFIX has a
// distinct element for each) and either an ingress or an egress interface
// (again distinct elements): IPv4-ingress (256), IPv4-egress (257),
// IPv6-ingress (258) and IPv6-egress (259).
package templates
