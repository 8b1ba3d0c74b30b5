package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	_ "github.com/clusterdns/clusterdns/plugin/pipelining"
	_ "github.com/coredns/coredns/plugin/forward"
)

// slowUpstream answers every A query with 192.0.2.99 after delay, over TCP (forward asks over
// the protocol the query came by).
func slowUpstream(t *testing.T, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		time.Sleep(delay)
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IP{192, 0, 2, 99}}}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pipelined sends a slow query and then five fast ones on one TCP connection, and returns the
// ids of the answers in the order they came (the slow query has id 1).
func pipelined(t *testing.T, addr string) []uint16 {
	t.Helper()
	// The listeners open as the block's server starts serving, just after startup returns.
	var c net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var batch []byte
	for id := uint16(1); id <= 6; id++ {
		name := "fast.test."
		if id == 1 {
			name = "x.slow.test."
		}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.Id = id
		b, _ := m.Pack()
		batch = append(append(batch, byte(len(b)>>8), byte(len(b))), b...)
	}
	if _, err := c.Write(batch); err != nil {
		t.Fatal(err)
	}
	var ids []uint16
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 6 {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatalf("after answers %v: %v", ids, err)
		}
		b := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil || len(m.Answer) != 1 {
			t.Fatalf("answer %v: %v", m, err)
		}
		ids = append(ids, m.Id)
	}
	return ids
}

// On pipelining's address the queries behind a slow one on a TCP connection are answered first;
// on the block's own address (CoreDNS's TCP server) they wait for it.
func TestPipelining(t *testing.T) {
	slow := slowUpstream(t, 500*time.Millisecond)
	corefile := func(port int, extra string) string {
		return fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    %s
    template IN A fast.test {
        answer "{{ .Name }} 5 IN A 192.0.2.1"
    }
    forward slow.test %s
}
`, port, extra, slow)
	}
	port, pport := freeTCPPort(t), freeTCPPort(t)
	startServer(t, corefile(port, fmt.Sprintf("pipelining 127.0.0.1:%d", pport)))
	ids := pipelined(t, fmt.Sprintf("127.0.0.1:%d", pport))
	if ids[len(ids)-1] != 1 {
		t.Errorf("with pipelining: answers in order %v, want the slow query (1) last", ids)
	}
	t.Logf("with pipelining: answers in order %v", ids)

	// The block's own address is CoreDNS's TCP server, as without the plugin.
	if ids := pipelined(t, fmt.Sprintf("127.0.0.1:%d", port)); ids[0] != 1 {
		t.Errorf("CoreDNS's own TCP server answered %v: it no longer answers in order (this test's premise)", ids)
	} else {
		t.Logf("without it (CoreDNS's TCP server): answers in order %v", ids)
	}
}
