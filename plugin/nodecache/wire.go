package nodecache

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/door"

	"github.com/miekg/dns"
)

// answer is a response kept in wire format: a hit is a copy with the ID, flags, question case
// and TTLs patched in place, never a pack of a dns.Msg.
type answer struct {
	wire     []byte   // ID 0, no OPT record; question as first asked
	qnameEnd int      // offset just past the question name
	ttlAt    []uint16 // offsets of the TTL field of every record
	ends     []uint16 // offset just past each record, in order (answer, authority, additional)
	counts   [3]int   // records in the answer, authority and additional sections (no OPT)
	rcode    int
	denial   bool
	ttl      uint32 // seconds, the smallest record TTL after the cap
}

const optLen = 11 // root name, type, class, TTL, RDLENGTH 0

var (
	errBadWire   = dnswire.ErrMalformed
	errNotAnswer = errors.New("not an answer to the question asked")
)

// parseAnswer takes an upstream's response in wire form (it keeps raw) for the cache: it checks
// that it answers want, drops the OPT record, zeroes the ID, finds every TTL and works out how
// long the answer may be cached under the caps (ttl 0: answer from it, do not store it).
// Success lives as long as its smallest TTL; a denial (NXDOMAIN, NODATA) as long as its SOA's
// TTL and MINIMUM allow (RFC 2308 5), and is not cached without a SOA; other rcodes, truncated
// answers and extended rcodes are not cached.
func parseAnswer(raw []byte, want dns.Question, successTTL, denialTTL time.Duration) (a *answer, ttl uint32, err error) {
	var name [256]byte
	end, err := dns.PackDomainName(want.Name, name[:], 0, nil, false)
	if err != nil {
		return nil, 0, errNotAnswer
	}
	return parseAnswerWire(raw, name[:end], want.Qtype, want.Qclass, successTTL, denialTTL)
}

// parseAnswerWire is parseAnswer for a question whose name is in wire form.
func parseAnswerWire(raw, qname []byte, qtype, qclass uint16, successTTL, denialTTL time.Duration) (a *answer, ttl uint32, err error) {
	if len(raw) < 12 {
		return nil, 0, errBadWire
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&dnswire.FlagQR == 0 || binary.BigEndian.Uint16(raw[4:]) != 1 {
		return nil, 0, errNotAnswer
	}
	if 12+len(qname)+4 > len(raw) {
		return nil, 0, errBadWire
	}
	if !dnswire.QuestionIs(raw, qname, qtype, qclass) {
		return nil, 0, errNotAnswer
	}
	// Every name, pointer and record must unpack (a bad compression pointer in an owner or in
	// rdata would be cached and rendered into answers no client can read). Misses only.
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, 0, errBadWire
	}
	// Kept compressed: CoreDNS does not compress an answer that fits its buffer (over TCP, all of
	// them), and truncation for a UDP client keeps whole records of the bytes as kept, so an
	// uncompressed 40-address answer would give a client without EDNS 11 addresses, not 29.
	m.Compress = true
	if b, err := m.Pack(); err == nil && len(b) < len(raw) {
		raw = b
	}
	off := 12 + len(qname)
	a = &answer{wire: raw, qnameEnd: off, rcode: int(flags & 0xF)}
	an := int(binary.BigEndian.Uint16(raw[6:]))
	ns := int(binary.BigEndian.Uint16(raw[8:]))
	rrs := an + ns + int(binary.BigEndian.Uint16(raw[10:]))
	off += 4
	a.ttlAt = make([]uint16, 0, rrs)
	a.ends = make([]uint16, 0, rrs)
	a.counts = [3]int{an, ns, rrs - an - ns}
	minTTL, soaTTL, haveSOA, extended := uint32(math.MaxUint32), uint32(0), false, false
	optStart, optEnd := -1, -1
	for i := range rrs {
		start := off
		if off, err = dnswire.SkipName(raw, off); err != nil {
			return nil, 0, err
		}
		if off+10 > len(raw) || off+4 > math.MaxUint16 {
			return nil, 0, errBadWire
		}
		typ := binary.BigEndian.Uint16(raw[off:])
		rrTTL := binary.BigEndian.Uint32(raw[off+4:])
		end := off + 10 + int(binary.BigEndian.Uint16(raw[off+8:]))
		if end > len(raw) {
			return nil, 0, errBadWire
		}
		switch {
		case typ == dns.TypeOPT && i >= an+ns && optStart < 0:
			optStart, optEnd = start, end
			extended = rrTTL>>24 != 0
			a.counts[2]--
		case typ == dns.TypeOPT:
			return nil, 0, errBadWire // outside the additional section, or a second one
		default:
			a.ttlAt = append(a.ttlAt, uint16(off+4))
			a.ends = append(a.ends, uint16(end))
			minTTL = min(minTTL, rrTTL)
			if typ == dns.TypeSOA && i >= an && i < an+ns && end-off-10 >= 22 {
				soaTTL, haveSOA = min(rrTTL, binary.BigEndian.Uint32(raw[end-4:])), true
			}
		}
		off = end
	}
	a.wire = raw[:off] // bytes after the last record (tolerated by some parsers) are not ours to repeat
	if optStart >= 0 {
		if optEnd != off {
			// OPT before other records: cutting it out would move them, so repack without it.
			return reparse(raw, qname, qtype, qclass, successTTL, denialTTL)
		}
		a.wire = raw[:optStart]
		binary.BigEndian.PutUint16(a.wire[10:], binary.BigEndian.Uint16(a.wire[10:])-1)
	}
	binary.BigEndian.PutUint16(a.wire, 0)

	if flags&dnswire.FlagTC != 0 || extended || (a.rcode != dns.RcodeSuccess && a.rcode != dns.RcodeNameError) {
		return a, 0, nil
	}
	a.denial = a.rcode == dns.RcodeNameError || an == 0
	switch {
	case a.denial && !haveSOA:
		ttl = 0
	case a.denial:
		ttl = min(soaTTL, uint32(denialTTL/time.Second))
	default:
		ttl = min(minTTL, uint32(successTTL/time.Second))
	}
	a.ttl = ttl
	return a, ttl, nil
}

// reparse is parseAnswer for the rare message whose OPT record is not the last record.
func reparse(raw, qname []byte, qtype, qclass uint16, successTTL, denialTTL time.Duration) (*answer, uint32, error) {
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, 0, errBadWire
	}
	var extra []dns.RR
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra, m.Compress = extra, true
	b, err := m.Pack()
	if err != nil {
		return nil, 0, err
	}
	return parseAnswerWire(b, qname, qtype, qclass, successTTL, denialTTL)
}

// reply is what a client asked, reduced to what shapes the bytes of its answer.
type reply struct {
	id      uint16
	qname   string
	qwire   []byte // the name as asked in wire form, when known (the packet door); else qname
	qtype   uint16
	rd, cd  bool
	ad      bool // client set AD: it understands it
	edns    bool
	do      bool
	maxSize int // largest answer the client takes on this transport
}

// render writes the answer for one client into buf (reused when large enough) and returns it.
// ttl is the remaining TTL to put on every record. An answer larger than the client's size
// keeps the whole records that fit (RFC 1035 4.2.1, RFC 2181 9): without the additional
// section, then without the authority section, then without trailing answer records, and only
// the last sets TC, so a client that never retries over TCP still gets addresses.
func (a *answer) render(buf []byte, c reply, ttl uint32) ([]byte, bool) {
	keep, counts, truncated := a.fit(c)
	n := keep
	if c.edns {
		n += optLen
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	out := buf[:n]
	copy(out, a.wire[:keep])
	for _, at := range a.ttlAt {
		if int(at) >= keep {
			break
		}
		binary.BigEndian.PutUint32(out[at:], ttl)
	}
	for i, count := range counts {
		binary.BigEndian.PutUint16(out[6+2*i:], uint16(count))
	}
	binary.BigEndian.PutUint16(out, c.id)
	flags := binary.BigEndian.Uint16(out[2:])
	flags &^= dnswire.FlagAA | dnswire.FlagTC | dnswire.FlagRD | dnswire.FlagCD | dnswire.FlagAD
	flags |= dnswire.FlagQR | dnswire.FlagRA
	if c.rd {
		flags |= dnswire.FlagRD
	}
	if c.cd {
		flags |= dnswire.FlagCD
	}
	if truncated {
		flags |= dnswire.FlagTC
	}
	if (c.do || c.ad) && binary.BigEndian.Uint16(a.wire[2:])&dnswire.FlagAD != 0 {
		flags |= dnswire.FlagAD
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	// The asker's spelling of the name goes back to the asker (same length: keys fold case).
	if c.qwire != nil {
		if 12+len(c.qwire) != a.qnameEnd {
			return nil, false
		}
		copy(out[12:], c.qwire)
	} else if end, err := dns.PackDomainName(c.qname, out, 12, nil, false); err != nil || end != a.qnameEnd {
		return nil, false
	}
	if c.edns {
		opt := out[n-optLen:]
		clear(opt)
		binary.BigEndian.PutUint16(opt[1:], dns.TypeOPT)
		binary.BigEndian.PutUint16(opt[3:], door.EDNSSize)
		if c.do {
			binary.BigEndian.PutUint16(opt[7:], 1<<15)
		}
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	}
	return out, true
}

// fit works out how much of the answer goes to the client: the bytes of wire to keep, the
// records kept per section, and whether answer records were dropped (TC). Compression pointers
// point only backwards, so any prefix that ends on a record boundary stands on its own.
func (a *answer) fit(c reply) (keep int, counts [3]int, truncated bool) {
	limit := c.maxSize
	if c.edns {
		limit -= optLen
	}
	if len(a.wire) <= limit {
		return len(a.wire), a.counts, false
	}
	end := func(records int) int {
		if records == 0 {
			return a.qnameEnd + 4
		}
		return int(a.ends[records-1])
	}
	an, ns := a.counts[0], a.counts[1]
	switch {
	case end(an+ns) <= limit:
		return end(an + ns), [3]int{an, ns, 0}, false
	case end(an) <= limit:
		return end(an), [3]int{an, 0, 0}, false
	}
	k := an - 1
	for k > 0 && end(k) > limit {
		k--
	}
	return end(k), [3]int{k, 0, 0}, true
}
