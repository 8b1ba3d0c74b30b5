package nodecache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
	c := newPipeConn(nc)
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

// pipeConn is one TCP connection with a reader that hands each answer to the query waiting
// for its ID.
type pipeConn struct {
	nc  net.Conn
	wmu sync.Mutex // one writer at a time: length prefix and message go out together

	mu      sync.Mutex
	pending map[uint16]chan []byte
	nextID  uint16
	err     error // set once the connection is dead

	lastRead atomic.Int64 // unix nanos of the last answer read
	answered atomic.Int64 // answers read over the connection's life
}

func newPipeConn(nc net.Conn) *pipeConn {
	c := &pipeConn{nc: nc, pending: make(map[uint16]chan []byte), nextID: uint16(rand.Uint32())}
	c.lastRead.Store(time.Now().UnixNano())
	go c.readLoop()
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

func (c *pipeConn) exchange(ctx context.Context, q []byte) ([]byte, error) {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.deadErr()
	}
	if len(c.pending) >= maxInFlightTCP {
		c.mu.Unlock()
		return nil, errTooMany
	}
	id := c.nextID
	for c.pending[id] != nil {
		id++
	}
	c.nextID = id + 1
	c.pending[id] = ch
	c.mu.Unlock()

	frame := make([]byte, 2+len(q))
	binary.BigEndian.PutUint16(frame, uint16(len(q)))
	copy(frame[2:], q)
	binary.BigEndian.PutUint16(frame[2:], id)
	sent := time.Now()

	c.wmu.Lock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	c.nc.SetWriteDeadline(deadline)
	_, err := c.nc.Write(frame)
	c.wmu.Unlock()
	if err != nil {
		// A partial write leaves the stream out of frame: the connection is unusable.
		c.close(fmt.Errorf("write to %s: %w", c.nc.RemoteAddr(), err))
		c.forget(id)
		return nil, c.deadErr()
	}

	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, c.deadErr()
		}
		return resp, nil
	case <-ctx.Done():
		c.forget(id)
		// Nothing read since we wrote: the connection is stalled, not just this query slow.
		if c.lastRead.Load() < sent.UnixNano() {
			c.close(fmt.Errorf("%s: no answer on the connection within the timeout", c.nc.RemoteAddr()))
		}
		return nil, ctx.Err()
	}
}

func (c *pipeConn) forget(id uint16) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// deadErr is what a query on a dead connection gets: errConnClosed (worth asking again on
// another connection) with the cause, or errPoolClosed.
func (c *pipeConn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err == nil, errors.Is(c.err, errConnClosed):
		return errConnClosed
	case errors.Is(c.err, errPoolClosed):
		return errPoolClosed
	default:
		return fmt.Errorf("%w: %v", errConnClosed, c.err)
	}
}

func (c *pipeConn) readLoop() {
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(c.nc, lenBuf[:]); err != nil {
			c.close(errConnClosed)
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c.nc, msg); err != nil {
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
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- msg
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
	pending := c.pending
	c.pending = make(map[uint16]chan []byte)
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pending {
		close(ch)
	}
}
