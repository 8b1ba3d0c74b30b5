package packetio

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// serveEcho opens a listener on addr whose handler answers each datagram with name.
func serveEcho(t *testing.T, addr, name string, inFlight *atomic.Int64) *Listener {
	t.Helper()
	l, err := Listen(addr, inFlight)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	l.Serve(func(s *Socket, p []byte, from net.Addr, buf []byte) []byte {
		if string(p) == "later" { // answered through the socket's sender
			s.Hold()
			bp := Buffers.Get().(*[]byte)
			*bp = append((*bp)[:0], name...)
			go s.Send(bp, from)
			return nil
		}
		return append(buf, name...)
	})
	return l
}

func ask(t *testing.T, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("udp", addr) // a new source port each time: another SO_REUSEPORT hash
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no answer to %q: %v", msg, err)
	}
	return string(b[:n])
}

func freeAddr(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// Answers come back at once and through the sender; the in-flight count returns to zero.
func TestServe(t *testing.T) {
	var inFlight atomic.Int64
	addr := freeAddr(t)
	l := serveEcho(t, addr, "a", &inFlight)
	if l.Sockets() < 1 {
		t.Fatal("no sockets")
	}
	for _, msg := range []string{"now", "later"} {
		if got := ask(t, addr, msg); got != "a" {
			t.Fatalf("%s: got %q", msg, got)
		}
	}
	deadline := time.Now().Add(time.Second)
	for inFlight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := inFlight.Load(); n != 0 {
		t.Fatalf("in flight after every answer: %d", n)
	}
}

// After Detach, every new datagram goes to the other listener of the address (a handover).
func TestDetachHandsOver(t *testing.T) {
	var inFlight atomic.Int64
	addr := freeAddr(t)
	old := serveEcho(t, addr, "old", &inFlight)
	serveEcho(t, addr, "new", &inFlight)
	if err := old.Detach(); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if got := ask(t, addr, "now"); got != "new" {
			t.Fatalf("a detached listener got a new datagram (%q)", got)
		}
	}
	if q := old.Queued(); q != 0 {
		t.Fatalf("queued on the detached sockets: %d", q)
	}
}
