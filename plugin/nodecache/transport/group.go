package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/miekg/dns"
)

// Group is the ordered set of upstreams of one server block. Lines are tried in order; within a
// line the start rotates so load spreads; endpoints believed down go last.
type Group struct {
	lines [][]*Endpoint
	cfg   Config
	next  atomic.Uint32

	inFlight sync.WaitGroup
	mu       sync.Mutex
	stopping bool // Close was called
	closed   bool // and its grace is over
	stop     chan struct{}
}

// NewGroup makes the endpoints of the lines; nothing is dialled before the first query.
func NewGroup(lines []Line, cfg Config) *Group {
	g := &Group{cfg: cfg, stop: make(chan struct{})}
	for i, l := range lines {
		var line []*Endpoint
		for _, a := range l.Addrs {
			e := newEndpoint(a, l.Proto, cfg)
			e.line = i
			line = append(line, e)
		}
		g.lines = append(g.lines, line)
	}
	return g
}

// Endpoints lists every endpoint, line by line.
func (g *Group) Endpoints() []*Endpoint {
	var all []*Endpoint
	for _, l := range g.lines {
		all = append(all, l...)
	}
	return all
}

// AnyHealthy reports whether some endpoint is believed up.
func (g *Group) AnyHealthy() bool {
	for _, e := range g.Endpoints() {
		if e.Healthy() {
			return true
		}
	}
	return false
}

// ReachedAny reports whether some endpoint answered since start.
func (g *Group) ReachedAny() bool {
	for _, e := range g.Endpoints() {
		if e.reached.Load() {
			return true
		}
	}
	return false
}

// order lists the endpoints to try: healthy ones first, line by line, each line starting at a
// rotating index; then the down ones, so a query still goes out when all look down.
func (g *Group) order() []*Endpoint {
	n := g.next.Add(1)
	var up, down []*Endpoint
	for _, line := range g.lines {
		for j := range line {
			e := line[(int(n)+j)%len(line)]
			if e.Healthy() {
				up = append(up, e)
			} else {
				down = append(down, e)
			}
		}
	}
	return append(up, down...)
}

// Exchange asks the packed query q of the endpoints in order until one answers, within ctx. An
// error or a local refusal (no answer) moves on to the next endpoint, of any line. An upstream's
// SERVFAIL or REFUSED moves on only to the other addresses of its own line: a line is one kind of
// server (the cluster DNS, the node's resolvers), and another line's answer to a name this one
// failed would be a different answer (a stub domain of the cluster DNS sent to the node's
// resolvers leaks the name and comes back NXDOMAIN), or the same server asked again. The last
// answer (or error) is returned when none gives a better one.
func (g *Group) Exchange(ctx context.Context, q []byte) ([]byte, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	g.inFlight.Add(1)
	g.mu.Unlock()
	defer g.inFlight.Done()

	var lastAnswer []byte
	var lastErr error
	answeredLine := -1 // the line of lastAnswer
	order := g.order()
	for i, e := range order {
		if answeredLine >= 0 && e.line != answeredLine {
			continue
		}
		resp, err := e.exchange(ctx, q)
		if err != nil {
			lastErr = fmt.Errorf("%s %s: %w", e.Proto, e.Addr, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if rc := dnswire.Rcode(resp); (rc == dns.RcodeServerFailure || rc == dns.RcodeRefused) && i < len(order)-1 {
			lastAnswer, answeredLine = resp, e.line
			continue
		}
		return resp, nil
	}
	if lastAnswer != nil {
		return lastAnswer, nil
	}
	if lastErr == nil {
		lastErr = ErrNoUpstream
	}
	return nil, lastErr
}

// Start runs the health checks (and the reaping of idle connections) until Close.
func (g *Group) Start() { go g.healthCheck() }

// healthCheck asks every endpoint `. IN NS` (or `<HealthZone> IN SOA`), without recursion, every
// interval; any answer means up.
func (g *Group) healthCheck() {
	probe := new(dns.Msg)
	probe.SetQuestion(".", dns.TypeNS)
	if g.cfg.HealthZone != "" {
		probe.SetQuestion(dns.Fqdn(g.cfg.HealthZone), dns.TypeSOA)
	}
	probe.RecursionDesired = false
	packed, _ := probe.Pack()
	tick := time.NewTicker(g.cfg.HealthEvery)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, e := range g.Endpoints() {
			wg.Go(func() {
				e.reap()
				ctx, cancel := context.WithTimeout(context.Background(), g.cfg.HealthEvery)
				defer cancel()
				e.exchange(ctx, packed)
				healthy.WithLabelValues(e.Addr, e.Proto).Set(boolGauge(e.Healthy()))
			})
		}
		wg.Wait()
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Close stops the health checks; after Config.CloseGrace it takes no new queries, and the
// connections close once the queries in flight have their answers. The grace covers a reload:
// the old instance may still be handed a query until the new one has taken over its sockets.
func (g *Group) Close() {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		return
	}
	g.stopping = true
	close(g.stop)
	g.mu.Unlock()
	time.AfterFunc(g.cfg.CloseGrace, func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.inFlight.Wait()
		for _, e := range g.Endpoints() {
			e.close()
		}
	})
}
