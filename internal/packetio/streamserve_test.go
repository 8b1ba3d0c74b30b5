package packetio

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func serveStream(t *testing.T, s *StreamServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func frame(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

func query(id uint16, name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	return m
}

func readAnswer(t *testing.T, c net.Conn) *dns.Msg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatalf("read: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// answerAfter answers every query with one A record; a name in slow waits for its channel first.
func answerAfter(slow map[string]chan struct{}) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		if ch := slow[r.Question[0].Name]; ch != nil {
			<-ch
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IP{192, 0, 2, 1}}}
		w.WriteMsg(m)
	}
}

// Queries pipelined behind a slow one are answered before it: out of order, each answer whole.
func TestStreamServerAnswersOutOfOrder(t *testing.T) {
	release := make(chan struct{})
	addr := serveStream(t, &StreamServer{Handler: answerAfter(map[string]chan struct{}{"slow.": release})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var batch []byte
	batch = append(batch, frame(t, query(1, "slow."))...)
	for id := uint16(2); id <= 6; id++ {
		batch = append(batch, frame(t, query(id, "fast."))...)
	}
	if _, err := c.Write(batch); err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for range 5 {
		m := readAnswer(t, c)
		if m.Id == 1 {
			t.Fatal("the slow query was answered before the queries behind it")
		}
		if seen[m.Id] || len(m.Answer) != 1 {
			t.Fatalf("answer %d twice or malformed: %v", m.Id, m)
		}
		seen[m.Id] = true
	}
	close(release)
	if m := readAnswer(t, c); m.Id != 1 || m.Answer[0].Header().Name != "slow." {
		t.Fatalf("last answer: %v", m)
	}
}

// At most MaxInFlight queries of a connection are answered at once; the rest wait (unread).
func TestStreamServerBoundsInFlight(t *testing.T) {
	var now, peak atomic.Int32
	release := make(chan struct{})
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n := now.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		now.Add(-1)
		answerAfter(nil)(w, r)
	})
	addr := serveStream(t, &StreamServer{Handler: h, MaxInFlight: 2})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var batch []byte
	for id := uint16(1); id <= 5; id++ {
		batch = append(batch, frame(t, query(id, "q."))...)
	}
	c.Write(batch)
	for deadline := time.Now().Add(5 * time.Second); now.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a third would have started by now
	if got := now.Load(); got != 2 {
		t.Fatalf("%d queries answered at once, want 2", got)
	}
	close(release)
	for range 5 {
		readAnswer(t, c)
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak %d queries at once, want 2", p)
	}
}

// What a miekg/dns server rejects is rejected alike; the connection goes on.
func TestStreamServerScreensRequests(t *testing.T) {
	addr := serveStream(t, &StreamServer{Handler: answerAfter(nil)})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	update := query(7, "example.")
	update.Opcode = dns.OpcodeUpdate
	update.RecursionDesired, update.CheckingDisabled = true, true
	response := query(8, "example.")
	response.Response = true
	two := query(9, "a.")
	two.Question = append(two.Question, dns.Question{Name: "b.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	var batch []byte
	batch = append(batch, 0, 5, 1, 2, 3, 4, 5) // shorter than a header: dropped
	batch = append(batch, frame(t, response)...)
	batch = append(batch, frame(t, update)...)
	batch = append(batch, frame(t, two)...)
	batch = append(batch, frame(t, query(10, "ok."))...)
	c.Write(batch)
	got := map[uint16]int{}
	for range 3 {
		m := readAnswer(t, c)
		got[m.Id] = m.Rcode
		if m.Id == 7 && (!m.RecursionDesired || !m.CheckingDisabled || !m.Response || m.Opcode != dns.OpcodeUpdate) {
			t.Errorf("NOTIMP reply does not echo the request's header: %v", m.MsgHdr)
		}
	}
	if got[7] != dns.RcodeNotImplemented || got[9] != dns.RcodeFormatError || got[10] != dns.RcodeSuccess {
		t.Fatalf("rcodes by id: %v (want 7 NOTIMP, 9 FORMERR, 10 NOERROR; 8, a response, unanswered)", got)
	}
	if _, ok := got[8]; ok {
		t.Fatal("a response was answered")
	}
}

// A connection that brings no query within ReadTimeout is closed; one whose client closes its
// side gets the answers of what it sent first.
func TestStreamServerTimeoutsAndHalfClose(t *testing.T) {
	release := make(chan struct{})
	addr := serveStream(t, &StreamServer{Handler: answerAfter(map[string]chan struct{}{"slow.": release}), ReadTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want EOF", n, err)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(frame(t, query(1, "slow.")))
	c.(*net.TCPConn).CloseWrite()
	var once sync.Once
	time.AfterFunc(50*time.Millisecond, func() { once.Do(func() { close(release) }) })
	if m := readAnswer(t, c); m.Id != 1 {
		t.Fatalf("answer %v", m)
	}
}

// FuzzStreamServerAnswer: whatever one TCP frame holds, the server answers it or drops it, and
// whatever it writes is one whole frame of a DNS message; never a panic.
func FuzzStreamServerAnswer(f *testing.F) {
	q := query(1, "example.")
	b, _ := q.Pack()
	f.Add(b)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add(append([]byte{0, 2, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0}, b[12:]...))
	f.Fuzz(func(t *testing.T, msg []byte) {
		client, server := net.Pipe()
		defer client.Close()
		got := make(chan []byte, 1)
		go func() {
			all, _ := io.ReadAll(client)
			got <- all
		}()
		// As CoreDNS's server: a message without a question (miekg/dns unpacks a header that
		// claims one and holds none) gets SERVFAIL.
		h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			if len(r.Question) == 0 {
				m := new(dns.Msg)
				m.SetRcode(r, dns.RcodeServerFailure)
				w.WriteMsg(m)
				return
			}
			answerAfter(nil)(w, r)
		})
		s := &StreamServer{Handler: h}
		s.answer(&streamWriterConn{c: server}, msg)
		server.Close()
		out := <-got
		if len(out) == 0 {
			return
		}
		if len(out) < 2 || int(binary.BigEndian.Uint16(out)) != len(out)-2 {
			t.Fatalf("not one whole frame: %x", out)
		}
		if err := new(dns.Msg).Unpack(out[2:]); err != nil {
			t.Fatalf("the answer does not unpack: %v", err)
		}
	})
}

// flakyListener fails its first accepts with EMFILE, then hands out real connections.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// Out of file descriptors for a while, the server keeps accepting once it has them again; any
// other accept error closes the listener.
func TestStreamServerOutlivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	done := make(chan error, 1)
	go func() { done <- (&StreamServer{Handler: answerAfter(nil)}).Serve(fl) }()
	t.Cleanup(func() { ln.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(frame(t, query(3, "after.")))
	if m := readAnswer(t, c); m.Id != 3 {
		t.Fatalf("answer %v", m)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned after EMFILE: %v", err)
	default:
	}
}
