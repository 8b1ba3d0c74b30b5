// Package packetio is batched UDP packet I/O for a DNS server that owns its listening sockets.
//
// For one address it opens a socket per CPU in the address's SO_REUSEPORT group, each with
// SO_INCOMING_CPU set to its CPU: from Linux 6.1 the kernel gives a datagram to the socket of the
// CPU that received it, and to a socket without that option (such as the socket CoreDNS's own
// server binds to the same address) only when no socket matches. Each socket is read in batches
// (recvmmsg); a handler answers what it can at once, and those answers leave in one sendmmsg;
// answers that come later are queued on the socket and written in batches by a sender. Both
// calls are made as raw system calls on the non-blocking socket (mmsg.go), which keeps an idle
// server's wakeup to one thread per datagram, and a reader stays inside one RawConn Read, so a
// batch shorter than asked for ends in a wait, not in a second recvmmsg that says EAGAIN.
//
// Detach takes the sockets out of the group without closing them (they are connected to a
// port nothing sends from; the kernel skips connected sockets when it picks one for a new
// datagram), so another process bound to the same address gets every new datagram while this
// one still reads what was queued: the zero-loss handover of a rolling update.
//
// ListenStream does the same for TCP (stream.go): a listener per CPU with SO_INCOMING_CPU, and a
// drain that closes the listeners and lets each accepted connection finish.
package packetio

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coredns/coredns/plugin/pkg/reuseport"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Batch is the number of datagrams read (and answers written) per system call.
const Batch = 32

// ReceiveBuffer is the receive buffer asked for on every socket: a burst of queries from many
// pods at once is queued, not dropped. The kernel's default (~208 KiB) holds about 200 datagrams.
const ReceiveBuffer = 4 << 20

// maxDatagram is the largest datagram read whole; DNS queries are far smaller.
const maxDatagram = 4096

// maxSockets bounds the sockets of one address on very large machines.
const maxSockets = 64

// Handler answers one datagram. p and from are valid only during the call. It returns the
// answer to write now (built in buf, which it may replace with a larger one), or nil when it
// answers later through Socket.Send or not at all. It runs inside the socket's read (a RawConn
// Read), so it must not read the socket itself; it may write (Send).
type Handler func(s *Socket, p []byte, from net.Addr, buf []byte) []byte

// Listener is the sockets of one address.
type Listener struct {
	Addr  string
	socks []*Socket

	inFlight *atomic.Int64
	closed   chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// Socket is one of a Listener's sockets.
type Socket struct {
	conn   *net.UDPConn
	rc     syscall.RawConn
	v6     bool
	sender *sender
	ln     *Listener
}

// Listen opens the sockets of addr ("ip:port"). inFlight counts datagrams read and not yet
// answered, and answers queued and not yet written (a drain waits for it to reach zero).
func Listen(addr string, inFlight *atomic.Int64) (*Listener, error) {
	l := &Listener{Addr: addr, inFlight: inFlight, closed: make(chan struct{})}
	for _, cpu := range cpus() {
		pc, err := reuseport.ListenPacket("udp", addr)
		if err != nil {
			l.closeConns()
			return nil, err
		}
		c := pc.(*net.UDPConn)
		rc, err := c.SyscallConn()
		if err != nil {
			c.Close()
			l.closeConns()
			return nil, err
		}
		rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ReceiveBuffer) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, ReceiveBuffer)
			}
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_INCOMING_CPU, cpu)
		})
		s := &Socket{conn: c, rc: rc, v6: c.LocalAddr().(*net.UDPAddr).IP.To4() == nil, ln: l}
		s.sender = &sender{s: s, wake: make(chan struct{}, 1)}
		l.socks = append(l.socks, s)
	}
	return l, nil
}

// cpus are the CPU numbers of the machine (not only those this process may run on: any CPU may
// receive a datagram).
func cpus() []int {
	var list []int
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
			lo, hi, ok := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			z := a
			var err2 error
			if ok {
				z, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				list = nil
				break
			}
			for c := a; c <= z && len(list) < maxSockets; c++ {
				list = append(list, c)
			}
		}
	}
	if len(list) == 0 {
		for c := range min(runtime.NumCPU(), maxSockets) {
			list = append(list, c)
		}
	}
	return list
}

// Sockets is the number of sockets.
func (l *Listener) Sockets() int { return len(l.socks) }

// Serve starts a reader and a sender per socket; h answers every datagram.
func (l *Listener) Serve(h Handler) {
	for _, s := range l.socks {
		l.wg.Add(2)
		go func() {
			defer l.wg.Done()
			s.read(h)
		}()
		go func() {
			defer l.wg.Done()
			s.sender.run()
		}()
	}
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// WriteTo writes one answer through the first socket (a server handed datagrams by the handler
// writes its answers this way).
func (l *Listener) WriteTo(b []byte, addr net.Addr) (int, error) {
	return l.socks[0].conn.WriteTo(b, addr)
}

// LocalAddr is the address the sockets are bound to.
func (l *Listener) LocalAddr() net.Addr { return l.socks[0].conn.LocalAddr() }

// discardPort is where a detached socket is connected: nothing ever sends from it.
const discardPort = 9

// Detach takes the sockets out of their SO_REUSEPORT group; they keep reading what was queued.
func (l *Listener) Detach() error {
	var errs []error
	for _, s := range l.socks {
		rc, err := s.conn.SyscallConn()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rc.Control(func(fd uintptr) {
			sa, err := unix.Getsockname(int(fd))
			if err != nil {
				errs = append(errs, err)
				return
			}
			var peer unix.Sockaddr
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				peer = &unix.SockaddrInet4{Addr: a.Addr, Port: discardPort}
			case *unix.SockaddrInet6:
				peer = &unix.SockaddrInet6{Addr: a.Addr, Port: discardPort, ZoneId: a.ZoneId}
			}
			errs = append(errs, unix.Connect(int(fd), peer))
		})
	}
	return errors.Join(errs...)
}

// Queued is the number of bytes waiting to be read on the sockets.
func (l *Listener) Queued() int {
	total := 0
	for _, s := range l.socks {
		if rc, err := s.conn.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
					total += n
				}
			})
		}
	}
	return total
}

// Close stops the readers and senders and closes the sockets (what is queued is lost: drain
// first).
func (l *Listener) Close() {
	l.once.Do(func() {
		close(l.closed)
		l.closeConns()
		l.wg.Wait()
	})
}

func (l *Listener) closeConns() {
	for _, s := range l.socks {
		s.conn.Close()
	}
}

// read reads datagrams in batches and writes the answers the handler gave at once in one batch,
// until the listener closes.
func (s *Socket) read(h Handler) {
	bc := newMmsg(s.rc, s.v6)
	in := make([]ipv4.Message, Batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxDatagram)}
	}
	out := make([]ipv4.Message, Batch)
	outBufs := make([][]byte, Batch)
	for i := range out {
		out[i].Buffers = make([][]byte, 1)
		outBufs[i] = make([]byte, 0, 1232)
	}
	batch := func(n int) bool {
		s.ln.inFlight.Add(int64(n))
		k := 0
		for i := range n {
			m := &in[i]
			b := h(s, m.Buffers[0][:m.N], m.Addr, outBufs[k][:0])
			if b == nil {
				continue
			}
			if cap(b) > cap(outBufs[k]) {
				outBufs[k] = b[:0] // keep the larger buffer
			}
			out[k].Buffers[0], out[k].Addr = b, m.Addr
			k++
		}
		writeBatch(bc, out[:k])
		for i := range k {
			out[i].Addr = nil
		}
		s.ln.inFlight.Add(-int64(n))
		return s.ln.isClosed()
	}
	for {
		err := bc.Serve(in, batch)
		if s.ln.isClosed() || errors.Is(err, net.ErrClosed) {
			return
		}
		time.Sleep(10 * time.Millisecond) // a failed read (an ICMP error queued on the socket)
	}
}

// Hold counts an answer the handler will give later through Send (call it before the handler
// returns nil).
func (s *Socket) Hold() { s.ln.inFlight.Add(1) }

// Release ends a Hold that will not be answered through Send.
func (s *Socket) Release() { s.ln.inFlight.Add(-1) }

// Send queues the answer in *b for addr and ends a Hold; the socket owns b from now on and puts
// it back in Buffers once written.
func (s *Socket) Send(b *[]byte, addr net.Addr) { s.sender.send(b, addr) }

// Buffers are answer buffers for Send.
var Buffers = sync.Pool{New: func() any { b := make([]byte, 0, 1232); return &b }}

// sender writes a socket's queued answers in batches: whatever was queued while the previous
// batch went out leaves in the next sendmmsg.
type sender struct {
	s    *Socket
	wake chan struct{}

	mu    sync.Mutex
	queue []queued
}

type queued struct {
	b    *[]byte
	addr net.Addr
}

func (q *sender) send(b *[]byte, addr net.Addr) {
	q.mu.Lock()
	q.queue = append(q.queue, queued{b, addr})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *sender) run() {
	bc := newMmsg(q.s.rc, q.s.v6)
	msgs := make([]ipv4.Message, Batch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var spare []queued
	inFlight := q.s.ln.inFlight
	for {
		select {
		case <-q.wake:
		case <-q.s.ln.closed:
			q.mu.Lock()
			inFlight.Add(-int64(len(q.queue)))
			q.queue = nil
			q.mu.Unlock()
			return
		}
		q.mu.Lock()
		batch := q.queue
		q.queue = spare[:0]
		q.mu.Unlock()
		for rest := batch; len(rest) > 0; {
			k := min(len(rest), Batch)
			for i, a := range rest[:k] {
				msgs[i].Buffers[0], msgs[i].Addr = *a.b, a.addr
			}
			writeBatch(bc, msgs[:k])
			for i, a := range rest[:k] {
				Buffers.Put(a.b)
				msgs[i].Buffers[0], msgs[i].Addr = nil, nil
			}
			inFlight.Add(-int64(k))
			rest = rest[k:]
		}
		clear(batch)
		spare = batch[:0]
	}
}

// writeBatch writes every message, skipping one the kernel will not take (an unreachable client).
func writeBatch(bc *mmsg, msgs []ipv4.Message) {
	for sent := 0; sent < len(msgs); {
		w, err := bc.WriteBatch(msgs[sent:])
		if err != nil && w <= 0 {
			w = 1
		}
		sent += w
	}
}
