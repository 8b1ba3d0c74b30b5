// Package door is a DNS server's own way in for the queries a plugin answers from memory: the
// plugin's UDP sockets on a listen address of CoreDNS's server (internal/packetio: a socket per
// CPU in the address's SO_REUSEPORT group, read and written in batches) and its TCP listeners
// (pipelined queries answered concurrently), in front of CoreDNS's server for that address.
//
// A datagram of plain shape (ParseQuery) for a zone whose Answer function is set goes to that
// function, which answers it at once (into the batch being written), later (through the socket's
// sender), or hands it on. Every other datagram, and every TCP query, is handed as it came to
// CoreDNS's server (its exported ServeDNS: zone routing and the whole plugin chain), whose
// answers leave through the door's sockets. Nothing reaches into CoreDNS's private state: the
// server is handed over by the exported hook of its config (UDPDecorateWriterFunc), and the
// plugins above the one answering are read from the config's exported Handlers.
//
// CoreDNS's server binds its own sockets to the address too; the door's UDP sockets set
// SO_INCOMING_CPU, so from Linux 6.1 the kernel gives that socket nothing while the door is open.
// The node cache (plugin/nodecache) and the central role (plugin/k8sdiscovery) use it.
package door

import (
	"encoding/binary"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/miekg/dns"
)

// Query is a UDP query read straight from the wire by a door, when its shape is plain enough to
// be answered without a dns.Msg: one question of class IN with a name of letters, digits, '-'
// and '_', no answer or authority records, and at most one OPT record of version 0 without
// options whose flags are at most DO. Anything else goes to CoreDNS's server.
type Query struct {
	ID         uint16
	RD, CD, AD bool
	EDNS, DO   bool
	Advertised int    // the UDP size of the client's OPT record (0 without one)
	Size       int    // the largest answer for the client: UDPSize(Advertised), 512 without OPT
	QName      []byte // the name as asked, in wire form (a slice of the packet)
	QType      uint16
	lower      [254]byte // the name in presentation form, lower case (lower[:lowerLen])
	lowerLen   int
	Hash       uint64 // FNV-1a of the lower-case presentation name
}

// Header bits of a query a door hands to CoreDNS's server: a response, an opcode other than
// QUERY (bits 11-14), AA, TC, the reserved Z bit and a non-zero RCODE.
const rejectBits = dnswire.FlagQR | 0xF<<11 | dnswire.FlagAA | dnswire.FlagTC | 1<<6 | 0xF

// ParseQuery fills q from the datagram p and reports whether a door may answer it.
func ParseQuery(p []byte, q *Query) bool {
	if len(p) < 12+1+4 || len(p) > dns.MinMsgSize {
		return false
	}
	flags := binary.BigEndian.Uint16(p[2:])
	if flags&rejectBits != 0 ||
		binary.BigEndian.Uint16(p[4:]) != 1 || binary.BigEndian.Uint16(p[6:]) != 0 || binary.BigEndian.Uint16(p[8:]) != 0 {
		return false
	}
	arcount := binary.BigEndian.Uint16(p[10:])
	if arcount > 1 {
		return false
	}
	q.ID = binary.BigEndian.Uint16(p)
	q.RD, q.CD, q.AD = flags&dnswire.FlagRD != 0, flags&dnswire.FlagCD != 0, flags&dnswire.FlagAD != 0

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
	q.QName, q.lowerLen, q.Hash = p[12:off], n, h
	if off+4 > len(p) {
		return false
	}
	q.QType = binary.BigEndian.Uint16(p[off:])
	if binary.BigEndian.Uint16(p[off+2:]) != dns.ClassINET {
		return false
	}
	switch q.QType {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeDS, dns.TypeOPT:
		// Transfers and DS take other routes through the server; OPT is not a question.
		return false
	}
	off += 4

	q.EDNS, q.DO, q.Advertised, q.Size = false, false, 0, dns.MinMsgSize
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
		q.EDNS, q.DO = true, ttl&(1<<15) != 0
		q.Advertised = int(binary.BigEndian.Uint16(p[off+3:]))
		q.Size = UDPSize(q.Advertised)
		off += 11
	}
	return off == len(p)
}

// Name is the lower-case presentation form of the name.
func (q *Query) Name() []byte { return q.lower[:q.lowerLen] }

// InZone reports whether the lower-case name is zone (lower case, fully qualified) or below it.
func InZone(name []byte, zone string) bool {
	if zone == "." {
		return true
	}
	if len(name) < len(zone) || string(name[len(name)-len(zone):]) != zone {
		return false
	}
	return len(name) == len(zone) || name[len(name)-len(zone)-1] == '.'
}

// UDPSize is the largest UDP answer for a client that takes size bytes (512 without EDNS): never
// more than EDNSSize, which fits an IPv6 path's minimum MTU unfragmented (DNS Flag Day 2020,
// RFC 6891 6.2.5).
func UDPSize(size int) int { return max(dns.MinMsgSize, min(size, EDNSSize)) }

// EDNSSize is the UDP payload size the node cache advertises, to clients and upstreams (DNS flag
// day 2020).
const EDNSSize = 1232
