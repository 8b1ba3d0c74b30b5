package transport

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/miekg/dns"
)

// servePipelined serves h as the pipelining plugin does: the queries of a connection concurrently.
func (s *testServer) servePipelined(t *testing.T, h dns.HandlerFunc, idle time.Duration) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &packetio.StreamServer{Handler: s.counted(h), ReadTimeout: 3 * time.Second, IdleTimeout: idle, WriteTimeout: 5 * time.Second}
	go srv.Serve(countingListener{ln, &s.accepted})
	t.Cleanup(func() {
		s.release()
		ln.Close()
	})
}

func pipelinedLine(addrs ...string) Line { return Line{Proto: "pipelined", Addrs: addrs} }

// Queries share a few connections, and one the upstream is slow to answer delays none of the
// others on its connection; every answer goes to its own query.
func TestPipelinedSharesConnectionsAndSlowDelaysNoOther(t *testing.T) {
	s := newTestServer()
	s.servePipelined(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow." {
			<-s.done
		}
		answer(w, r)
	}, 10*time.Second)
	g := newGroup(t, testConfig(), pipelinedLine(s.addr))

	slow := make(chan error, 1)
	go func() {
		_, err := g.Exchange(context.Background(), query(t, "slow."))
		slow <- err
	}()
	eventually(t, "the slow query reached the server", func() bool { return s.queries.Load() == 1 })

	var wg sync.WaitGroup
	errs := make(chan error, 2000)
	for w := range 50 {
		wg.Go(func() {
			for i := range 40 {
				name := fmt.Sprintf("q%d-%d.", w, i)
				err := exchangeAnswer(context.Background(), t, g, name)
				if err != nil {
					errs <- fmt.Errorf("%s: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.accepted.Load(); n < 1 || n > muxConns {
		t.Errorf("%d connections for 2,001 queries, want 1 to %d", n, muxConns)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow query ended before it was answered: %v", err)
	default:
	}
	s.release()
	if err := <-slow; err != nil {
		t.Errorf("slow query: %v", err)
	}
	if f := g.Endpoints()[0].fails.Load(); f != 0 {
		t.Errorf("fails %d, want 0", f)
	}
}

// The upstream closed a shared connection as a query was sent on it (its idle timeout racing our
// write): the query is asked again on a fresh one, without an error; connections idle for
// IdleTimeout are closed by the reaper.
func TestPipelinedServerClosedIdleConnection(t *testing.T) {
	s := newTestServer()
	var closedOnce sync.Once
	s.servePipelined(t, func(w dns.ResponseWriter, r *dns.Msg) {
		closed := false
		if r.Question[0].Name == "second." {
			closedOnce.Do(func() { closed = true; w.Close() })
		}
		if !closed {
			answer(w, r)
		}
	}, 10*time.Second)
	g := newGroup(t, testConfig(), pipelinedLine(s.addr)) // IdleTimeout 5 s
	e := g.Endpoints()[0]
	if _, err := g.Exchange(context.Background(), query(t, "first.")); err != nil {
		t.Fatal(err)
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

	e.mux.cfg.IdleTimeout = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	e.reap()
	e.mux.mu.Lock()
	open := len(e.mux.conns)
	e.mux.mu.Unlock()
	if open != 0 {
		t.Errorf("%d connections open after the reaper, want 0", open)
	}
}

// Queries that give up on full connections make room for those waiting: they are sent at once,
// not when an answer comes.
func TestPipelinedWaitersWakeWhenQueriesGiveUp(t *testing.T) {
	s := newTestServer()
	s.servePipelined(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "hold." {
			<-s.done
			return
		}
		answer(w, r)
	}, 10*time.Second)
	g := newGroup(t, testConfig(), pipelinedLine(s.addr))
	var wg sync.WaitGroup
	for range muxConns * muxPerConn {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			g.Exchange(ctx, query(t, "hold."))
		})
	}
	eventually(t, "every connection full", func() bool { return s.queries.Load() == muxConns*muxPerConn })
	resp, err := g.Exchange(context.Background(), query(t, "waiter.")) // 2 s timeout
	if err == nil {
		err = checkAnswer(resp, "waiter.")
	}
	if err != nil {
		t.Fatalf("the query waiting for room: %v", err)
	}
	wg.Wait()
}

// A query whose caller gives up leaves the connection usable; its late answer is dropped.
func TestPipelinedAbandonedQuery(t *testing.T) {
	s := newTestServer()
	s.servePipelined(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "late." {
			time.Sleep(200 * time.Millisecond)
		}
		answer(w, r)
	}, 10*time.Second)
	g := newGroup(t, testConfig(), pipelinedLine(s.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.Exchange(ctx, query(t, "late.")); err == nil {
		t.Fatal("the abandoned query got an answer")
	}
	time.Sleep(300 * time.Millisecond) // its answer comes, for nobody
	for i := range 5 {
		name := fmt.Sprintf("after%d.", i)
		err := exchangeAnswer(context.Background(), t, g, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}
