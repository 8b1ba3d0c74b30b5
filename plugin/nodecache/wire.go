package nodecache

import (
	"encoding/binary"
	"errors"
	"github.com/clusterdns/clusterdns/internal/dnswire"
	"math"
	"time"

	"github.com/miekg/dns"
)

// answer is a response kept in wire format: a hit is a copy with the ID, flags, question case
// and TTLs patched in place, never a pack of a dns.Msg.
type answer struct {
	wire     []byte   // ID 0, no OPT record; question as first asked
	qnameEnd int      // offset just past the question name
	ttlAt    []uint16 // offsets of the TTL field of every record
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
	off := 12 + len(qname)
	a = &answer{wire: raw, qnameEnd: off, rcode: int(flags & 0xF)}
	an := int(binary.BigEndian.Uint16(raw[6:]))
	ns := int(binary.BigEndian.Uint16(raw[8:]))
	rrs := an + ns + int(binary.BigEndian.Uint16(raw[10:]))
	off += 4
	a.ttlAt = make([]uint16, 0, rrs)
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
		case typ == dns.TypeOPT:
			optStart, optEnd = start, end
			extended = rrTTL>>24 != 0
		default:
			a.ttlAt = append(a.ttlAt, uint16(off+4))
			minTTL = min(minTTL, rrTTL)
			if typ == dns.TypeSOA && i >= an && i < an+ns && end-off-10 >= 22 {
				soaTTL, haveSOA = min(rrTTL, binary.BigEndian.Uint32(raw[end-4:])), true
			}
		}
		off = end
	}
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
	rd, cd  bool
	ad      bool // client set AD: it understands it
	edns    bool
	do      bool
	maxSize int // largest answer the client takes on this transport
}

// render writes the answer for one client into buf (reused when large enough) and returns it.
// ttl is the remaining TTL to put on every record. An answer larger than the client's size
// is cut to the header and question with TC set (RFC 1035 4.2.1, RFC 6891 7).
func (a *answer) render(buf []byte, c reply, ttl uint32) ([]byte, bool) {
	n := len(a.wire)
	if c.edns {
		n += optLen
	}
	truncated := n > c.maxSize
	if truncated {
		n = a.qnameEnd + 4
		if c.edns {
			n += optLen
		}
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	out := buf[:n]
	if truncated {
		copy(out, a.wire[:a.qnameEnd+4])
		clear(out[6:12])
	} else {
		copy(out, a.wire)
		for _, at := range a.ttlAt {
			binary.BigEndian.PutUint32(out[at:], ttl)
		}
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
		binary.BigEndian.PutUint16(opt[3:], ednsSize)
		if c.do {
			binary.BigEndian.PutUint16(opt[7:], 1<<15)
		}
		binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	}
	return out, true
}

// ednsSize is the UDP payload size we advertise, to clients and upstreams (DNS flag day 2020).
const ednsSize = 1232
