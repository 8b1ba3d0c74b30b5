package nodecache

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/plugin/nodecache/transport"
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

func newTestNodeCache(t testing.TB, upstreamAddr string) *NodeCache {
	t.Helper()
	cfg := defaultConfig()
	cfg.timeout = time.Second
	g := transport.NewGroup([]transport.Line{{Proto: "tcp", Addrs: []string{upstreamAddr}}}, cfg.transport())
	t.Cleanup(g.Close)
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
		// The client's writer too: log and prometheus above read the message (rflags, rcode).
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

// tcpUpstream is an in-process miekg/dns TCP server that counts the queries it answers.
type tcpUpstream struct {
	addr    string
	queries atomic.Int32
	srv     *dns.Server
}

func startTCPUpstream(t testing.TB, idle time.Duration, maxQueries int, handler func(w dns.ResponseWriter, r *dns.Msg)) *tcpUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &tcpUpstream{addr: l.Addr().String()}
	started := make(chan struct{})
	u.srv = &dns.Server{Listener: l, Net: "tcp", NotifyStartedFunc: func() { close(started) },
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
