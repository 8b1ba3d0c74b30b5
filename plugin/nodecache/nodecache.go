// Package nodecache is the per-node DNS cache of clusterdns: it listens on link-local addresses,
// caches answers and sends misses to the cluster DNS over TCP and to the node's resolvers.
package nodecache

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// NodeCache answers from the process-wide cache and sends misses to its upstreams.
type NodeCache struct {
	Next   plugin.Handler
	config config

	node      *node // process-wide: cache, single-flight, in-flight count, link state
	upstreams *upstreamGroup
}

// staleTTL is the TTL on a stale answer (RFC 8767 4 recommends 30 s).
const staleTTL = 30

var renderBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// ServeDNS implements plugin.Handler.
func (n *NodeCache) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	n.node.inFlight.Add(1)
	defer n.node.inFlight.Add(-1)
	server := metrics.WithServer(ctx)
	gauge := inFlight.WithLabelValues(server)
	gauge.Inc()
	defer gauge.Dec()

	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery || r.Response {
		return n.passThrough(ctx, w, r)
	}
	state := request.Request{W: w, Req: r}
	q := r.Question[0]
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		return n.passThrough(ctx, w, r)
	}
	do := state.Do()
	c := reply{id: r.Id, qname: q.Name, rd: r.RecursionDesired, cd: r.CheckingDisabled, ad: r.AuthenticatedData,
		edns: r.IsEdns0() != nil, do: do, maxSize: state.Size()}
	key := newCacheKey(q.Name, q.Qtype, q.Qclass, do, r.CheckingDisabled)
	now := time.Now()

	if e := n.node.cache.get(key, q.Name, now); e != nil {
		if ttl := e.remaining(now); ttl > 0 {
			kind := "success"
			if e.answer.denial {
				kind = "denial"
			}
			cacheHits.WithLabelValues(server, kind).Inc()
			if n.shouldPrefetch(e, now) {
				prefetches.WithLabelValues(server).Inc()
				go n.refresh(key, q, do, r.CheckingDisabled, e)
			}
			return n.write(w, server, e.answer, c, ttl)
		}
		// Expired, inside the stale window: ask again, unless every upstream is known down.
		if n.upstreams.anyHealthy() {
			cacheMisses.WithLabelValues(server).Inc()
			if fresh, err := n.resolve(key, q, do, r.CheckingDisabled); err == nil && fresh.rcode != dns.RcodeServerFailure {
				return n.write(w, server, fresh, c, fresh.ttl)
			}
		} else if e.prefetching.CompareAndSwap(false, true) {
			go n.refresh(key, q, do, r.CheckingDisabled, e) // one background try per entry at a time
		}
		staleServed.WithLabelValues(server).Inc()
		return n.write(w, server, e.answer, c, staleTTL)
	}

	cacheMisses.WithLabelValues(server).Inc()
	a, err := n.resolve(key, q, do, r.CheckingDisabled)
	if err != nil {
		log.Debugf("%s %s: %v", q.Name, dns.TypeToString[q.Qtype], err)
		return dns.RcodeServerFailure, plugin.Error(pluginName, err)
	}
	return n.write(w, server, a, c, a.ttl)
}

// resolve asks the upstreams once for all identical concurrent misses (the fast path's too),
// caches what may be cached and returns the answer in wire form.
func (n *NodeCache) resolve(key cacheKey, q dns.Question, do, cd bool) (*answer, error) {
	var name [256]byte
	end, err := dns.PackDomainName(q.Name, name[:], 0, nil, false)
	if err != nil {
		return nil, err
	}
	qwire := append([]byte(nil), name[:end]...)
	f, leader := n.node.flights.join(n, key, q, qwire, nil)
	switch {
	case f == nil: // another name with the same key is in flight: ask on our own
		f = newFlight(n, key, q, qwire)
	case !leader:
		return f.wait()
	}
	return f.resolve(&n.node.flights, n.upstreams.order(), nil, nil)
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

// refresh asks the upstreams in the background; the cache takes the answer if there is one.
func (n *NodeCache) refresh(key cacheKey, q dns.Question, do, cd bool, e *entry) {
	a, err := n.resolve(key, q, do, cd)
	if err != nil || a.rcode == dns.RcodeServerFailure {
		log.Debugf("refresh %s %s: failed (%v), trying again on a later hit", q.Name, dns.TypeToString[q.Qtype], err)
		e.prefetching.Store(false)
	}
}

// write sends a to the client. On the server's own connection writer the bytes go out as they
// are; any other writer (upstream.Lookup's nonwriter for searchpath, DoH, gRPC) gets a dns.Msg.
// Once written, whatever the answer's rcode, it returns RcodeSuccess: a SERVFAIL or REFUSED
// returned would make the server write a second answer.
func (n *NodeCache) write(w dns.ResponseWriter, server string, a *answer, c reply, ttl uint32) (int, error) {
	raw := connWriter(w)
	if !raw {
		c.maxSize = dns.MaxMsgSize // the writer, not the cache, fits the answer to its transport
	}
	bp := renderBufs.Get().(*[]byte)
	defer renderBufs.Put(bp)
	out, ok := a.render(*bp, c, ttl)
	if !ok {
		return dns.RcodeServerFailure, plugin.Error(pluginName, errors.New("cannot render cached answer"))
	}
	*bp = out[:0]
	if len(out) > 2 && out[2]&(flagTC>>8) != 0 && len(a.wire) > len(out) {
		truncated.WithLabelValues(server).Inc()
	}
	if !raw {
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			return dns.RcodeServerFailure, plugin.Error(pluginName, err)
		}
		if err := w.WriteMsg(m); err != nil {
			return dns.RcodeServerFailure, plugin.Error(pluginName, err)
		}
		return dns.RcodeSuccess, nil
	}
	// Recorders (prometheus, log) learn the rcode from WriteMsg; tell them, through every layer.
	for rw := w; ; {
		rec, ok := rw.(*dnstest.Recorder)
		if !ok {
			break
		}
		rec.Rcode = a.rcode
		rw = rec.ResponseWriter
	}
	if _, err := w.Write(out); err != nil {
		return dns.RcodeServerFailure, plugin.Error(pluginName, err)
	}
	return dns.RcodeSuccess, nil
}

// connWriter reports whether w is, under recorders and the server's scrub writer, miekg/dns's
// writer for a client connection, whose Write sends bytes to the client as they are.
func connWriter(w dns.ResponseWriter) bool {
	for {
		switch x := w.(type) {
		case *dnstest.Recorder:
			w = x.ResponseWriter
		case *request.ScrubWriter:
			w = x.ResponseWriter
		default:
			t := reflect.TypeOf(w)
			return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "github.com/miekg/dns"
		}
	}
}

// passThrough sends what the cache does not handle (other opcodes, zone transfers, several
// questions) to the next plugin.
func (n *NodeCache) passThrough(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(n.Name(), n.Next, ctx, w, r)
}

// Name implements plugin.Handler.
func (n *NodeCache) Name() string { return pluginName }

// Ready implements ready.Readiness: the link and packet filter are set up and an upstream has
// answered since start.
func (n *NodeCache) Ready() bool { return n.node.isSetUp() && n.upstreams.reachedAny() }
