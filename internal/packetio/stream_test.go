package packetio

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// freeTCPAddr is a loopback address with a port nothing listens on.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A drain stops new connections at once, answers a connection it accepted that asks after the
// drain began, and closes every accepted connection once it has been quiet.
func TestStreamDrain(t *testing.T) {
	addr := freeTCPAddr(t)
	sl, err := ListenStream(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sl.Close)
	for _, l := range sl.Listeners() {
		srv := &dns.Server{Listener: l, Net: "tcp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			w.WriteMsg(m)
		}), IdleTimeout: func() time.Duration { return 10 * time.Second }}
		go srv.ActivateAndServe()
	}
	ask := func(c *dns.Conn) error {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if err := c.WriteMsg(m); err != nil {
			return err
		}
		_, err := c.ReadMsg()
		return err
	}
	var conns []*dns.Conn
	for range 2 {
		c, err := dns.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if got := sl.Open(); got != 2 {
		t.Fatalf("open connections before the drain: %d, want 2", got)
	}

	const quiet = 300 * time.Millisecond
	sl.Drain(quiet)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted after the drain began")
	}
	time.Sleep(quiet / 3)
	if err := ask(conns[1]); err != nil {
		t.Fatalf("a query on an accepted connection after the drain began: %v", err)
	}
	if got := sl.Open(); got != 2 {
		t.Errorf("open connections %v after the drain began: %d, want 2 (neither quiet for %v yet)", quiet/3, got, quiet)
	}
	deadline := time.Now().Add(3 * quiet)
	for sl.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := sl.Open(); got != 0 {
		t.Fatalf("open connections %v after the last query: %d, want 0", 3*quiet, got)
	}
}
