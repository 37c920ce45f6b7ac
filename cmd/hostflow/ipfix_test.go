package main

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// ipfixReader reads what a test needs of IPFIX messages (RFC 7011): the
// value of one information element in the data records of any template,
// options templates included, that holds it. It keeps the templates seen,
// as a collector does for one session.
type ipfixReader struct {
	ie        uint16
	templates map[uint16][]ipfixField
}

type ipfixField struct{ id, length uint16 }

func newIPFIXReader(ie uint16) *ipfixReader {
	return &ipfixReader{ie: ie, templates: map[uint16][]ipfixField{}}
}

// message returns the values of the element in msg, in order.
func (r *ipfixReader) message(msg []byte) ([]uint64, error) {
	if len(msg) < 16 || binary.BigEndian.Uint16(msg) != 10 || int(binary.BigEndian.Uint16(msg[2:])) != len(msg) {
		return nil, fmt.Errorf("not one IPFIX message: % x", msg[:min(len(msg), 16)])
	}
	var out []uint64
	for b := msg[16:]; len(b) > 0; {
		if len(b) < 4 {
			return nil, fmt.Errorf("short set header")
		}
		id, n := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) {
			return nil, fmt.Errorf("set %d: length %d", id, n)
		}
		body := b[4:n]
		b = b[n:]
		switch {
		case id == 2 || id == 3:
			if err := r.templateSet(id == 3, body); err != nil {
				return nil, err
			}
		case id >= 256:
			vals, err := r.dataSet(r.templates[id], body)
			if err != nil {
				return nil, fmt.Errorf("data set %d: %w", id, err)
			}
			out = append(out, vals...)
		}
	}
	return out, nil
}

func (r *ipfixReader) templateSet(options bool, b []byte) error {
	for len(b) >= 4 {
		id, count := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		b = b[4:]
		if options {
			if len(b) < 2 {
				return fmt.Errorf("options template %d: short", id)
			}
			b = b[2:] // scope field count
		}
		var fields []ipfixField
		for range count {
			if len(b) < 4 {
				return fmt.Errorf("template %d: short", id)
			}
			f := ipfixField{id: binary.BigEndian.Uint16(b), length: binary.BigEndian.Uint16(b[2:])}
			b = b[4:]
			if f.id&0x8000 != 0 {
				b = b[4:] // enterprise number
			}
			fields = append(fields, f)
		}
		r.templates[id] = fields
	}
	return nil
}

func (r *ipfixReader) dataSet(fields []ipfixField, b []byte) ([]uint64, error) {
	if fields == nil {
		return nil, nil // not a template of interest, or not known yet
	}
	var out []uint64
	for len(b) > 0 {
		rec, vals := b, len(out)
		for _, f := range fields {
			n := int(f.length)
			if f.length == 0xffff { // variable length
				if len(b) < 1 {
					return nil, fmt.Errorf("short record")
				}
				n, b = int(b[0]), b[1:]
				if n == 255 {
					if len(b) < 2 {
						return nil, fmt.Errorf("short record")
					}
					n, b = int(binary.BigEndian.Uint16(b)), b[2:]
				}
			}
			if len(b) < n {
				// Set padding (RFC 7011 section 3.3.1): zero
				// octets, fewer than one record, after one.
				if vals > 0 && !slices.ContainsFunc(rec, func(c byte) bool { return c != 0 }) {
					return out[:vals], nil
				}
				return nil, fmt.Errorf("short record")
			}
			if f.id == r.ie {
				var v uint64
				for _, c := range b[:n] {
					v = v<<8 | uint64(c)
				}
				out = append(out, v)
			}
			b = b[n:]
		}
	}
	return out, nil
}
