package nodecache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tcpUpstream is an in-process miekg/dns TCP server that counts connections and queries.
type tcpUpstream struct {
	addr    string
	conns   atomic.Int32
	queries atomic.Int32
	srv     *dns.Server
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startTCPUpstream(t *testing.T, idle time.Duration, maxQueries int, handler func(w dns.ResponseWriter, r *dns.Msg)) *tcpUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &tcpUpstream{addr: l.Addr().String()}
	started := make(chan struct{})
	u.srv = &dns.Server{Listener: countingListener{l, &u.conns}, Net: "tcp", NotifyStartedFunc: func() { close(started) },
		IdleTimeout: func() time.Duration { return idle }, MaxTCPQueries: maxQueries,
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			u.queries.Add(1)
			handler(w, r)
		})}
	go u.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { u.srv.Shutdown() })
	return u
}

// answerA answers every A question with 10.0.0.1 and the question's name.
func answerA(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 10.0.0.1")
	m.Answer = append(m.Answer, rr)
	w.WriteMsg(m)
}

func packQuery(t *testing.T, name string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPoolPipelinesOnFewConnections(t *testing.T) {
	tests := []struct {
		name       string
		poolSize   int
		queries    int
		maxQueries int // per connection, then the upstream closes it
	}{
		{"one connection, many queries in flight", 1, 500, -1},
		{"two connections", 2, 1000, -1},
		{"upstream closes after 128 queries (miekg default)", 2, 1000, 128},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := startTCPUpstream(t, time.Minute, tc.maxQueries, answerA)
			p := newTCPPool(up.addr, tc.poolSize, time.Second)
			defer p.close()
			var wg sync.WaitGroup
			var wrong atomic.Int32
			for i := range tc.queries {
				wg.Go(func() {
					name := fmt.Sprintf("q%d.cluster.local.", i)
					q := packQuery(t, name)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					raw, err := p.exchange(ctx, q)
					if err != nil || !answers(raw, q) {
						if wrong.Add(1) == 1 {
							t.Logf("first failure: %v", err)
						}
					}
				})
			}
			wg.Wait()
			check(t, "queries answered with their own answer", wrong.Load(), int32(0))
			if tc.maxQueries < 0 {
				check(t, "queries seen upstream", up.queries.Load(), int32(tc.queries))
				check(t, "connections at most the pool size", up.conns.Load() <= int32(tc.poolSize), true)
			}
		})
	}
}

func TestPoolFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T) string // returns the upstream address
		wantErr func(error) bool
	}{
		{"upstream closes idle connections: reconnect", func(t *testing.T) string {
			return startTCPUpstream(t, 50*time.Millisecond, -1, answerA).addr
		}, func(err error) bool { return err == nil }},
		{"upstream never answers: timeout", func(t *testing.T) string {
			return startTCPUpstream(t, time.Minute, -1, func(dns.ResponseWriter, *dns.Msg) { time.Sleep(time.Second) }).addr
		}, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
		{"nothing listens: dial error, then backoff", func(t *testing.T) string {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := l.Addr().String()
			l.Close()
			return addr
		}, func(err error) bool { return errors.Is(err, errBackoff) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTCPPool(tc.setup(t), 1, 200*time.Millisecond)
			defer p.close()
			var err error
			for i := range 3 {
				q := packQuery(t, fmt.Sprintf("q%d.cluster.local.", i))
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_, err = p.exchange(ctx, q)
				cancel()
				time.Sleep(100 * time.Millisecond) // past the idle timeout of the first case
			}
			check(t, fmt.Sprintf("last error (%v) as expected", err), tc.wantErr(err), true)
		})
	}
}

func TestUpstreamGroupFailsOver(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, answerA)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	g := newUpstreamGroup([]upstream{{transport: "tcp", addrs: []string{dead}}, {transport: "tcp", addrs: []string{up.addr}}}, 500*time.Millisecond)
	defer g.close()
	for i := range 4 {
		raw, err := g.resolve(context.Background(), dns.Question{Name: "web.cluster.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false)
		m := new(dns.Msg)
		check(t, fmt.Sprintf("query %d answered (%v)", i, err), err == nil && m.Unpack(raw) == nil && len(m.Answer) == 1, true)
	}
	check(t, "dead upstream marked down", g.lines[0][0].healthy(), false)
	check(t, "live upstream up", g.lines[1][0].healthy(), true)
}

// The query sent upstream is built in wire form: the bytes miekg/dns packs for the same question,
// but for the ID (the transport sets it).
func TestUpstreamQueryMatchesMiekg(t *testing.T) {
	for _, tc := range []struct {
		name   string
		qtype  uint16
		do, cd bool
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, false, false},
		{"Mixed.Case.example.", dns.TypeAAAA, true, false},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, true, true},
		{".", dns.TypeNS, false, true},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, tc.qtype)
		m.Id = 0
		m.CheckingDisabled = tc.cd
		m.SetEdns0(ednsSize, tc.do)
		want, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var name [256]byte
		end, _ := dns.PackDomainName(tc.name, name[:], 0, nil, false)
		if got := upstreamQuery(name[:end], tc.qtype, dns.ClassINET, tc.do, tc.cd); !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x", tc.name, got, want)
		}
	}
}

// send (the fast path's way) calls back exactly once: with the answer, after its timeout, or
// when the connection dies.
func TestPipeConnSend(t *testing.T) {
	tests := []struct {
		name    string
		handler func(w dns.ResponseWriter, r *dns.Msg)
		kill    bool // the upstream goes away with the queries in flight
		wantErr func(error) bool
	}{
		{"answered", answerA, false, func(err error) bool { return err == nil }},
		// The first query to time out closes the stalled connection, which fails the others.
		{"never answered: timeout", func(dns.ResponseWriter, *dns.Msg) { time.Sleep(time.Second) }, false,
			func(err error) bool { return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errConnClosed) }},
		{"connection closed in flight", func(dns.ResponseWriter, *dns.Msg) { time.Sleep(time.Second) }, true,
			func(err error) bool { return errors.Is(err, errConnClosed) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := startTCPUpstream(t, time.Minute, -1, tc.handler)
			nc, err := net.Dial("tcp", up.addr)
			if err != nil {
				t.Fatal(err)
			}
			c := newPipeConn(nc, time.Second)
			defer c.close(errPoolClosed)
			const n = 50
			results := make(chan error, 2*n)
			for i := range n {
				q := packQuery(t, fmt.Sprintf("q%d.cluster.local.", i))
				c.send(q, 300*time.Millisecond, func(resp []byte, err error) {
					if err == nil && !answers(resp, q) {
						err = errNotAnswer
					}
					results <- err
				})
			}
			if tc.kill {
				time.Sleep(50 * time.Millisecond)
				nc.(*net.TCPConn).CloseRead() // what a reset looks like to the reader
			}
			for range n {
				select {
				case err := <-results:
					if !tc.wantErr(err) {
						t.Fatalf("callback error %v", err)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("a callback never came")
				}
			}
			select {
			case err := <-results:
				t.Fatalf("a second callback (%v)", err)
			case <-time.After(400 * time.Millisecond):
			}
		})
	}
}
