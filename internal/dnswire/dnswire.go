// Package dnswire reads the few parts of DNS messages in wire form that the node cache and its
// transport check on every answer (header flags, the question, names) without unpacking a
// dns.Msg.
package dnswire

import (
	"encoding/binary"
	"errors"
)

// Header flag bits in the second 16-bit word of a DNS header.
const (
	FlagQR = 1 << 15
	FlagAA = 1 << 10
	FlagTC = 1 << 9
	FlagRD = 1 << 8
	FlagRA = 1 << 7
	FlagAD = 1 << 5
	FlagCD = 1 << 4
)

// ErrMalformed is a message that does not parse.
var ErrMalformed = errors.New("malformed message")

// Rcode is the header rcode of a message of at least 12 bytes.
func Rcode(m []byte) int { return int(m[3] & 0xF) }

// Flags is the header's flag word of a message of at least 12 bytes.
func Flags(m []byte) uint16 { return binary.BigEndian.Uint16(m[2:]) }

// SkipName returns the offset just past the (possibly compressed) name at off. It follows no
// pointer: a pointer ends the name where it stands.
func SkipName(m []byte, off int) (int, error) {
	for {
		if off >= len(m) {
			return 0, ErrMalformed
		}
		l := int(m[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xC0 == 0xC0:
			if off+2 > len(m) {
				return 0, ErrMalformed
			}
			return off + 2, nil
		case l&0xC0 != 0:
			return 0, ErrMalformed
		}
		off += l + 1
	}
}

// QuestionIs reports whether the message's question (the first after the header) is qname
// (wire form, uncompressed, compared without regard to ASCII case), qtype and qclass.
func QuestionIs(m, qname []byte, qtype, qclass uint16) bool {
	end := 12 + len(qname)
	if end+4 > len(m) {
		return false
	}
	for i, c := range m[12:end] {
		w := qname[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= w && w <= 'Z' {
			w += 'a' - 'A'
		}
		if c != w {
			return false
		}
	}
	return binary.BigEndian.Uint16(m[end:]) == qtype && binary.BigEndian.Uint16(m[end+2:]) == qclass
}

// Answers reports whether resp is a response to the query q (both in wire form): QR set, one
// question, and q's name (ASCII case ignored), type and class.
func Answers(resp, q []byte) bool {
	if len(resp) < 12 || len(q) < 12 || Flags(resp)&FlagQR == 0 || binary.BigEndian.Uint16(resp[4:]) != 1 {
		return false
	}
	end, err := SkipName(q, 12)
	if err != nil || end+4 > len(q) {
		return false
	}
	return QuestionIs(resp, q[12:end], binary.BigEndian.Uint16(q[end:]), binary.BigEndian.Uint16(q[end+2:]))
}
