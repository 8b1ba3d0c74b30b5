package nodecache

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/miekg/dns"
)

// The query path. Every query, however it arrives (ServeDNS from CoreDNS's server and the
// plugins above; the packet door's own sockets), takes this one path: lookup finds a fresh
// entry (answered at once), an expired one inside its serve_stale window (asked again, or
// served stale at once while every upstream is down) or nothing (a miss). A miss joins the
// flight of its question (name, type, class, DO, CD) or starts one; a flight asks the block's
// upstream group once (transport: failover, one query per TCP connection), caches what may be
// cached and gives the answer to every asker.

// question is a query as the query path sees it.
type question struct {
	key    cacheKey
	lower  []byte // the name in presentation form, lower case
	qwire  []byte // the name in wire form as asked; read only during lookup
	qtype  uint16
	qclass uint16
	// nxdomainToChain: a fresh NXDOMAIN is not answered but given back (verdictChain), for the
	// plugin above that rewrites NXDOMAIN (the packet door only).
	nxdomainToChain bool
}

// asker gets the outcome of a miss, exactly once, on whatever goroutine ends the flight. a is
// nil when no upstream answered (err says why). It must not block.
type asker interface {
	answered(a *answer, ttl uint32, err error)
}

// verdict is what lookup found.
type verdict int

const (
	verdictAnswer verdict = iota // answer with found.a and found.ttl
	verdictMiss                  // ask upstream: call miss with found.stale
	verdictChain                 // a fresh NXDOMAIN for the plugin above (nxdomainToChain)
)

// found is lookup's result.
type found struct {
	v     verdict
	a     *answer
	ttl   uint32
	stale *entry // a miss on an expired entry that may still be served stale
}

// staleTTL is the TTL on a stale answer (RFC 8767 4 recommends 30 s).
const staleTTL = 30

// lookup is the query path's first step, the same for every door: a fresh entry, a stale one
// while every upstream is down, or a miss (then the door calls miss with its asker). m counts
// what happened under the door's server label.
func (n *NodeCache) lookup(q *question, m *serverMetrics, now time.Time) found {
	e := n.node.cache.get(q.key, q.lower, now)
	if e == nil {
		m.misses.Inc()
		return found{v: verdictMiss}
	}
	if ttl := e.remaining(now); ttl > 0 {
		if q.nxdomainToChain && e.answer.rcode == dns.RcodeNameError {
			return found{v: verdictChain}
		}
		if e.answer.denial {
			m.hitDenial.Inc()
		} else {
			m.hitSuccess.Inc()
		}
		if n.shouldPrefetch(e, now) {
			m.prefetch.Inc()
			n.join(q, waiter{ask: refresh{e}, m: m})
		}
		return found{v: verdictAnswer, a: e.answer, ttl: ttl}
	}
	// Expired, inside the stale window: ask again, unless every upstream is known down.
	if !n.upstreams.AnyHealthy() {
		if e.prefetching.CompareAndSwap(false, true) {
			n.join(q, waiter{ask: refresh{e}, m: m}) // one background try per entry at a time
		}
		m.stale.Inc()
		return found{v: verdictAnswer, a: e.answer, ttl: staleTTL}
	}
	m.misses.Inc()
	return found{v: verdictMiss, stale: e}
}

// miss sends the question upstream through its flight; ask gets the answer, or the stale entry
// when no upstream answers.
func (n *NodeCache) miss(q *question, m *serverMetrics, stale *entry, ask asker) {
	n.join(q, waiter{ask: ask, m: m, stale: stale})
}

// waiter is an asker of a flight with what the query path adds: the stale entry to fall back on.
type waiter struct {
	ask   asker
	m     *serverMetrics
	stale *entry
}

func (w waiter) done(a *answer, err error) {
	if (err != nil || a.rcode == dns.RcodeServerFailure) && w.stale != nil {
		w.m.stale.Inc()
		w.ask.answered(w.stale.answer, staleTTL, nil)
		return
	}
	if err != nil {
		w.ask.answered(nil, 0, err)
		return
	}
	w.ask.answered(a, a.ttl, nil)
}

// refresh is the asker of a prefetch or a background try: the cache takes the answer; a failure
// lets a later hit try again.
type refresh struct{ e *entry }

func (r refresh) answered(a *answer, _ uint32, err error) {
	if err != nil || a.rcode == dns.RcodeServerFailure {
		r.e.prefetching.Store(false)
	}
}

// shouldPrefetch counts a hit and reports whether this hit should refresh the entry: it was
// asked at least prefetch-amount times in the window and little of its TTL is left.
func (n *NodeCache) shouldPrefetch(e *entry, now time.Time) bool {
	cfg := n.config
	if cfg.prefetchAmount == 0 {
		return false
	}
	if start := e.windowStart.Load(); now.UnixNano()-start > int64(cfg.prefetchDuration) {
		e.windowStart.Store(now.UnixNano())
		e.hits.Store(0)
	}
	if int(e.hits.Add(1)) < cfg.prefetchAmount {
		return false
	}
	total, left := e.expires.Sub(e.stored), e.expires.Sub(now)
	if left*100 > total*time.Duration(cfg.prefetchPercent) {
		return false
	}
	return e.prefetching.CompareAndSwap(false, true)
}

// flight is one question on its way upstream.
type flight struct {
	key   cacheKey
	name  string // lower case, as cached
	qwire []byte // the name in wire form as its first asker spelled it
	qtype uint16
	qcls  uint16
	query []byte // what goes upstream (wire form, ID 0)
	nc    *NodeCache

	waiters []waiter // under flights.mu until the flight ends
}

// flights are the questions in flight in the process, by cache key.
type flights struct {
	mu sync.Mutex
	m  map[cacheKey]*flight
}

// join adds w to the flight of q, starting one when there is none, or when the one there
// belongs to an instance being replaced (a reload: its upstreams take no new queries) or asks
// another name with the same key (a hash collision: that flight runs alone).
func (n *NodeCache) join(q *question, w waiter) {
	fs := &n.node.flights
	fs.mu.Lock()
	f := fs.m[q.key]
	if f != nil && !f.nc.closing.Load() && string(f.name) == string(q.lower) {
		f.waiters = append(f.waiters, w)
		fs.mu.Unlock()
		return
	}
	if n.flightsOpen.Load() >= int64(n.config.maxFlights) {
		fs.mu.Unlock()
		n.shed(w)
		return
	}
	n.flightsOpen.Add(1)
	f = n.newFlight(q)
	f.waiters = append(f.waiters, w)
	if fs.m == nil {
		fs.m = map[cacheKey]*flight{}
	}
	if old := fs.m[q.key]; old == nil || old.nc.closing.Load() {
		fs.m[q.key] = f
	}
	fs.mu.Unlock()
	go f.run(fs)
}

func (n *NodeCache) newFlight(q *question) *flight {
	qwire := append([]byte(nil), q.qwire...)
	return &flight{key: q.key, name: string(q.lower), qwire: qwire, qtype: q.qtype, qcls: q.qclass, nc: n,
		query: upstreamQuery(qwire, q.qtype, q.qclass, q.key.do, q.key.cd)}
}

// errShed is the answer to a miss while the block already has max flights in flight.
var errShed = errors.New("too many misses in flight: shed")

// shed answers a miss at once with a failure (SERVFAIL, or the stale entry): a flood of names
// nobody asked before (random subdomains) must not hold a goroutine, a socket and a buffer per
// query for the whole upstream timeout, or starve the names that are cached.
func (n *NodeCache) shed(w waiter) {
	w.m.shed.Inc()
	w.done(nil, errShed)
}

// run asks the upstreams, failing over within the flight's deadline, and ends the flight.
func (f *flight) run(fs *flights) {
	cfg := f.nc.config
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout+cfg.timeout/2)
	defer cancel()
	raw, err := f.nc.upstreams.Exchange(ctx, f.query)
	var a *answer
	if err == nil {
		var ttl uint32
		if a, ttl, err = parseAnswerWire(raw, f.qwire, f.qtype, f.qcls, cfg.successTTL, cfg.denialTTL); err == nil && ttl > 0 {
			f.nc.node.cache.put(f.key, f.name, a, ttl, cfg.serveStale, time.Now())
		}
	}
	if err != nil {
		a = nil
		log.Debugf("%s %s: %v", f.name, dns.TypeToString[f.qtype], err)
	}
	fs.mu.Lock()
	if fs.m[f.key] == f {
		delete(fs.m, f.key)
	}
	waiters := f.waiters
	f.waiters = nil
	fs.mu.Unlock()
	for _, w := range waiters {
		w.done(a, err)
	}
	// The slot is freed only now, when the goroutine is about to end: the bound is on goroutines
	// as much as on questions upstream.
	f.nc.flightsOpen.Add(-1)
}

// upstreamQuery is the query for a question in wire form, as miekg/dns would pack it with RD,
// CD as asked and an OPT record of door.EDNSSize with DO as asked; its ID is 0 (the transport sets
// one). qname is the name in wire form.
func upstreamQuery(qname []byte, qtype, qclass uint16, do, cd bool) []byte {
	b := make([]byte, 12, 12+len(qname)+4+optLen)
	flags := uint16(dnswire.FlagRD)
	if cd {
		flags |= dnswire.FlagCD
	}
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], 1)  // QDCOUNT
	binary.BigEndian.PutUint16(b[10:], 1) // ARCOUNT: the OPT record
	b = append(b, qname...)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, qclass)
	var doBit byte
	if do {
		doBit = 0x80
	}
	// OPT: root name, type, class = UDP size, TTL = extended RCODE 0, version 0, DO; RDLENGTH 0.
	return append(b, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(door.EDNSSize>>8), byte(door.EDNSSize&0xFF), 0, 0, doBit, 0, 0, 0)
}
