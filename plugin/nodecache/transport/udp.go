package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
)

// udpSockets is a small fixed set of connected UDP sockets to one upstream, shared by every
// query to it: a query takes a random ID not in use on its socket, and the socket's reader hands
// each answer to the query with its ID and question. No socket or goroutine per query.
type udpSockets struct {
	addr string

	once  sync.Once
	err   error
	socks []*udpSocket
	next  atomic.Uint32
}

// udpSocketCount sockets per upstream spread the source ports (and the upstream's SO_REUSEPORT
// hash) without a socket per query.
const udpSocketCount = 4

// maxPendingPerSocket bounds the queries waiting on one socket (IDs are 16 bits; a random free
// one is found quickly while well below that).
const maxPendingPerSocket = 8192

type udpSocket struct {
	conn *net.UDPConn

	mu      sync.Mutex
	pending map[uint16]*udpWait
	closed  bool
}

type udpWait struct {
	query []byte
	ch    chan []byte // gets the answer; buffered
}

func newUDPSockets(addr string) *udpSockets { return &udpSockets{addr: addr} }

// open dials the sockets once, on first use.
func (u *udpSockets) open() error {
	u.once.Do(func() {
		raddr, err := net.ResolveUDPAddr("udp", u.addr)
		if err != nil {
			u.err = err
			return
		}
		for range udpSocketCount {
			c, err := net.DialUDP("udp", nil, raddr)
			if err != nil {
				u.err = err
				return
			}
			s := &udpSocket{conn: c, pending: map[uint16]*udpWait{}}
			u.socks = append(u.socks, s)
			go s.read()
		}
	})
	return u.err
}

// exchange sends q (its ID replaced) and waits for its answer until ctx ends.
func (u *udpSockets) exchange(ctx context.Context, q []byte) ([]byte, error) {
	if err := u.open(); err != nil {
		return nil, err
	}
	s := u.socks[u.next.Add(1)%uint32(len(u.socks))]
	out := append([]byte(nil), q...)
	w := &udpWait{query: out, ch: make(chan []byte, 1)}
	id, err := s.register(w)
	if err != nil {
		return nil, err
	}
	defer s.unregister(id)
	binary.BigEndian.PutUint16(out, id)
	if _, err := s.conn.Write(out); err != nil {
		return nil, err
	}
	select {
	case resp := <-w.ch:
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *udpSocket) register(w *udpWait) (uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if len(s.pending) >= maxPendingPerSocket {
		return 0, ErrPoolFull
	}
	for {
		id := uint16(rand.Uint32())
		if s.pending[id] == nil {
			s.pending[id] = w
			return id, nil
		}
	}
}

func (s *udpSocket) unregister(id uint16) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// read hands each datagram to the query with its ID when it answers that query's question;
// anything else (late answers, spoofing attempts) is dropped.
func (s *udpSocket) read() {
	buf := make([]byte, 65535)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors on a connected socket (port unreachable) come back as read errors:
			// the queries time out and count against the upstream; keep reading.
			time.Sleep(time.Millisecond)
			continue
		}
		if n < 12 {
			continue
		}
		id := binary.BigEndian.Uint16(buf)
		s.mu.Lock()
		w := s.pending[id]
		if w != nil && dnswire.Answers(buf[:n], w.query) {
			delete(s.pending, id)
		} else {
			w = nil
		}
		s.mu.Unlock()
		if w != nil {
			w.ch <- append([]byte(nil), buf[:n]...)
		}
	}
}

func (u *udpSockets) close() {
	u.once.Do(func() { u.err = ErrClosed }) // no opening after close: refuse, do not divide by zero sockets
	for _, s := range u.socks {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.conn.Close()
	}
}
