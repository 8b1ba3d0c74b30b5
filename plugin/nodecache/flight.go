package nodecache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// A miss goes upstream once for every asker of the same question (name, type, class, DO and CD),
// whichever path asked: the slow path's ServeDNS waits for the flight to end and answers from it,
// the fast path's askers are answered, in wire form, by whatever ends it.

// flight is one question on its way upstream.
type flight struct {
	key   cacheKey
	q     dns.Question // the name as first asked
	qwire []byte       // the name in wire form
	query []byte       // what goes upstream (wire form, ID 0)
	nc    *NodeCache   // the block whose upstreams and TTL caps answer it
	start time.Time

	done chan struct{} // closed once a and err are set
	a    *answer
	err  error

	waiters []fastWaiter // fast-path askers; under flights.mu until the flight ends
}

// flights are the questions in flight in the process, by cache key.
type flights struct {
	mu sync.Mutex
	m  map[cacheKey]*flight
}

// join returns the flight of the question, starting one (leader true) when there is none; w,
// when not nil, is answered when it ends. nil: another name with the same key is in flight (a
// hash collision), so this one cannot share it.
func (fs *flights) join(nc *NodeCache, key cacheKey, q dns.Question, qwire []byte, w *fastWaiter) (f *flight, leader bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[key]; f != nil {
		if !strings.EqualFold(f.q.Name, q.Name) {
			return nil, false
		}
		if w != nil {
			f.waiters = append(f.waiters, *w)
		}
		return f, false
	}
	f = newFlight(nc, key, q, qwire)
	if w != nil {
		f.waiters = append(f.waiters, *w)
	}
	if fs.m == nil {
		fs.m = map[cacheKey]*flight{}
	}
	fs.m[key] = f
	return f, true
}

func newFlight(nc *NodeCache, key cacheKey, q dns.Question, qwire []byte) *flight {
	return &flight{key: key, q: q, qwire: qwire, nc: nc, start: time.Now(), done: make(chan struct{}),
		query: upstreamQuery(qwire, q.Qtype, q.Qclass, key.do, key.cd)}
}

// deadline is when the flight gives up on every upstream.
func (f *flight) deadline() time.Time {
	return f.start.Add(f.nc.config.timeout + f.nc.config.timeout/2)
}

// resolve asks the endpoints in order, waiting for them (the slow path, and the fast path's
// failover), and ends the flight.
func (f *flight) resolve(fs *flights, order []*endpoint, lastAnswer []byte, lastErr error) (*answer, error) {
	ctx, cancel := context.WithDeadline(context.Background(), f.deadline())
	defer cancel()
	raw, err := f.nc.upstreams.resolveFrom(ctx, f.query, order, lastAnswer, lastErr)
	return f.finish(fs, raw, err)
}

// launch starts the flight without waiting: over a live pooled connection of the first endpoint
// when it has one, the answer coming back through a callback; otherwise on a goroutine of its own.
func (f *flight) launch(fs *flights) {
	order := f.nc.upstreams.order()
	if e := order[0]; e.transport == "tcp" {
		if c := e.tcp.connNow(); c != nil {
			start := time.Now()
			c.send(f.query, e.timeout, func(resp []byte, err error) { f.answered(fs, order, e, start, resp, err) })
			return
		}
	}
	go f.resolve(fs, order, nil, nil)
}

// answered takes what the first endpoint's connection gave as the pool's exchange and the
// group's failover would: a connection that died is asked again (the pool sends on a fresh
// one), a failure, a SERVFAIL or a REFUSED moves on to the next endpoint.
func (f *flight) answered(fs *flights, order []*endpoint, e *endpoint, start time.Time, resp []byte, err error) {
	if errors.Is(err, errConnClosed) {
		go f.resolve(fs, order, nil, nil)
		return
	}
	if err == nil && !questionIs(resp, f.qwire, f.q.Qtype, f.q.Qclass) {
		err = fmt.Errorf("answer from %s: %w", e.addr, errNotAnswer)
	}
	e.record(start, err)
	switch {
	case err != nil && len(order) > 1:
		go f.resolve(fs, order[1:], nil, fmt.Errorf("%s %s: %w", e.transport, e.addr, err))
	case err != nil:
		f.finish(fs, nil, fmt.Errorf("%s %s: %w", e.transport, e.addr, err))
	case (rcodeOf(resp) == dns.RcodeServerFailure || rcodeOf(resp) == dns.RcodeRefused) && len(order) > 1:
		go f.resolve(fs, order[1:], resp, nil)
	default:
		f.finish(fs, resp, nil)
	}
}

// finish caches what may be cached of the upstream's answer and ends the flight.
func (f *flight) finish(fs *flights, raw []byte, err error) (*answer, error) {
	var a *answer
	if err == nil {
		cfg := f.nc.config
		var ttl uint32
		if a, ttl, err = parseAnswerWire(raw, f.qwire, f.q.Qtype, f.q.Qclass, cfg.successTTL, cfg.denialTTL); err == nil && ttl > 0 {
			f.nc.node.cache.put(f.key, f.q.Name, a, ttl, cfg.serveStale, time.Now())
		}
	}
	if err != nil {
		a = nil
	}
	fs.mu.Lock()
	if fs.m[f.key] == f {
		delete(fs.m, f.key)
	}
	f.a, f.err = a, err
	waiters := f.waiters
	f.waiters = nil
	fs.mu.Unlock()
	close(f.done)
	if err != nil && len(waiters) > 0 {
		log.Debugf("%s %s: %v", f.q.Name, dns.TypeToString[f.q.Qtype], err)
	}
	for i := range waiters {
		waiters[i].answer(a, err)
	}
	return a, err
}

// wait is the answer of a flight another asker leads.
func (f *flight) wait() (*answer, error) {
	<-f.done
	return f.a, f.err
}
