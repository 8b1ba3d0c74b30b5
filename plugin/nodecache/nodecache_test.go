package nodecache

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/nonwriter"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// byteWriter records what reaches the client, as bytes or as a message.
type byteWriter struct {
	test.ResponseWriter
	mu    sync.Mutex
	bytes int
	msgs  int
}

func (w *byteWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bytes++
	return len(b), nil
}

func (w *byteWriter) WriteMsg(*dns.Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs++
	return nil
}

func newTestNodeCache(t *testing.T, upstreamAddr string) *NodeCache {
	t.Helper()
	cfg := defaultConfig()
	cfg.timeout = time.Second
	g := newUpstreamGroup([]upstream{{transport: "tcp", addrs: []string{upstreamAddr}}}, cfg.timeout)
	t.Cleanup(g.close)
	return &NodeCache{config: cfg, node: &node{cache: newCache(100, 100, 1<<20)}, upstreams: g}
}

func askA(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	return m
}

// Identical concurrent misses go upstream once; every asker gets the answer.
func TestServeDNSSingleFlight(t *testing.T) {
	release := make(chan struct{})
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name != "." {
			<-release // hold the answer until every asker waits
		}
		answerA(w, r)
	})
	nc := newTestNodeCache(t, up.addr)
	const askers = 50
	var wg sync.WaitGroup
	results := make(chan *dns.Msg, askers)
	for range askers {
		wg.Go(func() {
			w := nonwriter.New(&test.ResponseWriter{})
			nc.ServeDNS(context.Background(), w, askA("Busy.cluster.local."))
			results <- w.Msg
		})
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	answered := 0
	for m := range results {
		if m != nil && len(m.Answer) == 1 && m.Question[0].Name == "Busy.cluster.local." {
			answered++
		}
	}
	check(t, "askers answered", answered, askers)
	check(t, "queries upstream", up.queries.Load(), int32(1))
}

func TestServeDNSWriters(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, answerA)
	nc := newTestNodeCache(t, up.addr)
	tests := []struct {
		name           string
		writer         func(inner *byteWriter) dns.ResponseWriter
		bytes, msgs    int
		capturedAnswer bool
	}{
		// upstream.Lookup (searchpath) captures the message: nothing may reach the client.
		{"nonwriter gets a message", func(inner *byteWriter) dns.ResponseWriter { return nonwriter.New(inner) }, 0, 0, true},
		{"other writers get a message", func(inner *byteWriter) dns.ResponseWriter { return inner }, 0, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // a miss, then a hit
				inner := &byteWriter{}
				w := tc.writer(inner)
				rcode, err := nc.ServeDNS(context.Background(), w, askA("web.cluster.local."))
				check(t, "rcode", rcode, dns.RcodeSuccess)
				check(t, "error", err, nil)
				check(t, "bytes written to the client", inner.bytes, tc.bytes)
				check(t, "messages written to the client", inner.msgs, tc.msgs)
				if nw, ok := w.(*nonwriter.Writer); ok {
					check(t, "captured answer", nw.Msg != nil && len(nw.Msg.Answer) == 1, tc.capturedAnswer)
				}
			}
		})
	}
	check(t, "queries upstream (then hits)", up.queries.Load(), int32(1))
}

// The server's own connection writer is recognised; others are not.
func TestConnWriter(t *testing.T) {
	got := make(chan bool, 1)
	srv := &dns.Server{PacketConn: mustListenUDP(t), Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		got <- connWriter(w)
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	<-started
	if _, err := dns.Exchange(askA("x."), srv.PacketConn.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	check(t, "miekg/dns connection writer", <-got, true)
	check(t, "nonwriter", connWriter(nonwriter.New(&test.ResponseWriter{})), false)
}

func mustListenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// A hot entry is refreshed in the background before it expires.
func TestServeDNSPrefetch(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, answerA)
	nc := newTestNodeCache(t, up.addr)
	nc.config.prefetchAmount, nc.config.prefetchPercent = 2, 100 // the second hit prefetches
	for range 3 {
		nc.ServeDNS(context.Background(), nonwriter.New(&test.ResponseWriter{}), askA("hot.cluster.local."))
	}
	deadline := time.Now().Add(2 * time.Second)
	for up.queries.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	check(t, "upstream queries: the miss and one prefetch", up.queries.Load(), int32(2))
}
