package packetio

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// StreamServer answers the DNS queries of TCP connections concurrently and in the order their
// answers are ready (RFC 7766 §6.2.1.1), where a miekg/dns server, and so CoreDNS's own, answers
// one connection's queries one at a time: a query that waits on a slow upstream holds back every
// query pipelined behind it on the same connection.
//
// Each connection has one reader, which hands every query to a goroutine of its own, at most
// MaxInFlight per connection: past that the reader stops reading, so a client that sends faster
// than it is answered is slowed by TCP itself. Answers are written whole, one at a time, under
// the connection's lock. Requests are screened as a miekg/dns server screens them
// (dns.DefaultMsgAcceptFunc): FORMERR or NOTIMP for what it rejects, nothing for responses and
// for a message too short to have a header.
//
// Timeouts are CoreDNS's: the first query must come within ReadTimeout of the connection, each
// later one within IdleTimeout of the previous; an answer that cannot be written within
// WriteTimeout closes the connection. When the reader stops (the client closed, a timeout, a
// listener of a StreamListener draining) the connection closes once the queries it read are
// answered.
type StreamServer struct {
	Handler      dns.Handler
	MaxInFlight  int // per connection; 0 means DefaultMaxInFlight
	ReadTimeout  time.Duration
	IdleTimeout  time.Duration
	WriteTimeout time.Duration
	// Limits, when set, gives each new connection its timeouts in place of the three above, and
	// the most queries it reads (0 or less: no bound), as CoreDNS's server has them now (a door
	// follows its server through reloads and the timeouts plugin).
	Limits func() (read, idle, write time.Duration, maxQueries int)
}

// DefaultMaxInFlight is the most queries of one connection answered at once by default.
const DefaultMaxInFlight = 128

// Serve accepts connections until l is closed, and serves each on a goroutine of its own. An
// error that passes (out of file descriptors, a connection aborted before it was accepted) is
// waited out, as a miekg/dns server does; on any other, l is closed (so that the kernel stops
// giving it connections) and the error returned.
func (s *StreamServer) Serve(l net.Listener) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if passing(err) {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			l.Close()
			return err
		}
		backoff = 5 * time.Millisecond
		go s.serveConn(c)
	}
}

// passing reports whether an accept error is one to wait out.
func passing(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR)
}

// streamConn's state shared by its reader and the goroutines answering.
type streamWriterConn struct {
	c       net.Conn
	timeout time.Duration
	mu      sync.Mutex
	broken  bool
	buf     []byte
}

func (s *StreamServer) serveConn(c net.Conn) {
	max := s.MaxInFlight
	if max <= 0 {
		max = DefaultMaxInFlight
	}
	read, idle, write, maxQueries := s.ReadTimeout, s.IdleTimeout, s.WriteTimeout, 0
	if s.Limits != nil {
		read, idle, write, maxQueries = s.Limits()
	}
	wc := &streamWriterConn{c: c, timeout: write}
	slots := make(chan struct{}, max)
	var answering sync.WaitGroup
	var lenBuf [2]byte
	wait := read
	for q := 0; maxQueries <= 0 || q < maxQueries; q++ {
		if wait > 0 {
			c.SetReadDeadline(time.Now().Add(wait))
		}
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			break
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			break
		}
		wait = idle
		slots <- struct{}{}
		answering.Add(1)
		go func() {
			defer func() {
				<-slots
				answering.Done()
			}()
			s.answer(wc, msg)
		}()
	}
	answering.Wait()
	c.Close()
}

// answer screens one query, as a miekg/dns server does, and hands it to the handler.
func (s *StreamServer) answer(wc *streamWriterConn, msg []byte) {
	if len(msg) < 12 {
		return // no header: nothing to answer (any reply could be used to amplify)
	}
	h := dns.Header{Id: binary.BigEndian.Uint16(msg), Bits: binary.BigEndian.Uint16(msg[2:]),
		Qdcount: binary.BigEndian.Uint16(msg[4:]), Ancount: binary.BigEndian.Uint16(msg[6:]),
		Nscount: binary.BigEndian.Uint16(msg[8:]), Arcount: binary.BigEndian.Uint16(msg[10:])}
	w := &streamResponse{conn: wc}
	req := new(dns.Msg)
	action := dns.DefaultMsgAcceptFunc(h)
	if action == dns.MsgAccept {
		if err := req.Unpack(msg); err == nil {
			s.Handler.ServeDNS(w, req)
			return
		}
		action = dns.MsgReject
	}
	if action == dns.MsgIgnore {
		return
	}
	// FORMERR or NOTIMP with the header (and the question, when it unpacked) of the request: its
	// ID, opcode, RD and CD, as a miekg/dns server replies.
	req.Id, req.Opcode = h.Id, int(h.Bits>>11)&0xF
	req.RecursionDesired, req.CheckingDisabled = h.Bits&(1<<8) != 0, h.Bits&(1<<4) != 0
	opcode := req.Opcode
	req.SetRcodeFormatError(req)
	req.Zero = false
	if action == dns.MsgRejectNotImplemented {
		req.Opcode, req.Rcode = opcode, dns.RcodeNotImplemented
	}
	req.Ns, req.Answer, req.Extra = nil, nil, nil
	w.WriteMsg(req)
}

// streamResponse is the dns.ResponseWriter of one query of a connection.
type streamResponse struct {
	conn *streamWriterConn
}

func (w *streamResponse) LocalAddr() net.Addr  { return w.conn.c.LocalAddr() }
func (w *streamResponse) RemoteAddr() net.Addr { return w.conn.c.RemoteAddr() }
func (w *streamResponse) TsigStatus() error    { return nil }
func (w *streamResponse) TsigTimersOnly(bool)  {}

// Hijack is not offered: other queries of the connection are being answered on it.
func (w *streamResponse) Hijack() {}

// Network says the answer goes over TCP (for CoreDNS's request.Request).
func (w *streamResponse) Network() string { return "tcp" }

// Close closes the whole connection (as a miekg/dns TCP writer's Close does); queries of it not
// yet answered are not.
func (w *streamResponse) Close() error { return w.conn.c.Close() }

func (w *streamResponse) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Write sends one whole message, length first, in one write.
func (w *streamResponse) Write(b []byte) (int, error) {
	if len(b) > dns.MaxMsgSize {
		return 0, errors.New("packetio: message too large for TCP")
	}
	wc := w.conn
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.broken {
		return 0, net.ErrClosed
	}
	wc.buf = append(binary.BigEndian.AppendUint16(wc.buf[:0], uint16(len(b))), b...)
	if wc.timeout > 0 {
		wc.c.SetWriteDeadline(time.Now().Add(wc.timeout))
	}
	if _, err := wc.c.Write(wc.buf); err != nil {
		// A partial write leaves the stream out of frame: nothing more can be sent on it.
		wc.broken = true
		wc.c.Close()
		return 0, err
	}
	return len(b), nil
}
