package nodecache

import (
	"encoding/binary"

	"github.com/clusterdns/clusterdns/internal/dnswire"

	"github.com/miekg/dns"
)

// fastQuery is a UDP query read straight from the wire by the packet door, when its shape is
// plain enough to be answered from the cache without a dns.Msg: one question of class IN with a
// name of letters, digits, '-' and '_', no answer or authority records, and at most one OPT
// record of version 0 without options. Anything else goes to the normal CoreDNS path.
type fastQuery struct {
	id         uint16
	rd, cd, ad bool
	edns, do   bool
	size       int    // the largest answer for the client: udpSize of its OPT's size, 512 without
	qname      []byte // the name as asked, in wire form (a slice of the packet)
	qtype      uint16
	lower      [254]byte // the name in presentation form, lower case (lower[:lowerLen])
	lowerLen   int
	hash       uint64 // newCacheKey's hash of the name
}

// Header bits of a query the packet door hands to CoreDNS's server: a response, an opcode other than
// QUERY (bits 11-14), AA, TC, the reserved Z bit and a non-zero RCODE.
const fastRejectBits = dnswire.FlagQR | 0xF<<11 | dnswire.FlagAA | dnswire.FlagTC | 1<<6 | 0xF

// parseFastQuery fills q from the datagram p and reports whether the packet door may answer it.
func parseFastQuery(p []byte, q *fastQuery) bool {
	if len(p) < 12+1+4 || len(p) > dns.MinMsgSize {
		return false
	}
	flags := binary.BigEndian.Uint16(p[2:])
	if flags&fastRejectBits != 0 ||
		binary.BigEndian.Uint16(p[4:]) != 1 || binary.BigEndian.Uint16(p[6:]) != 0 || binary.BigEndian.Uint16(p[8:]) != 0 {
		return false
	}
	arcount := binary.BigEndian.Uint16(p[10:])
	if arcount > 1 {
		return false
	}
	q.id = binary.BigEndian.Uint16(p)
	q.rd, q.cd, q.ad = flags&dnswire.FlagRD != 0, flags&dnswire.FlagCD != 0, flags&dnswire.FlagAD != 0

	// The name: uncompressed labels of plain characters, not the root.
	off, n := 12, 0
	h := uint64(14695981039346656037)
	for {
		if off >= len(p) {
			return false
		}
		l := int(p[off])
		if l == 0 {
			break
		}
		if l > 63 || off+1+l > len(p) || n+l+1 > len(q.lower) {
			return false
		}
		for _, c := range p[off+1 : off+1+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return false
			}
			q.lower[n] = c
			n++
			h ^= uint64(c)
			h *= 1099511628211
		}
		q.lower[n] = '.'
		n++
		h ^= uint64('.')
		h *= 1099511628211
		off += 1 + l
	}
	if n == 0 {
		return false
	}
	off++ // the root label
	q.qname, q.lowerLen, q.hash = p[12:off], n, h
	if off+4 > len(p) {
		return false
	}
	q.qtype = binary.BigEndian.Uint16(p[off:])
	if binary.BigEndian.Uint16(p[off+2:]) != dns.ClassINET {
		return false
	}
	switch q.qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeDS, dns.TypeOPT:
		// Transfers and DS take other routes through the server; OPT is not a question.
		return false
	}
	off += 4

	q.edns, q.do, q.size = false, false, dns.MinMsgSize
	if arcount == 1 {
		// OPT: root name, type 41, class = UDP size, TTL = extended RCODE, version, DO and Z,
		// no options.
		if off+11 != len(p) || p[off] != 0 || binary.BigEndian.Uint16(p[off+1:]) != dns.TypeOPT {
			return false
		}
		ttl := binary.BigEndian.Uint32(p[off+5:])
		if ttl&^(1<<15) != 0 || binary.BigEndian.Uint16(p[off+9:]) != 0 {
			return false // extended RCODE, a version other than 0, Z bits, or options
		}
		q.edns, q.do = true, ttl&(1<<15) != 0
		q.size = udpSize(int(binary.BigEndian.Uint16(p[off+3:])))
		off += 11
	}
	return off == len(p)
}

// name is the lower-case presentation form of the name.
func (q *fastQuery) name() []byte { return q.lower[:q.lowerLen] }

// reply is what render needs to answer q, the same as ServeDNS derives from the dns.Msg.
func (q *fastQuery) reply() reply {
	return reply{id: q.id, qwire: q.qname, qtype: q.qtype, rd: q.rd, cd: q.cd, ad: q.ad, edns: q.edns, do: q.do, maxSize: q.size}
}

// inZone reports whether the lower-case name is zone (lower case, fully qualified) or below it.
func inZone(name []byte, zone string) bool {
	if zone == "." {
		return true
	}
	if len(name) < len(zone) || string(name[len(name)-len(zone):]) != zone {
		return false
	}
	return len(name) == len(zone) || name[len(name)-len(zone)-1] == '.'
}
