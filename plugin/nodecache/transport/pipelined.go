package transport

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/prometheus/client_golang/prometheus"
)

// muxPool is the transport of a `pipelined` upstream: an upstream known to answer the queries of
// one TCP connection concurrently and out of order (RFC 7766 §6.2.1.1; this project's pipelining
// plugin). Queries share a few connections, each carrying up to muxPerConn at once, matched to
// their answers by ID (unique per connection) and question. A query is written whole under the
// connection's write lock; one reader per connection hands each answer to its query.
//
// A connection that fails (the upstream closed or reset it, a write that did not finish) fails
// every query on it; a query written on a connection that had carried others before is asked
// again on a fresh one (the upstream closing an idle connection as we wrote), as the one-query
// pool does. A connection idle for IdleTimeout closes; one older than MaxAge takes no new query
// and closes once its last answer is read, so that nodes spread onto replicas added later.
type muxPool struct {
	addr string
	cfg  Config

	busyGauge, idleGauge prometheus.Gauge

	mu      sync.Mutex
	conns   []*muxConn // taking queries
	dialing int
	changed chan struct{}
	backoff time.Duration
	retryAt time.Time
	closed  bool
}

// muxPerConn is the most queries one connection carries at once (the pipelining plugin answers
// up to 128 of a connection at once by default and stops reading past that); muxConns the most
// connections to one upstream. Together: 4 × 100 queries in flight to one upstream server.
const (
	muxPerConn = 100
	muxConns   = 4
)

type muxConn struct {
	nc   net.Conn
	born time.Time
	pool *muxPool

	wmu sync.Mutex
	buf []byte

	mu       sync.Mutex
	waiting  map[uint16]muxWait
	used     int // queries answered
	lastUsed time.Time
	err      error // set once the connection failed; no query is registered after
	retired  bool  // past MaxAge or idle: closes when waiting is empty
}

type muxResult struct {
	resp []byte
	err  error
}

// muxWait is a query on a connection: its answer's channel and the query, whose question the
// answer must match (a late answer to an abandoned query whose ID was taken again does not).
type muxWait struct {
	ch chan muxResult
	q  []byte
}

func newMuxPool(addr string, cfg Config) *muxPool {
	return &muxPool{addr: addr, cfg: cfg, changed: make(chan struct{}),
		busyGauge: connsOpen.WithLabelValues(addr, "busy"), idleGauge: connsOpen.WithLabelValues(addr, "idle")}
}

// exchange sends the packed query q (its ID is replaced) on a shared connection and returns the
// answer.
func (p *muxPool) exchange(ctx context.Context, q []byte) ([]byte, error) {
	for retries := 0; ; retries++ {
		c, id, ch, err := p.register(ctx, q)
		if err != nil {
			return nil, err
		}
		reused := c.usedBefore()
		if err := c.write(ctx, id, q); err != nil {
			c.unregister(id)
			c.fail(err)
			if reused && retries < maxStaleRetries && ctx.Err() == nil {
				continue
			}
			return nil, connError(ctx, err)
		}
		select {
		case r := <-ch:
			if r.err != nil && reused && retries < maxStaleRetries && ctx.Err() == nil {
				continue // the connection died under a query: ask on a fresh one
			}
			return r.resp, r.err
		case <-ctx.Done():
			c.unregister(id) // a late answer is dropped by the reader
			return nil, ctx.Err()
		}
	}
}

// register finds a connection with room (the least loaded), dials one while below muxConns, or
// waits for room until ctx ends; it returns the connection, the query's ID there and the channel
// its answer comes on.
func (p *muxPool) register(ctx context.Context, q []byte) (*muxConn, uint16, chan muxResult, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, 0, nil, ErrClosed
		}
		now := time.Now()
		var best *muxConn
		bestLoad := muxPerConn
		for _, c := range p.conns {
			if now.Sub(c.born) >= p.cfg.MaxAge {
				c.retire()
				continue
			}
			if n, ok := c.load(); ok && n < bestLoad {
				best, bestLoad = c, n
			}
		}
		p.pruneLocked()
		if best != nil && (bestLoad == 0 || len(p.conns)+p.dialing >= muxConns) {
			p.mu.Unlock()
			if id, ch, ok := best.add(q); ok {
				return best, id, ch, nil
			}
			continue
		}
		if len(p.conns)+p.dialing < muxConns {
			if wait := p.retryAt.Sub(now); wait > 0 {
				p.mu.Unlock()
				if best != nil {
					if id, ch, ok := best.add(q); ok {
						return best, id, ch, nil
					}
				}
				return nil, 0, nil, fmt.Errorf("%s: %w (%v left)", p.addr, errBackoff, wait.Round(time.Millisecond))
			}
			p.dialing++
			p.mu.Unlock()
			c, err := p.dial(ctx)
			if err != nil {
				if best != nil { // a connection with room is still there
					if id, ch, ok := best.add(q); ok {
						return best, id, ch, nil
					}
				}
				return nil, 0, nil, err
			}
			if id, ch, ok := c.add(q); ok {
				return c, id, ch, nil
			}
			continue
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, nil, fmt.Errorf("%s: %w (%d×%d)", p.addr, ErrPoolFull, muxConns, muxPerConn)
		}
	}
}

// pruneLocked drops retired and failed connections from those taking queries; p.mu is held.
func (p *muxPool) pruneLocked() {
	keep := p.conns[:0]
	for _, c := range p.conns {
		c.mu.Lock()
		gone := c.err != nil || c.retired
		c.mu.Unlock()
		if !gone {
			keep = append(keep, c)
		}
	}
	clear(p.conns[len(keep):])
	p.conns = keep
}

// wake tells the queries waiting for room that some may have freed.
func (p *muxPool) wake() {
	p.mu.Lock()
	p.signalLocked()
	p.mu.Unlock()
}

func (p *muxPool) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *muxPool) dial(ctx context.Context) (*muxConn, error) {
	d := net.Dialer{Timeout: p.cfg.Timeout, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing--
	if err != nil {
		if ctx.Err() == nil { // the upstream's doing, not the caller giving up
			p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
			p.retryAt = time.Now().Add(p.backoff/2 + rand.N(p.backoff/2+1))
		}
		p.signalLocked()
		return nil, connError(ctx, err)
	}
	p.backoff, p.retryAt = 0, time.Time{}
	now := time.Now()
	c := &muxConn{nc: nc, born: now, lastUsed: now, pool: p, waiting: map[uint16]muxWait{}}
	if p.closed {
		nc.Close()
		return nil, ErrClosed
	}
	p.conns = append(p.conns, c)
	p.idleGauge.Inc()
	go c.read()
	p.signalLocked()
	return c, nil
}

// reap retires connections idle for IdleTimeout (the health check calls it every interval).
func (p *muxPool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, c := range p.conns {
		c.mu.Lock()
		idle := len(c.waiting) == 0 && now.Sub(c.lastUsed) >= p.cfg.IdleTimeout
		c.mu.Unlock()
		if idle {
			c.retire()
		}
	}
	p.pruneLocked()
}

func (p *muxPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.retire()
	}
	p.conns = nil
	p.signalLocked()
}

// load is the number of queries on the connection, and whether it takes more.
func (c *muxConn) load() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiting), c.err == nil && !c.retired && len(c.waiting) < muxPerConn
}

func (c *muxConn) usedBefore() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used > 0
}

// add registers a query under an ID free on the connection.
func (c *muxConn) add(q []byte) (uint16, chan muxResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.retired || len(c.waiting) >= muxPerConn {
		return 0, nil, false
	}
	id := uint16(rand.Uint32())
	for {
		if _, taken := c.waiting[id]; !taken {
			break
		}
		id++
	}
	ch := make(chan muxResult, 1)
	c.waiting[id] = muxWait{ch: ch, q: q}
	if len(c.waiting) == 1 {
		c.pool.idleGauge.Dec()
		c.pool.busyGauge.Inc()
	}
	return id, ch, true
}

// unregister forgets a query that no longer waits; a connection retired meanwhile closes when it
// has none left.
func (c *muxConn) unregister(id uint16) {
	c.mu.Lock()
	wasFull := len(c.waiting) >= muxPerConn
	if _, ok := c.waiting[id]; ok {
		delete(c.waiting, id)
		c.emptiedLocked()
	}
	c.mu.Unlock()
	if wasFull { // a query may be waiting for room
		c.pool.wake()
	}
}

// emptiedLocked updates the gauges when the last query left, and closes a retired connection then.
func (c *muxConn) emptiedLocked() {
	if len(c.waiting) > 0 {
		return
	}
	c.lastUsed = time.Now()
	if c.err == nil {
		c.pool.busyGauge.Dec()
		c.pool.idleGauge.Inc()
	}
	if c.retired && c.err == nil {
		c.closeLocked(errConnClosed)
	}
}

// retire takes the connection out of use; it closes now if nothing is on it.
func (c *muxConn) retire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.retired = true
	if len(c.waiting) == 0 && c.err == nil {
		c.closeLocked(errConnClosed)
	}
}

// closeLocked closes the connection and fails what waits on it; c.mu is held.
func (c *muxConn) closeLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	c.nc.Close()
	if len(c.waiting) > 0 {
		c.pool.busyGauge.Dec()
	} else {
		c.pool.idleGauge.Dec()
	}
	for id, w := range c.waiting {
		w.ch <- muxResult{err: err}
		delete(c.waiting, id)
	}
}

func (c *muxConn) fail(err error) {
	c.mu.Lock()
	c.closeLocked(fmt.Errorf("%w: %v", errConnClosed, err))
	c.mu.Unlock()
	c.pool.wake()
}

// write sends q under id, whole, within ctx's deadline.
func (c *muxConn) write(ctx context.Context, id uint16, q []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	c.nc.SetWriteDeadline(deadline)
	c.buf = binary.BigEndian.AppendUint16(c.buf[:0], uint16(len(q)))
	c.buf = append(c.buf, q...)
	binary.BigEndian.PutUint16(c.buf[2:], id)
	_, err := c.nc.Write(c.buf)
	return err
}

// read hands each answer to the query of its ID until the connection fails or closes.
func (c *muxConn) read() {
	r := &tcpConn{nc: c.nc}
	for {
		resp, err := r.readFrame()
		if err != nil {
			c.fail(err)
			return
		}
		if len(resp) < 12 {
			continue
		}
		id := binary.BigEndian.Uint16(resp)
		c.mu.Lock()
		wasFull := len(c.waiting) >= muxPerConn
		if w, ok := c.waiting[id]; ok && dnswire.Answers(resp, w.q) {
			delete(c.waiting, id)
			c.used++
			w.ch <- muxResult{resp: resp}
			c.emptiedLocked()
		}
		// Else not ours, or the late answer of a query that gave up: dropped.
		c.mu.Unlock()
		if wasFull {
			c.pool.wake()
		}
	}
}
