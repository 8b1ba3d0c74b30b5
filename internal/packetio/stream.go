package packetio

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin/pkg/reuseport"
	"golang.org/x/sys/unix"
)

// StreamListener is the TCP side of an address: a listener per CPU in the address's SO_REUSEPORT
// group, each with SO_INCOMING_CPU set (so that, from Linux 6.1, the kernel gives a listener
// without it, such as CoreDNS's own, no connection while these are open), and the connections
// they accepted.
//
// Drain is the handover: the listeners close, so the kernel moves the connections still in their
// accept queues to another listener of the group (with net.ipv4.tcp_migrate_req), while the
// connections already accepted stay and are served until they fall quiet: each one's next read
// may wait only Quiet, so a connection closes once its client has sent nothing for that long
// (a stub resolver's connection, one query and its answer, closes at once). Open counts them.
type StreamListener struct {
	Addr  string
	lns   []net.Listener
	open  atomic.Int64
	quiet atomic.Int64 // after Drain: the longest a read may wait, in nanoseconds

	mu    sync.Mutex
	conns map[*streamConn]struct{}
}

// ListenStream opens the TCP listeners of addr ("ip:port").
func ListenStream(addr string) (*StreamListener, error) {
	l := &StreamListener{Addr: addr, conns: map[*streamConn]struct{}{}}
	for _, cpu := range cpus() {
		ln, err := reuseport.Listen("tcp", addr)
		if err != nil {
			for _, x := range l.lns {
				x.Close()
			}
			return nil, err
		}
		if tl, ok := ln.(*net.TCPListener); ok {
			if rc, err := tl.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_INCOMING_CPU, cpu) })
			}
		}
		l.lns = append(l.lns, &streamListener{Listener: ln, sl: l})
	}
	return l, nil
}

// Listeners are the listeners, to be served (each by its own accept loop, such as a miekg/dns
// server's); they count and track what they accept.
func (l *StreamListener) Listeners() []net.Listener { return l.lns }

// Open is the number of accepted connections not yet closed.
func (l *StreamListener) Open() int64 { return l.open.Load() }

// Drain closes the listeners and makes every accepted connection close once it has been quiet
// for quiet (see StreamListener).
func (l *StreamListener) Drain(quiet time.Duration) {
	l.quiet.Store(int64(quiet))
	for _, ln := range l.lns {
		ln.(*streamListener).Listener.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Conn.SetReadDeadline(time.Now().Add(quiet))
	}
}

// Close closes the listeners and every connection still open.
func (l *StreamListener) Close() {
	for _, ln := range l.lns {
		ln.(*streamListener).Listener.Close()
	}
	l.mu.Lock()
	conns := make([]*streamConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type streamListener struct {
	net.Listener
	sl *StreamListener
}

func (s *streamListener) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &streamConn{Conn: c, sl: s.sl}
	s.sl.open.Add(1)
	s.sl.mu.Lock()
	s.sl.conns[sc] = struct{}{}
	s.sl.mu.Unlock()
	if q := s.sl.quiet.Load(); q > 0 {
		c.SetReadDeadline(time.Now().Add(time.Duration(q)))
	}
	return sc, nil
}

// streamConn is an accepted connection; after Drain its read deadlines are at most Quiet away.
type streamConn struct {
	net.Conn
	sl   *StreamListener
	once sync.Once
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	if q := c.sl.quiet.Load(); q > 0 {
		if limit := time.Now().Add(time.Duration(q)); t.IsZero() || t.After(limit) {
			t = limit
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *streamConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *streamConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.sl.open.Add(-1)
		c.sl.mu.Lock()
		delete(c.sl.conns, c)
		c.sl.mu.Unlock()
	})
	return err
}
