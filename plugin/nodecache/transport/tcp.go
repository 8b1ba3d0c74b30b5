package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tcpPool holds the TCP connections to one upstream. A connection carries one query at a time:
// taken from the idle stack (newest first) or dialled, given back when its answer is read.
type tcpPool struct {
	addr string
	cfg  Config

	busyGauge, idleGauge prometheus.Gauge

	mu      sync.Mutex
	idle    []*tcpConn // most recently used last
	open    int        // connections open or being dialled
	changed chan struct{}
	backoff time.Duration
	retryAt time.Time // no dial before this after a failed one
	closed  bool
}

var errConnClosed = errors.New("upstream closed the connection")

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// maxStaleRetries bounds the fresh connections tried when a reused one turns out closed by
	// the upstream (its idle timeout racing our write).
	maxStaleRetries = 2
)

func newTCPPool(addr string, cfg Config) *tcpPool {
	return &tcpPool{addr: addr, cfg: cfg, changed: make(chan struct{}),
		busyGauge: connsOpen.WithLabelValues(addr, "busy"), idleGauge: connsOpen.WithLabelValues(addr, "idle")}
}

// tcpConn is one connection with its clock.
type tcpConn struct {
	nc       net.Conn
	born     time.Time
	lastUsed time.Time
	used     int    // queries answered on it
	buf      []byte // the frame being written
	rbuf     []byte // read, not yet taken
}

// exchange sends the packed query q (its ID is replaced) on a connection of its own and returns
// the answer. A reused connection that the upstream had closed is replaced by a fresh one.
func (p *tcpPool) exchange(ctx context.Context, q []byte) ([]byte, error) {
	for retries := 0; ; retries++ {
		c, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, q)
		if err == nil {
			p.put(c, true)
			return resp, nil
		}
		p.put(c, false)
		if errors.Is(err, errConnClosed) && c.used > 0 && retries < maxStaleRetries && ctx.Err() == nil {
			continue // the upstream closed an idle connection as we wrote: ask on another
		}
		return nil, err
	}
}

// get takes an idle connection, dials a new one while below MaxConcurrent, or waits for one to
// be freed until ctx ends (ErrPoolFull: a local condition).
func (p *tcpPool) get(ctx context.Context) (*tcpConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		now := time.Now()
		for len(p.idle) > 0 {
			c := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			p.idleGauge.Dec()
			if p.expired(c, now) {
				p.open--
				c.nc.Close()
				continue
			}
			p.busyGauge.Inc()
			p.mu.Unlock()
			return c, nil
		}
		if p.open < p.cfg.MaxConcurrent {
			if wait := p.retryAt.Sub(now); wait > 0 {
				p.mu.Unlock()
				return nil, fmt.Errorf("%s: %w (%v left)", p.addr, errBackoff, wait.Round(time.Millisecond))
			}
			p.open++
			p.busyGauge.Inc()
			p.mu.Unlock()
			return p.dial(ctx)
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w (%d)", p.addr, ErrPoolFull, p.cfg.MaxConcurrent)
		}
	}
}

// expired reports whether an idle connection must not be reused; it holds p.mu.
func (p *tcpPool) expired(c *tcpConn, now time.Time) bool {
	return now.Sub(c.born) >= p.cfg.MaxAge || now.Sub(c.lastUsed) >= p.cfg.IdleTimeout
}

func (p *tcpPool) dial(ctx context.Context) (*tcpConn, error) {
	d := net.Dialer{Timeout: p.cfg.Timeout, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		p.mu.Lock()
		p.open--
		p.busyGauge.Dec()
		if ctx.Err() == nil { // a dial the upstream refused or never answered: back off
			p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
			// Jitter so the nodes of a cluster do not reconnect in lockstep.
			p.retryAt = time.Now().Add(p.backoff/2 + rand.N(p.backoff/2+1))
		}
		p.signalLocked()
		p.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", p.addr, err)
	}
	now := time.Now()
	p.mu.Lock()
	p.backoff, p.retryAt = 0, time.Time{}
	p.mu.Unlock()
	return &tcpConn{nc: nc, born: now, lastUsed: now}, nil
}

// put gives c back: to the idle stack when it is healthy and young enough, else closed.
func (p *tcpPool) put(c *tcpConn, ok bool) {
	now := time.Now()
	c.lastUsed = now
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busyGauge.Dec()
	if !ok || p.closed || now.Sub(c.born) >= p.cfg.MaxAge {
		p.open--
		c.nc.Close()
	} else {
		p.idle = append(p.idle, c)
		p.idleGauge.Inc()
	}
	p.signalLocked()
}

// signalLocked wakes every get waiting for a connection; it holds p.mu.
func (p *tcpPool) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// reap closes idle connections past their idle time or age.
func (p *tcpPool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	keep := p.idle[:0]
	for _, c := range p.idle {
		if p.expired(c, now) {
			p.open--
			p.idleGauge.Dec()
			c.nc.Close()
			continue
		}
		keep = append(keep, c)
	}
	clear(p.idle[len(keep):])
	p.idle = keep
}

// close closes the idle connections now; busy ones close when their query ends.
func (p *tcpPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.idle {
		p.open--
		p.idleGauge.Dec()
		c.nc.Close()
	}
	p.idle = nil
	p.signalLocked()
}

// exchange writes q with a fresh ID and reads its answer, within ctx's deadline.
func (c *tcpConn) exchange(ctx context.Context, q []byte) ([]byte, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	c.nc.SetDeadline(deadline)
	// The caller giving up early (shutdown) ends the read too.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()

	id := uint16(rand.Uint32())
	c.buf = binary.BigEndian.AppendUint16(c.buf[:0], uint16(len(q)))
	c.buf = append(c.buf, q...)
	binary.BigEndian.PutUint16(c.buf[2:], id)
	if _, err := c.nc.Write(c.buf); err != nil {
		return nil, connError(ctx, err)
	}
	for {
		resp, err := c.readFrame()
		if err != nil {
			return nil, connError(ctx, err)
		}
		if len(resp) >= 12 && binary.BigEndian.Uint16(resp) == id {
			c.used++
			return resp, nil
		}
		// Not ours (a server answering something we did not ask): keep reading.
	}
}

// readFrame reads one length-prefixed message, most often with a single read (the answer
// arrives whole): the connection's buffer keeps what came beyond it.
func (c *tcpConn) readFrame() ([]byte, error) {
	for {
		if len(c.rbuf) >= 2 {
			if n := 2 + int(binary.BigEndian.Uint16(c.rbuf)); len(c.rbuf) >= n {
				msg := append([]byte(nil), c.rbuf[2:n]...)
				c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[n:])]
				return msg, nil
			}
		}
		if len(c.rbuf) == cap(c.rbuf) {
			c.rbuf = append(make([]byte, 0, max(2*cap(c.rbuf), 2048)), c.rbuf...)
		}
		n, err := c.nc.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if err != nil && n == 0 {
			if errors.Is(err, io.EOF) && len(c.rbuf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// connError turns an I/O error into what the caller learns: the context's error when it ended
// first, errConnClosed when the upstream closed or reset the connection.
func connError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return context.DeadlineExceeded
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
		return fmt.Errorf("%w: %v", errConnClosed, err)
	}
	return err
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
