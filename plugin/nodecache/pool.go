package nodecache

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// tcpPool keeps a few persistent TCP connections to one upstream and pipelines queries over
// them: many queries in flight per connection, answers matched by message ID (RFC 7766 6.2.1.1).
type tcpPool struct {
	addr        string
	size        int
	dialTimeout time.Duration

	mu      sync.Mutex
	conns   []*pipeConn
	next    int
	backoff time.Duration
	retryAt time.Time     // no dial before this after a failed one
	dialing chan struct{} // closed when the dial in progress ends
	closed  bool
}

var (
	errPoolClosed = errors.New("connection pool closed")
	errBackoff    = errors.New("reconnect backoff after a failed dial")
	errConnClosed = errors.New("upstream closed the connection")
	errTooMany    = errors.New("too many queries in flight")
)

const (
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	maxInFlightTCP = 4096 // per connection; IDs are 16 bits
	maxResends     = 3
)

func newTCPPool(addr string, size int, dialTimeout time.Duration) *tcpPool {
	return &tcpPool{addr: addr, size: max(1, size), dialTimeout: dialTimeout}
}

// exchange sends the packed query q (its ID is replaced) and returns the packed answer.
// A query lost because the upstream closed the connection (an idle timeout racing our write, a
// cap on queries per connection) is asked again on a fresh connection, up to maxResends times:
// queries are idempotent.
func (p *tcpPool) exchange(ctx context.Context, q []byte) ([]byte, error) {
	for resends := 0; ; {
		c, err := p.conn(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, q)
		if !errors.Is(err, errConnClosed) || ctx.Err() != nil {
			return resp, err
		}
		// Resends count only on connections that never answered anything: an upstream that
		// answers and then closes (idle timeout, query cap) works, and the deadline bounds us.
		if c.answered.Load() == 0 {
			if resends++; resends > maxResends {
				return nil, err
			}
		}
	}
}

// conn returns a live connection, dialing one while the pool is below its size. One dial at
// a time: a burst of queries on an empty pool waits for it rather than opening a connection each.
func (p *tcpPool) conn(ctx context.Context) (*pipeConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		live := p.conns[:0]
		for _, c := range p.conns {
			if !c.isDead() {
				live = append(live, c)
			}
		}
		clear(p.conns[len(live):])
		p.conns = live
		// Use the next live connection unless the pool can grow and that one is busy.
		if n := len(p.conns); n > 0 {
			c := p.conns[p.next%n]
			if n >= p.size || p.dialing != nil || c.inFlight() == 0 || time.Now().Before(p.retryAt) {
				p.next++
				p.mu.Unlock()
				return c, nil
			}
		}
		if p.dialing != nil {
			wait := p.dialing
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if wait := time.Until(p.retryAt); wait > 0 {
			p.mu.Unlock()
			return nil, fmt.Errorf("%s: %w (%v left)", p.addr, errBackoff, wait.Round(time.Millisecond))
		}
		p.dialing = make(chan struct{})
		p.mu.Unlock()
		return p.dial(ctx)
	}
}

// connNow is conn for a caller that must not wait: a live connection or nil. When the pool
// could use another connection it dials one in the background.
func (p *tcpPool) connNow() *pipeConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	for i := 0; i < len(p.conns); {
		if p.conns[i].isDead() {
			p.conns = slices.Delete(p.conns, i, i+1)
			continue
		}
		i++
	}
	n := len(p.conns)
	if n == 0 {
		return nil
	}
	c := p.conns[p.next%n]
	p.next++
	if n < p.size && p.dialing == nil && c.inFlight() > 0 && !time.Now().Before(p.retryAt) {
		p.dialing = make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.dialTimeout)
			defer cancel()
			p.dial(ctx)
		}()
	}
	return c
}

func (p *tcpPool) dial(ctx context.Context) (*pipeConn, error) {
	d := net.Dialer{Timeout: p.dialTimeout, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", p.addr)

	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.dialing)
	p.dialing = nil
	if err != nil {
		p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
		// Jitter so the nodes of a cluster do not reconnect in lockstep.
		p.retryAt = time.Now().Add(p.backoff/2 + rand.N(p.backoff/2+1))
		return nil, fmt.Errorf("dial %s: %w", p.addr, err)
	}
	p.backoff, p.retryAt = 0, time.Time{}
	c := newPipeConn(nc, p.dialTimeout)
	if p.closed {
		c.close(errPoolClosed)
		return nil, errPoolClosed
	}
	p.conns = append(p.conns, c)
	return c, nil
}

// close ends every connection; queries in flight fail.
func (p *tcpPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.close(errPoolClosed)
	}
}

// pipeConn is one TCP connection with a writer that sends every query queued since its last
// write in one write, and a buffered reader that hands each answer to the query waiting for its
// ID: a waiting exchange or a send's callback.
type pipeConn struct {
	nc      net.Conn
	timeout time.Duration // write deadline; a send's default wait

	wmu    sync.Mutex
	wbuf   []byte        // frames queued for the writer
	wspare []byte        // the writer's previous buffer, reused
	wake   chan struct{} // tells the writer there is something queued

	mu      sync.Mutex
	pending map[uint16]*pendingQuery
	nextID  uint16
	err     error         // set once the connection is dead
	gone    chan struct{} // closed with err set

	lastRead atomic.Int64 // unix nanos of the last answer read
	answered atomic.Int64 // answers read over the connection's life
}

// pendingQuery is a query waiting for its answer: on ch (exchange) or through done (send).
type pendingQuery struct {
	id    uint16
	ch    chan []byte
	done  func(resp []byte, err error)
	timer *time.Timer // a send's timeout
	sent  int64       // unix nanos
}

func newPipeConn(nc net.Conn, timeout time.Duration) *pipeConn {
	c := &pipeConn{nc: nc, timeout: timeout, pending: make(map[uint16]*pendingQuery), nextID: uint16(rand.Uint32()),
		wake: make(chan struct{}, 1), gone: make(chan struct{})}
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.writeLoop()
	return c
}

func (c *pipeConn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

func (c *pipeConn) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// register gives pq a free ID; it holds c.mu.
func (c *pipeConn) register(pq *pendingQuery) error {
	if c.err != nil {
		return c.deadErrLocked()
	}
	if len(c.pending) >= maxInFlightTCP {
		return errTooMany
	}
	id := c.nextID
	for c.pending[id] != nil {
		id++
	}
	c.nextID = id + 1
	pq.id, pq.sent = id, time.Now().UnixNano()
	c.pending[id] = pq
	return nil
}

// queue adds the frame of q with the ID id for the writer.
func (c *pipeConn) queue(q []byte, id uint16) {
	c.wmu.Lock()
	at := len(c.wbuf)
	c.wbuf = binary.BigEndian.AppendUint16(c.wbuf, uint16(len(q)))
	c.wbuf = append(c.wbuf, q...)
	binary.BigEndian.PutUint16(c.wbuf[at+2:], id)
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes what was queued, all of it in one write, until the connection dies. A failed
// or partial write leaves the stream out of frame: the connection is closed.
func (c *pipeConn) writeLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.gone:
			return
		}
		c.wmu.Lock()
		buf := c.wbuf
		if len(buf) == 0 {
			c.wmu.Unlock()
			continue
		}
		c.wbuf = c.wspare[:0]
		c.wmu.Unlock()
		c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.wspare = buf[:0]
		c.wmu.Unlock()
		if err != nil {
			c.close(fmt.Errorf("write to %s: %w", c.nc.RemoteAddr(), err))
			return
		}
	}
}

func (c *pipeConn) exchange(ctx context.Context, q []byte) ([]byte, error) {
	pq := &pendingQuery{ch: make(chan []byte, 1)}
	c.mu.Lock()
	err := c.register(pq)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c.queue(q, pq.id)

	select {
	case resp, ok := <-pq.ch:
		if !ok {
			return nil, c.deadErr()
		}
		return resp, nil
	case <-ctx.Done():
		if c.take(pq) {
			c.stalled(pq)
		}
		return nil, ctx.Err()
	}
}

// send queues q and returns at once; done gets the answer, or an error once the connection dies
// or timeout passes, exactly once, on the reader's or a timer's goroutine (or this one, when the
// query cannot be queued). done must not block.
func (c *pipeConn) send(q []byte, timeout time.Duration, done func(resp []byte, err error)) {
	pq := &pendingQuery{done: done}
	c.mu.Lock()
	err := c.register(pq)
	if err == nil {
		pq.timer = time.AfterFunc(timeout, func() {
			if c.take(pq) {
				c.stalled(pq)
				done(nil, context.DeadlineExceeded)
			}
		})
	}
	c.mu.Unlock()
	if err != nil {
		done(nil, err)
		return
	}
	c.queue(q, pq.id)
}

// take removes pq from the pending queries and reports whether it was still there (nobody
// answered or failed it yet).
func (c *pipeConn) take(pq *pendingQuery) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[pq.id] != pq {
		return false
	}
	delete(c.pending, pq.id)
	return true
}

// stalled closes the connection when nothing was read since pq was written: the connection is
// stalled, not just this query slow.
func (c *pipeConn) stalled(pq *pendingQuery) {
	if c.lastRead.Load() < pq.sent {
		c.close(fmt.Errorf("%s: no answer on the connection within the timeout", c.nc.RemoteAddr()))
	}
}

// deadErr is what a query on a dead connection gets: errConnClosed (worth asking again on
// another connection) with the cause, or errPoolClosed.
func (c *pipeConn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadErrLocked()
}

func (c *pipeConn) deadErrLocked() error {
	switch {
	case c.err == nil, errors.Is(c.err, errConnClosed):
		return errConnClosed
	case errors.Is(c.err, errPoolClosed):
		return errPoolClosed
	default:
		return fmt.Errorf("%w: %v", errConnClosed, c.err)
	}
}

// readLoop reads answers through a buffer (many per read when they come in bursts) and hands
// each to its query.
func (c *pipeConn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
			c.close(errConnClosed)
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(br, msg); err != nil {
			c.close(errConnClosed)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.answered.Add(1)
		if len(msg) < 12 {
			continue
		}
		id := binary.BigEndian.Uint16(msg)
		c.mu.Lock()
		pq := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		switch {
		case pq == nil:
		case pq.ch != nil:
			pq.ch <- msg
		default:
			pq.timer.Stop()
			pq.done(msg, nil)
		}
	}
}

// close marks the connection dead with err and fails every query waiting on it.
func (c *pipeConn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.gone)
	pending := c.pending
	c.pending = make(map[uint16]*pendingQuery)
	dead := c.deadErrLocked()
	c.mu.Unlock()
	c.nc.Close()
	for _, pq := range pending {
		if pq.ch != nil {
			close(pq.ch)
			continue
		}
		pq.timer.Stop()
		pq.done(nil, dead)
	}
}
