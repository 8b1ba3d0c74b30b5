package nodecache

import (
	"encoding/binary"
	"errors"
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

// Header flag bits in the second 16-bit word of a DNS header.
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagAD = 1 << 5
	flagCD = 1 << 4
)

const optLen = 11 // root name, type, class, TTL, RDLENGTH 0

var errBadWire = errors.New("malformed message")

// newAnswer packs m (from an upstream) for the cache: OPT removed, ID zeroed, TTL offsets found.
func newAnswer(m *dns.Msg) (*answer, error) {
	c := *m
	c.Id = 0
	c.Compress = true
	c.Extra = nil
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			c.Extra = append(c.Extra, rr)
		}
	}
	wire, err := c.Pack()
	if err != nil {
		return nil, err
	}
	a := &answer{wire: wire, rcode: m.Rcode}
	if err := a.index(); err != nil {
		return nil, err
	}
	return a, nil
}

// index walks the packed message once to find the question end and every record's TTL offset.
func (a *answer) index() error {
	w := a.wire
	if len(w) < 12 {
		return errBadWire
	}
	qd := int(binary.BigEndian.Uint16(w[4:]))
	rrs := int(binary.BigEndian.Uint16(w[6:])) + int(binary.BigEndian.Uint16(w[8:])) + int(binary.BigEndian.Uint16(w[10:]))
	if qd != 1 {
		return errBadWire
	}
	off, err := skipName(w, 12)
	if err != nil {
		return err
	}
	a.qnameEnd = off
	off += 4
	a.ttlAt = make([]uint16, 0, rrs)
	for range rrs {
		if off, err = skipName(w, off); err != nil {
			return err
		}
		if off+10 > len(w) || off+4 > math.MaxUint16 {
			return errBadWire
		}
		a.ttlAt = append(a.ttlAt, uint16(off+4))
		off += 10 + int(binary.BigEndian.Uint16(w[off+8:]))
	}
	if off > len(w) {
		return errBadWire
	}
	return nil
}

// skipName returns the offset just past the (possibly compressed) name at off.
func skipName(w []byte, off int) (int, error) {
	for {
		if off >= len(w) {
			return 0, errBadWire
		}
		l := int(w[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xC0 == 0xC0:
			return off + 2, nil
		case l&0xC0 != 0:
			return 0, errBadWire
		}
		off += l + 1
	}
}

// reply is what a client asked, reduced to what shapes the bytes of its answer.
type reply struct {
	id      uint16
	qname   string
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
	flags &^= flagAA | flagTC | flagRD | flagCD | flagAD
	flags |= flagQR | flagRA
	if c.rd {
		flags |= flagRD
	}
	if c.cd {
		flags |= flagCD
	}
	if truncated {
		flags |= flagTC
	}
	if (c.do || c.ad) && binary.BigEndian.Uint16(a.wire[2:])&flagAD != 0 {
		flags |= flagAD
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	// The asker's spelling of the name goes back to the asker (same length: keys fold case).
	if end, err := dns.PackDomainName(c.qname, out, 12, nil, false); err != nil || end != a.qnameEnd {
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

// cacheTTL is how long m may be cached, capped by the success or denial cap; 0 means not at all.
// A denial lives as long as its SOA's TTL and MINIMUM allow (RFC 2308 5); without a SOA it is
// not cached.
func cacheTTL(m *dns.Msg, denial bool, capTTL time.Duration) uint32 {
	limit := uint32(capTTL / time.Second)
	if denial {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return min(limit, soa.Hdr.Ttl, soa.Minttl)
			}
		}
		return 0
	}
	ttl := limit
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
	}
	return ttl
}

// isDenial reports NXDOMAIN and NODATA (NOERROR without an answer for the name).
func isDenial(m *dns.Msg) bool {
	return m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0)
}
