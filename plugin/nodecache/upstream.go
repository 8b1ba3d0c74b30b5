package nodecache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// endpoint is one upstream server reached over one transport.
type endpoint struct {
	addr      string
	transport string // "tcp" or "udp"
	tcp       *tcpPool
	timeout   time.Duration
	duration  prometheus.Observer // upstreamDuration of this endpoint

	fails   atomic.Int32 // consecutive failures, queries and health checks alike
	reached atomic.Bool  // answered at least once since start
}

// maxFails consecutive failures mark an endpoint down until it answers again.
const maxFails = 2

const (
	defaultTimeout     = 2 * time.Second
	defaultHealthEvery = time.Second
	defaultPoolSize    = 2
)

func newEndpoint(addr, transport string, timeout time.Duration) *endpoint {
	// A UDP endpoint keeps a pool too: answers that come back truncated are asked again over TCP.
	return &endpoint{addr: addr, transport: transport, timeout: timeout, tcp: newTCPPool(addr, defaultPoolSize, timeout),
		duration: upstreamDuration.WithLabelValues(addr, transport)}
}

func (e *endpoint) healthy() bool { return e.fails.Load() < maxFails }

// exchange sends q (packed, any ID) and returns the answer in wire form, checked to answer q's
// question.
func (e *endpoint) exchange(ctx context.Context, q []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	start := time.Now()
	raw, err := e.exchangeOnce(ctx, q)
	e.record(start, err)
	if err != nil {
		return nil, err
	}
	return raw, nil
}

// record counts the outcome of one exchange with e that started at start.
func (e *endpoint) record(start time.Time, err error) {
	e.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		e.fails.Add(1)
		upstreamErrors.WithLabelValues(e.addr, e.transport, errorKind(err)).Inc()
		return
	}
	e.fails.Store(0)
	e.reached.Store(true)
}

func (e *endpoint) exchangeOnce(ctx context.Context, q []byte) ([]byte, error) {
	if e.transport == "udp" {
		raw, err := exchangeUDP(ctx, e.addr, q)
		if err != nil || binary.BigEndian.Uint16(raw[2:])&flagTC == 0 {
			return raw, err
		}
	}
	raw, err := e.tcp.exchange(ctx, q)
	if err != nil {
		return nil, err
	}
	if !answers(raw, q) {
		return nil, fmt.Errorf("answer from %s: %w", e.addr, errNotAnswer)
	}
	return raw, nil
}

// answers reports whether raw is a response to the query q (both in wire form): QR set, one
// question, and q's name (ASCII case ignored), type and class.
func answers(raw, q []byte) bool {
	if len(raw) < 12 || binary.BigEndian.Uint16(raw[2:])&flagQR == 0 || binary.BigEndian.Uint16(raw[4:]) != 1 {
		return false
	}
	end, err := skipName(q, 12)
	if err != nil || end+4 > len(q) {
		return false
	}
	return questionIs(raw, q[12:end], binary.BigEndian.Uint16(q[end:]), binary.BigEndian.Uint16(q[end+2:]))
}

// rcodeOf is the header rcode of a message in wire form.
func rcodeOf(raw []byte) int { return int(raw[3] & 0xF) }

func errorKind(err error) string {
	var nerr interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, errBackoff):
		return "backoff"
	case errors.Is(err, errConnClosed), errors.Is(err, errPoolClosed):
		return "closed"
	default:
		return "other"
	}
}

// upstreamGroup is the ordered set of upstreams of one server block. Lines of the stanza are
// tried in order; within a line the start rotates so load spreads; down endpoints are skipped
// while any endpoint is up.
type upstreamGroup struct {
	lines [][]*endpoint
	next  atomic.Uint32

	stopOnce sync.Once
	stop     chan struct{}
}

func newUpstreamGroup(ups []upstream, timeout time.Duration) *upstreamGroup {
	g := &upstreamGroup{stop: make(chan struct{})}
	for _, u := range ups {
		var line []*endpoint
		for _, a := range u.addrs {
			line = append(line, newEndpoint(a, u.transport, timeout))
		}
		g.lines = append(g.lines, line)
	}
	return g
}

func (g *upstreamGroup) endpoints() []*endpoint {
	var all []*endpoint
	for _, l := range g.lines {
		all = append(all, l...)
	}
	return all
}

// anyHealthy reports whether some endpoint is believed up.
func (g *upstreamGroup) anyHealthy() bool {
	for _, e := range g.endpoints() {
		if e.healthy() {
			return true
		}
	}
	return false
}

// reachedAny reports whether some endpoint answered since start.
func (g *upstreamGroup) reachedAny() bool {
	for _, e := range g.endpoints() {
		if e.reached.Load() {
			return true
		}
	}
	return false
}

var errNoUpstream = errors.New("no upstream answered")

// resolve asks the question of the upstreams, failing over until one answers.
func (g *upstreamGroup) resolve(ctx context.Context, q dns.Question, do, cd bool) ([]byte, error) {
	var name [256]byte
	end, err := dns.PackDomainName(q.Name, name[:], 0, nil, false)
	if err != nil {
		return nil, err
	}
	return g.resolveFrom(ctx, upstreamQuery(name[:end], q.Qtype, q.Qclass, do, cd), g.order(), nil, nil)
}

// resolveFrom asks the packed query of the endpoints in order until one answers; lastAnswer and
// lastErr are what earlier endpoints of the same order gave. An upstream's SERVFAIL or REFUSED
// counts as a failure while another upstream is left to ask.
func (g *upstreamGroup) resolveFrom(ctx context.Context, packed []byte, order []*endpoint, lastAnswer []byte, lastErr error) ([]byte, error) {
	for i, e := range order {
		m, err := e.exchange(ctx, packed)
		if err != nil {
			lastErr = fmt.Errorf("%s %s: %w", e.transport, e.addr, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if rc := rcodeOf(m); (rc == dns.RcodeServerFailure || rc == dns.RcodeRefused) && i < len(order)-1 {
			lastAnswer = m
			continue
		}
		return m, nil
	}
	if lastAnswer != nil {
		return lastAnswer, nil
	}
	if lastErr == nil {
		lastErr = errNoUpstream
	}
	return nil, lastErr
}

// upstreamQuery is the query for a question in wire form, as miekg/dns would pack it with RD,
// CD as asked and an OPT record of ednsSize with DO as asked; its ID is 0 (the transport sets
// one). qname is the name in wire form.
func upstreamQuery(qname []byte, qtype, qclass uint16, do, cd bool) []byte {
	b := make([]byte, 12, 12+len(qname)+4+optLen)
	flags := uint16(flagRD)
	if cd {
		flags |= flagCD
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
	return append(b, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(ednsSize>>8), byte(ednsSize&0xFF), 0, 0, doBit, 0, 0, 0)
}

// order lists the endpoints to try: healthy ones first, line by line, each line starting at a
// rotating index; then the down ones, so a query still goes out when all look down.
func (g *upstreamGroup) order() []*endpoint {
	n := g.next.Add(1)
	var up, down []*endpoint
	for _, line := range g.lines {
		for j := range line {
			e := line[(int(n)+j)%len(line)]
			if e.healthy() {
				up = append(up, e)
			} else {
				down = append(down, e)
			}
		}
	}
	return append(up, down...)
}

// healthCheck asks every endpoint `. IN NS` (no recursion) every interval until stopped; any
// answer means up. Over TCP this also keeps the pooled connection from idling out.
func (g *upstreamGroup) healthCheck(every time.Duration) {
	probe := new(dns.Msg)
	probe.SetQuestion(".", dns.TypeNS)
	probe.RecursionDesired = false
	packed, _ := probe.Pack()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, e := range g.endpoints() {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), every)
				defer cancel()
				e.exchange(ctx, packed)
				upstreamHealthy.WithLabelValues(e.addr, e.transport).Set(boolGauge(e.healthy()))
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

func (g *upstreamGroup) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	for _, e := range g.endpoints() {
		e.tcp.close()
	}
}
