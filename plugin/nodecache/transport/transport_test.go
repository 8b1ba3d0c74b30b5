package transport

import (
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

// testServer is a miekg/dns server on 127.0.0.1 (TCP, UDP or both on one port).
type testServer struct {
	addr     string
	accepted atomic.Int32 // TCP connections accepted
	queries  atomic.Int32 // queries the handlers saw

	done     chan struct{} // closed at cleanup, before shutdown: releases handlers that hold a query
	doneOnce sync.Once
}

func newTestServer() *testServer { return &testServer{done: make(chan struct{})} }

func (s *testServer) release() { s.doneOnce.Do(func() { close(s.done) }) }

// countingListener counts the TCP connections accepted.
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

// run starts srv and shuts it down at cleanup, after releasing the held handlers.
func (s *testServer) run(t *testing.T, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("server: %v", err)
	}
	t.Cleanup(func() {
		s.release()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.ShutdownContext(ctx)
	})
}

func (s *testServer) counted(h dns.HandlerFunc) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		s.queries.Add(1)
		h(w, r)
	}
}

// serveTCP serves h on ln (a fresh port when ln is nil); tweak may set server options.
func (s *testServer) serveTCP(t *testing.T, ln net.Listener, h dns.HandlerFunc, tweak func(*dns.Server)) {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	s.addr = ln.Addr().String()
	srv := &dns.Server{Listener: countingListener{ln, &s.accepted}, Handler: s.counted(h)}
	if tweak != nil {
		tweak(srv)
	}
	s.run(t, srv)
}

// serveUDP serves h on pc (a fresh port when pc is nil).
func (s *testServer) serveUDP(t *testing.T, pc net.PacketConn, h dns.HandlerFunc) {
	t.Helper()
	if pc == nil {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	// A burst of queries must not overflow the default receive buffer while the server is slow
	// to read (-race, a busy machine): a datagram the kernel drops is not the transport's doing.
	if uc, ok := pc.(*net.UDPConn); ok {
		uc.SetReadBuffer(1 << 20)
	}
	s.addr = pc.LocalAddr().String()
	s.run(t, &dns.Server{PacketConn: pc, Handler: s.counted(h)})
}

// serveBoth serves udpH over UDP and tcpH over TCP on one port.
func (s *testServer) serveBoth(t *testing.T, udpH, tcpH dns.HandlerFunc) {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			continue // the port is taken for UDP: try another
		}
		s.serveTCP(t, ln, tcpH, nil)
		s.serveUDP(t, pc, udpH)
		return
	}
	t.Fatal("no port free for both TCP and UDP")
}

var answerIP = net.IPv4(192, 0, 2, 1)

// answer replies with one A record for the question.
func answer(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = append(m.Answer, &dns.A{
		Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A:   answerIP,
	})
	w.WriteMsg(m)
}

// query packs a question for name, type A.
func query(t testing.TB, name string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkAnswer reports what is wrong with resp as the answer of answer() to name.
func checkAnswer(resp []byte, name string) error {
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		return fmt.Errorf("unpack: %v", err)
	}
	if m.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
	}
	if len(m.Question) != 1 || m.Question[0].Name != name {
		return fmt.Errorf("question %v, want %s", m.Question, name)
	}
	if len(m.Answer) != 1 {
		return fmt.Errorf("%d answers, want 1: %v", len(m.Answer), m.Answer)
	}
	a, ok := m.Answer[0].(*dns.A)
	if !ok || a.Hdr.Name != name || !a.A.Equal(answerIP) {
		return fmt.Errorf("answer %v", m.Answer[0])
	}
	return nil
}

// exchangeAnswer asks name through g and checks that the answer is answer()'s for it.
func exchangeAnswer(ctx context.Context, t testing.TB, g *Group, name string) error {
	resp, err := g.Exchange(ctx, query(t, name))
	if err == nil {
		err = checkAnswer(resp, name)
	}
	return err
}

func testConfig() Config {
	return Config{Timeout: 2 * time.Second, MaxConcurrent: 16, MaxAge: 30 * time.Second,
		IdleTimeout: 5 * time.Second, HealthEvery: time.Hour}
}

// newGroup makes a group (health checks not started) closed at cleanup.
func newGroup(t *testing.T, cfg Config, lines ...Line) *Group {
	g := NewGroup(lines, cfg)
	t.Cleanup(g.Close)
	return g
}

func tcpLine(addrs ...string) Line { return Line{Proto: "tcp", Addrs: addrs} }
func udpLine(addrs ...string) Line { return Line{Proto: "udp", Addrs: addrs} }

// eventually polls cond for up to 2 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A query the upstream is slow to answer holds its own connection: the queries sent meanwhile go
// out on other connections and are answered at once; the slow one times out.
func TestSlowQueryDelaysNoOther(t *testing.T) {
	s := newTestServer()
	slowSeen := make(chan struct{})
	var mu sync.Mutex
	var slowFrom string
	fastFrom := map[string]int{}
	s.serveTCP(t, nil, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow." {
			mu.Lock()
			slowFrom = w.RemoteAddr().String()
			mu.Unlock()
			close(slowSeen)
			select {
			case <-time.After(3 * time.Second):
			case <-s.done:
			}
		} else {
			mu.Lock()
			fastFrom[w.RemoteAddr().String()]++
			mu.Unlock()
		}
		answer(w, r)
	}, nil)

	g := newGroup(t, Config{Timeout: time.Second, MaxConcurrent: 16, MaxAge: 30 * time.Second,
		IdleTimeout: 5 * time.Second, HealthEvery: time.Hour}, tcpLine(s.addr))

	type result struct {
		err     error
		elapsed time.Duration
	}
	slow := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := g.Exchange(context.Background(), query(t, "slow."))
		slow <- result{err, time.Since(start)}
	}()
	select {
	case <-slowSeen:
	case <-time.After(2 * time.Second):
		t.Fatal("the slow query never reached the server")
	}

	const fast = 30
	errs := make([]error, fast)
	var wg sync.WaitGroup
	for i := range fast {
		wg.Go(func() {
			name := fmt.Sprintf("fast%d.", i)
			err := exchangeAnswer(context.Background(), t, g, name)
			errs[i] = err
		})
	}
	wg.Wait()
	select {
	case r := <-slow:
		t.Errorf("the slow query ended (%v after %v) before the fast ones were all answered", r.err, r.elapsed)
		slow <- r
	default:
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("fast%d: %v", i, err)
		}
	}

	r := <-slow
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("slow query: error %v, want a timeout", r.err)
	}
	if r.elapsed < 900*time.Millisecond || r.elapsed > 2500*time.Millisecond {
		t.Errorf("slow query failed after %v, want about the 1 s timeout", r.elapsed)
	}

	mu.Lock()
	defer mu.Unlock()
	if n := s.accepted.Load(); n < 2 {
		t.Errorf("%d connections accepted, want at least 2 (the slow query's and the fast ones')", n)
	}
	if fastFrom[slowFrom] > 0 {
		t.Errorf("%d fast queries were sent on the slow query's connection %s", fastFrom[slowFrom], slowFrom)
	}
	t.Logf("%d connections accepted; fast queries per connection: %v", s.accepted.Load(), fastFrom)
}

// Local conditions (pool full, the caller giving up, the group closed) say nothing about the
// upstream: the endpoint stays healthy, its failure count unchanged.
func TestLocalConditionsNotCounted(t *testing.T) {
	t.Run("pool full", func(t *testing.T) {
		s := newTestServer()
		held, release := make(chan struct{}, 1), make(chan struct{})
		s.serveTCP(t, nil, func(w dns.ResponseWriter, r *dns.Msg) {
			if r.Question[0].Name == "held." {
				held <- struct{}{}
				select {
				case <-release:
				case <-s.done:
				}
			}
			answer(w, r)
		}, nil)
		cfg := testConfig()
		cfg.MaxConcurrent = 1
		g := newGroup(t, cfg, tcpLine(s.addr))
		e := g.Endpoints()[0]

		first := make(chan error, 1)
		go func() {
			err := exchangeAnswer(context.Background(), t, g, "held.")
			first <- err
		}()
		<-held

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := g.Exchange(ctx, query(t, "other."))
		elapsed := time.Since(start)
		if err == nil || !IsLocal(err) || !errors.Is(err, ErrPoolFull) {
			t.Fatalf("second query: error %v, want a local ErrPoolFull", err)
		}
		if elapsed < 150*time.Millisecond {
			t.Errorf("second query refused after %v: it did not wait for a free connection", elapsed)
		}
		if n := e.fails.Load(); n != 0 || !e.Healthy() {
			t.Errorf("after ErrPoolFull: fails %d, healthy %v; want 0, true", n, e.Healthy())
		}

		close(release)
		if err := <-first; err != nil {
			t.Errorf("held query: %v", err)
		}
		if n := e.fails.Load(); n != 0 || !e.Healthy() {
			t.Errorf("at the end: fails %d, healthy %v; want 0, true", n, e.Healthy())
		}
		if n := s.queries.Load(); n != 1 {
			t.Errorf("server saw %d queries, want 1 (the refused one must not be sent)", n)
		}
	})

	for _, proto := range []string{"tcp", "udp"} {
		t.Run("caller cancels "+proto, func(t *testing.T) {
			s := newTestServer()
			held := make(chan struct{}, 1)
			h := func(w dns.ResponseWriter, r *dns.Msg) {
				held <- struct{}{}
				<-s.done
			}
			if proto == "tcp" {
				s.serveTCP(t, nil, h, nil)
			} else {
				s.serveUDP(t, nil, h)
			}
			g := newGroup(t, testConfig(), Line{Proto: proto, Addrs: []string{s.addr}})
			e := g.Endpoints()[0]
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-held
				cancel()
			}()
			_, err := g.Exchange(ctx, query(t, "held."))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			if n := e.fails.Load(); n != 0 || !e.Healthy() {
				t.Errorf("fails %d, healthy %v; want 0, true", n, e.Healthy())
			}
		})
	}

	for _, proto := range []string{"tcp", "udp"} {
		t.Run("closed "+proto, func(t *testing.T) {
			s := newTestServer()
			if proto == "tcp" {
				s.serveTCP(t, nil, answer, nil)
			} else {
				s.serveUDP(t, nil, answer)
			}
			g := newGroup(t, testConfig(), Line{Proto: proto, Addrs: []string{s.addr}})
			e := g.Endpoints()[0]
			// Used once, then closed; a query still on its way (as a health check may be)
			// is refused as a local condition.
			if _, err := g.Exchange(context.Background(), query(t, "a.")); err != nil {
				t.Fatal(err)
			}
			e.close()
			_, err := e.exchange(context.Background(), query(t, "b."))
			if !IsLocal(err) || !errors.Is(err, ErrClosed) {
				t.Fatalf("error %v, want a local ErrClosed", err)
			}
			if n := e.fails.Load(); n != 0 || !e.Healthy() {
				t.Errorf("fails %d, healthy %v; want 0, true", n, e.Healthy())
			}
		})
	}
}

// A UDP endpoint closed before its first query (a reload right after start, racing the first
// health check) refuses the query as closed; it must not open its sockets or crash.
func TestUDPClosedBeforeFirstUse(t *testing.T) {
	s := newTestServer()
	s.serveUDP(t, nil, answer)
	e := newEndpoint(s.addr, "udp", testConfig())
	e.close()
	_, err := e.exchange(context.Background(), query(t, "a."))
	if !IsLocal(err) || !errors.Is(err, ErrClosed) {
		t.Fatalf("error %v, want a local ErrClosed", err)
	}
	if e.fails.Load() != 0 {
		t.Errorf("fails %d, want 0", e.fails.Load())
	}
}

// Sequential queries reuse one idle connection.
func TestIdleConnectionReused(t *testing.T) {
	s := newTestServer()
	s.serveTCP(t, nil, answer, nil)
	g := newGroup(t, testConfig(), tcpLine(s.addr))
	for i := range 20 {
		name := fmt.Sprintf("q%d.", i)
		err := exchangeAnswer(context.Background(), t, g, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("%d connections accepted for 20 sequential queries, want 1", n)
	}
	p := g.Endpoints()[0].tcp
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open != 1 || len(p.idle) != 1 {
		t.Errorf("pool: %d open, %d idle; want 1, 1", p.open, len(p.idle))
	}
}

// A connection older than MaxAge is closed when its query ends: a new one is dialled, but not
// one per query.
func TestMaxAgeRetiresConnections(t *testing.T) {
	s := newTestServer()
	s.serveTCP(t, nil, answer, nil)
	cfg := testConfig()
	cfg.MaxAge = 300 * time.Millisecond
	g := newGroup(t, cfg, tcpLine(s.addr))
	queries := 0
	for start := time.Now(); time.Since(start) < time.Second; queries++ {
		name := fmt.Sprintf("q%d.", queries)
		err := exchangeAnswer(context.Background(), t, g, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n := int(s.accepted.Load())
	if n < 2 || n >= queries {
		t.Errorf("%d connections for %d queries over 1 s with MaxAge 300ms, want more than 1 and fewer than %d", n, queries, queries)
	}
	t.Logf("%d connections for %d queries", n, queries)
}

// The upstream closed an idle connection the pool still holds (its idle timeout is shorter than
// ours): the next query finds it dead and is asked again on a fresh one, without an error.
func TestServerClosedIdleConnection(t *testing.T) {
	s := newTestServer()
	s.serveTCP(t, nil, answer, func(srv *dns.Server) {
		srv.IdleTimeout = func() time.Duration { return 100 * time.Millisecond }
	})
	g := newGroup(t, testConfig(), tcpLine(s.addr)) // IdleTimeout 5 s
	e := g.Endpoints()[0]
	if _, err := g.Exchange(context.Background(), query(t, "first.")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.tcp.idle); n != 1 {
		t.Fatalf("%d idle connections, want the 1 the server closed", n)
	}
	err := exchangeAnswer(context.Background(), t, g, "second.")
	if err != nil {
		t.Fatalf("query after the server closed the idle connection: %v", err)
	}
	if n := e.fails.Load(); n != 0 {
		t.Errorf("fails %d, want 0", n)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("%d connections accepted, want 2 (the closed one and its replacement)", n)
	}
}

// Concurrent UDP queries share the endpoint's few sockets.
func TestUDPSharesSockets(t *testing.T) {
	s := newTestServer()
	var mu sync.Mutex
	from := map[string]bool{}
	s.serveUDP(t, nil, func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		from[w.RemoteAddr().String()] = true
		mu.Unlock()
		answer(w, r)
	})
	g := newGroup(t, testConfig(), udpLine(s.addr))
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("q%d.", i)
			err := exchangeAnswer(context.Background(), t, g, name)
			errs[i] = err
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("q%d: %v", i, err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d queries failed (the server saw %d)", failed, n, s.queries.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(from) > udpSocketCount {
		t.Errorf("server saw %d source addresses, want at most %d", len(from), udpSocketCount)
	}
}

// A UDP datagram with the query's ID but another question is not taken as its answer.
func TestUDPIgnoresMismatchedAnswer(t *testing.T) {
	s := newTestServer()
	s.serveUDP(t, nil, func(w dns.ResponseWriter, r *dns.Msg) {
		wrong := new(dns.Msg)
		wrong.SetReply(r)
		wrong.Question[0].Name = "other.example."
		wrong.Answer = append(wrong.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: "other.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(198, 51, 100, 66),
		})
		w.WriteMsg(wrong)
		answer(w, r)
	})
	g := newGroup(t, testConfig(), udpLine(s.addr))
	err := exchangeAnswer(context.Background(), t, g, "right.example.")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.queries.Load(); n != 1 {
		t.Errorf("server saw %d queries, want 1", n)
	}
}

// An upstream that refuses connections is skipped for the next line, and counted as failed.
func TestFailoverOnRefusedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	s := newTestServer()
	s.serveTCP(t, nil, answer, nil)
	g := newGroup(t, testConfig(), tcpLine(dead), tcpLine(s.addr))
	err = exchangeAnswer(context.Background(), t, g, "a.")
	if err != nil {
		t.Fatal(err)
	}
	eps := g.Endpoints()
	if eps[0].Addr != dead || eps[0].fails.Load() != 1 {
		t.Errorf("refusing endpoint %s: fails %d, want 1", eps[0].Addr, eps[0].fails.Load())
	}
	if eps[1].fails.Load() != 0 || !eps[1].reached.Load() {
		t.Errorf("working endpoint: fails %d, reached %v; want 0, true", eps[1].fails.Load(), eps[1].reached.Load())
	}
}

// SERVFAIL (or REFUSED) from an upstream moves on to the other addresses of its line, never to
// the next line (another kind of server: the cluster DNS's stub domain must not go to the node's
// resolvers); from the last address tried, it is the answer.
func TestServfailMovesOnWithinItsLine(t *testing.T) {
	servfail := func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	}
	for _, tc := range []struct {
		name          string
		first, second dns.HandlerFunc
		sameLine      bool
		wantRcode     int
		wantSecond    int32 // queries the second server sees
	}{
		{"one line, first fails", servfail, answer, true, dns.RcodeSuccess, 1},
		{"one line, both fail", servfail, servfail, true, dns.RcodeServerFailure, 1},
		{"one line, first answers", answer, answer, true, dns.RcodeSuccess, 0},
		{"two lines, first fails", servfail, answer, false, dns.RcodeServerFailure, 0},
		{"two lines, first answers", answer, answer, false, dns.RcodeSuccess, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s1, s2 := newTestServer(), newTestServer()
			s1.serveTCP(t, nil, tc.first, nil)
			s2.serveTCP(t, nil, tc.second, nil)
			lines := []Line{tcpLine(s1.addr), tcpLine(s2.addr)}
			if tc.sameLine {
				lines = []Line{tcpLine(s1.addr, s2.addr)}
			}
			g := newGroup(t, testConfig(), lines...)
			// Within a line the start rotates: the first query starts at the line's second
			// address, the second query at its first. Ask twice and look at the second.
			if tc.sameLine {
				if _, err := g.Exchange(context.Background(), query(t, "warm.")); err != nil {
					t.Fatal(err)
				}
				s1.queries.Store(0)
				s2.queries.Store(0)
			}
			resp, err := g.Exchange(context.Background(), query(t, "a."))
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(resp); err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tc.wantRcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.wantRcode])
			}
			if tc.wantRcode == dns.RcodeSuccess {
				if err := checkAnswer(resp, "a."); err != nil {
					t.Error(err)
				}
			}
			if n := s1.queries.Load(); n != 1 {
				t.Errorf("first server saw %d queries, want 1", n)
			}
			if n := s2.queries.Load(); n != tc.wantSecond {
				t.Errorf("second server saw %d queries, want %d", n, tc.wantSecond)
			}
		})
	}
}

// Close lets the queries in flight have their answers, then refuses new ones and closes the
// connections (TCP) and sockets (UDP).
func TestCloseWaitsForQueriesInFlight(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			s := newTestServer()
			held := make(chan struct{}, 1)
			h := func(w dns.ResponseWriter, r *dns.Msg) {
				held <- struct{}{}
				select {
				case <-time.After(500 * time.Millisecond):
				case <-s.done:
				}
				answer(w, r)
			}
			if proto == "tcp" {
				s.serveTCP(t, nil, h, nil)
			} else {
				s.serveUDP(t, nil, h)
			}
			cfg := testConfig()
			cfg.CloseGrace = 300 * time.Millisecond
			g := newGroup(t, cfg, Line{Proto: proto, Addrs: []string{s.addr}})
			first := make(chan error, 1)
			go func() {
				err := exchangeAnswer(context.Background(), t, g, "inflight.")
				first <- err
			}()
			<-held
			g.Close()
			// Within the grace (a reload's new instance not yet serving), queries are still taken.
			err := exchangeAnswer(context.Background(), t, g, "late.")
			if err != nil {
				t.Errorf("query within the grace after Close: %v", err)
			}
			if err := <-first; err != nil {
				t.Errorf("query in flight at Close: %v", err)
			}
			time.Sleep(cfg.CloseGrace) // "late." took longer already; to be sure
			if _, err := g.Exchange(context.Background(), query(t, "later.")); !errors.Is(err, ErrClosed) {
				t.Errorf("query after Close and its grace: error %v, want ErrClosed", err)
			}
			e := g.Endpoints()[0]
			eventually(t, "the connections closed", func() bool {
				p := e.tcp
				p.mu.Lock()
				defer p.mu.Unlock()
				return p.closed && p.open == 0 && len(p.idle) == 0
			})
			if e.udp != nil {
				eventually(t, "the UDP sockets closed", func() bool {
					for _, sock := range e.udp.socks {
						sock.mu.Lock()
						closed := sock.closed
						sock.mu.Unlock()
						if !closed {
							return false
						}
					}
					return true
				})
			}
		})
	}
}

// A truncated UDP answer is asked again over TCP on the same address.
func TestUDPTruncatedRetriedOverTCP(t *testing.T) {
	s := newTestServer()
	var udpQueries, tcpQueries atomic.Int32
	s.serveBoth(t,
		func(w dns.ResponseWriter, r *dns.Msg) {
			udpQueries.Add(1)
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			w.WriteMsg(m)
		},
		func(w dns.ResponseWriter, r *dns.Msg) {
			tcpQueries.Add(1)
			answer(w, r)
		})
	g := newGroup(t, testConfig(), udpLine(s.addr))
	resp, err := g.Exchange(context.Background(), query(t, "big."))
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	if m.Truncated {
		t.Error("answer has TC set: the truncated UDP answer was returned")
	}
	if err := checkAnswer(resp, "big."); err != nil {
		t.Error(err)
	}
	if u, c := udpQueries.Load(), tcpQueries.Load(); u != 1 || c != 1 {
		t.Errorf("%d UDP and %d TCP queries, want 1 and 1", u, c)
	}
}

// With HealthZone the health checks ask that zone's SOA, which the cluster DNS answers itself:
// an upstream whose root lookups hang (its own resolvers are away) stays up; checked with `. NS`
// it is marked down.
func TestHealthZone(t *testing.T) {
	s := newTestServer()
	s.serveTCP(t, nil, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "." {
			<-s.done // forwarded to resolvers that do not answer
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		w.WriteMsg(m)
	}, nil)
	for _, tc := range []struct {
		zone        string
		wantHealthy bool
	}{{"cluster.local.", true}, {"", false}} {
		cfg := testConfig()
		cfg.HealthEvery, cfg.Timeout, cfg.HealthZone = 50*time.Millisecond, 200*time.Millisecond, tc.zone
		g := newGroup(t, cfg, tcpLine(s.addr))
		g.Start()
		e := g.Endpoints()[0]
		time.Sleep(time.Second) // several checks
		if e.Healthy() != tc.wantHealthy {
			t.Errorf("health zone %q: healthy %v after 1 s of checks, want %v (fails %d)", tc.zone, e.Healthy(), tc.wantHealthy, e.fails.Load())
		}
	}
}
