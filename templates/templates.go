package templates

// Field is one field specifier of a template record (RFC 7011 section 3.2):
// an IANA information element (the enterprise bit is never set) and the
// number of bytes its value takes in a data record.
type Field struct {
	ID     uint16
	Length uint16
	Name   string
}

// Template is a template record: its ID (256 and above, RFC 7011 section
// 3.4.1) names the data sets that use it.
type Template struct {
	ID     uint16
	Name   string
	Fields []Field
}

// RecordLength returns the length in bytes of one data record of t. Every
// field has a fixed length, so all records of a template have this length.
func (t *Template) RecordLength() int {
	n := 0
	for _, f := range t.Fields {
		n += int(f.Length)
	}
	return n
}

// SpecLength returns the length in bytes of t's template record on the
// wire: a 4-byte header (template ID, field count) and 4 bytes per field
// specifier.
func (t *Template) SpecLength() int {
	return 4 + 4*len(t.Fields)
}

// IDs of the default templates.
const (
	IPv4Ingress uint16 = 256
	IPv4Egress  uint16 = 257
	IPv6Ingress uint16 = 258
	IPv6Egress  uint16 = 259
)

// Select returns the default template for a flow of the given address
// family and direction. The result is shared and must not be modified.
//
// It does not allocate: the exporter calls it once per record.
func Select(ipv4, egress bool) *Template {
	i := 0
	if !ipv4 {
		i = 2
	}
	if egress {
		i++
	}
	return &defaults[i]
}

// Defaults returns the four default templates, ordered by ID. The slice and
// the templates are shared and must not be modified.
func Defaults() []Template {
	return defaults[:]
}

// MaxRecordLength returns the length of the longest data record of the
// default templates: the least room a message must have for data.
func MaxRecordLength() int {
	m := 0
	for i := range defaults {
		m = max(m, defaults[i].RecordLength())
	}
	return m
}
