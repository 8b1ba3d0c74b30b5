package nodecache

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// nxdomainToA stands above nodecache as searchpath does: it changes only NXDOMAIN answers (into
// an A record of 192.0.2.99).
type nxdomainToA struct{ next plugin.Handler }

func (h nxdomainToA) Name() string               { return "nxdomaintoa" }
func (h nxdomainToA) RewritesOnlyNXDOMAIN() bool { return true }
func (h nxdomainToA) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(h.Name(), h.next, ctx, rewriteNXDOMAIN{w}, r)
}

type rewriteNXDOMAIN struct{ dns.ResponseWriter }

func (w rewriteNXDOMAIN) WriteMsg(m *dns.Msg) error {
	if m.Rcode == dns.RcodeNameError {
		m.Rcode, m.Ns = dns.RcodeSuccess, nil
		rr, _ := dns.NewRR(m.Question[0].Name + " 5 IN A 192.0.2.99")
		m.Answer = []dns.RR{rr}
	}
	return w.ResponseWriter.WriteMsg(m)
}

// fastPathFor runs nc's fast path on a loopback port, with a CoreDNS server behind it for what it
// hands on (nxdomainToA above nc when rewriter is set), and returns the address to ask.
func fastPathFor(t *testing.T, nc *NodeCache, rewriter bool) string {
	t.Helper()
	pc := mustListenUDP(t)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	key := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg := &dnsserver.Config{Zone: ".", Port: strconv.Itoa(port), ListenHosts: []string{"127.0.0.1"}}
	if rewriter {
		cfg.Plugin = append(cfg.Plugin, func(next plugin.Handler) plugin.Handler { return nxdomainToA{next} })
	}
	cfg.Plugin = append(cfg.Plugin, func(next plugin.Handler) plugin.Handler { nc.Next = next; return nc })
	s, err := dnsserver.NewServer("dns://"+key, []*dnsserver.Config{cfg})
	if err != nil {
		t.Fatal(err)
	}
	if nc.node.cache == nil {
		nc.node.cache = newCache(100, 100, 1<<20)
	}
	fl, err := startFastListener(nc.node, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.close)
	rt := fastRouteFor(nc)
	rt.srv, rt.label = s, s.Addr
	rt.zones[0].nxdomainSlow = rewriter
	fl.route.Store(rt)
	return key
}

// ask sends the query's bytes to addr over UDP and returns the answer's bytes.
func ask(t *testing.T, addr string, q []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 65535)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return b[:n]
}

// checkDrained fails unless every query the node counted in flight (what a shutdown drains) is
// done: answered, or handed to the chain and answered there.
func checkDrained(t *testing.T, nc *NodeCache) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for nc.node.inFlight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	check(t, "queries in flight once all are answered", nc.node.inFlight.Load(), int64(0))
}

func pack(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	p, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A miss on the fast path is answered byte for byte as the slow path answers it, cached, and
// then answered from the cache without asking upstream again.
func TestFastMissMatchesSlowPath(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.AuthenticatedData = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 10.0.0.1")
		m.Answer = append(m.Answer, rr)
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, o.Do())
		}
		w.WriteMsg(m)
	})
	fast := newTestNodeCache(t, up.addr)
	addr := fastPathFor(t, fast, false)
	slow := slowServer(t, newTestNodeCache(t, up.addr))
	cases := []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"plain", nil},
		{"EDNS", func(m *dns.Msg) { m.SetEdns0(4096, false) }},
		{"EDNS DO, AD asked", func(m *dns.Msg) { m.SetEdns0(1232, true); m.AuthenticatedData = true }},
		{"no RD, CD", func(m *dns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := pack(t, query(fmt.Sprintf("Miss-%d.Default.svc.cluster.local.", i), dns.TypeA, tc.edit))
			before := up.queries.Load()
			got := ask(t, addr, q)
			check(t, "upstream queries for the miss", up.queries.Load()-before, int32(1))
			if want := slow(q); !bytes.Equal(got, want) {
				t.Fatalf("fast and slow answers differ:\nfast %x\nslow %x", got, want)
			}
			again := ask(t, addr, q)
			check(t, "upstream queries after the hit", up.queries.Load()-before, int32(2)) // the slow path's own miss
			m := new(dns.Msg)
			if err := m.Unpack(again); err != nil || len(m.Answer) != 1 || m.Id != 0xbeef {
				t.Fatalf("hit after the miss: %v %v", m, err)
			}
		})
	}
}

// Identical concurrent misses go upstream once, whichever path asked; every asker gets the
// answer with its own ID and spelling.
func TestFastMissSingleFlight(t *testing.T) {
	release := make(chan struct{})
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		answerA(w, r)
	})
	nc := newTestNodeCache(t, up.addr)
	addr := fastPathFor(t, nc, false)
	const askers = 20
	var wg sync.WaitGroup
	answers := make(chan *dns.Msg, askers+1)
	for i := range askers {
		wg.Go(func() {
			name := "same.default.svc.cluster.local."
			if i%2 == 1 {
				name = "SAME.default.svc.cluster.local."
			}
			q := query(name, dns.TypeA, func(m *dns.Msg) { m.Id = uint16(i) })
			m := new(dns.Msg)
			if err := m.Unpack(ask(t, addr, pack(t, q))); err != nil || m.Id != uint16(i) || m.Question[0].Name != name || len(m.Answer) != 1 {
				t.Errorf("asker %d: %v (%v)", i, m, err)
			}
			answers <- m
		})
	}
	wg.Go(func() { // the slow path joins the same flight
		time.Sleep(50 * time.Millisecond)
		rec := &byteWriter{}
		nc.ServeDNS(context.Background(), rec, askA("same.default.svc.cluster.local."))
	})
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	check(t, "upstream queries", up.queries.Load(), int32(1))
	check(t, "answers", len(answers), askers)
	checkDrained(t, nc)
}

// Upstream failures on the fast path end as on the slow path: failover to the next upstream,
// SERVFAIL (as CoreDNS's server writes it) when none answers.
func TestFastMissUpstreamFails(t *testing.T) {
	silent := func(dns.ResponseWriter, *dns.Msg) { time.Sleep(2 * time.Second) }
	servfail := func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	}
	closes := func(w dns.ResponseWriter, r *dns.Msg) { w.Close() }
	tests := []struct {
		name      string
		first     func(dns.ResponseWriter, *dns.Msg)
		second    func(dns.ResponseWriter, *dns.Msg) // nil: a single upstream
		wantRcode int
		noAnswer  bool // the answer is CoreDNS's own SERVFAIL for a failed plugin
	}{
		{"upstream never answers: SERVFAIL", silent, nil, dns.RcodeServerFailure, true},
		{"upstream closes the connection in flight: SERVFAIL", closes, nil, dns.RcodeServerFailure, true},
		{"upstream answers SERVFAIL: passed on", servfail, nil, dns.RcodeServerFailure, false},
		{"first upstream never answers: the second answers", silent, answerA, dns.RcodeSuccess, false},
		{"first upstream closes in flight: the second answers", closes, answerA, dns.RcodeSuccess, false},
		{"first upstream SERVFAIL: the second answers", servfail, answerA, dns.RcodeSuccess, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addrs := []string{startTCPUpstream(t, time.Minute, -1, tc.first).addr}
			if tc.second != nil {
				addrs = append(addrs, startTCPUpstream(t, time.Minute, -1, tc.second).addr)
			}
			nc := newTestNodeCache(t, addrs[0])
			nc.config.timeout = 300 * time.Millisecond
			nc.upstreams = newUpstreamGroup([]upstream{{transport: "tcp", addrs: addrs}}, nc.config.timeout)
			t.Cleanup(nc.upstreams.close)
			addr := fastPathFor(t, nc, false)
			for i, edit := range []func(*dns.Msg){nil, func(m *dns.Msg) { m.SetEdns0(1232, true); m.CheckingDisabled = true }} {
				// The first query dials; the next ones go out on the pooled connection.
				ask(t, addr, pack(t, query(fmt.Sprintf("warm%d.cluster.local.", i), dns.TypeA, edit)))
				q := query(fmt.Sprintf("fail%d.cluster.local.", i), dns.TypeA, edit)
				got := ask(t, addr, pack(t, q))
				m := new(dns.Msg)
				if err := m.Unpack(got); err != nil {
					t.Fatal(err)
				}
				check(t, "rcode", m.Rcode, tc.wantRcode)
				if tc.noAnswer {
					if want := coreDNSError(t, q, dns.RcodeServerFailure); !bytes.Equal(got, want) {
						t.Errorf("SERVFAIL differs from CoreDNS's:\ngot  %x\nwant %x", got, want)
					}
				}
			}
			checkDrained(t, nc)
		})
	}
}

// coreDNSError is what CoreDNS's server writes when the plugin chain returns rc unwritten.
func coreDNSError(t *testing.T, q *dns.Msg, rc int) []byte {
	m := new(dns.Msg)
	m.SetRcode(q, rc)
	(&request.Request{Req: q.Copy()}).SizeAndDo(m)
	return pack(t, m)
}

// An expired entry inside its stale window is not a fast-path miss: the slow path asks again
// and serves it stale when no upstream answers.
func TestFastMissLeavesStaleToSlowPath(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, func(dns.ResponseWriter, *dns.Msg) { time.Sleep(2 * time.Second) })
	nc := newTestNodeCache(t, up.addr)
	nc.config.timeout, nc.config.serveStale = 200*time.Millisecond, time.Hour
	nc.upstreams = newUpstreamGroup([]upstream{{transport: "tcp", addrs: []string{up.addr}}}, nc.config.timeout)
	t.Cleanup(nc.upstreams.close)
	addr := fastPathFor(t, nc, false)
	name := "old.cluster.local."
	a, _, _ := cacheable(msgFor(name, dns.TypeA, dns.RcodeSuccess, name+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	nc.node.cache.put(newCacheKey(name, dns.TypeA, dns.ClassINET, false, false), name, a, 1, time.Hour, time.Now().Add(-time.Minute))
	m := new(dns.Msg)
	if err := m.Unpack(ask(t, addr, pack(t, query(name, dns.TypeA, nil)))); err != nil || len(m.Answer) != 1 {
		t.Fatalf("no stale answer: %v %v", m, err)
	}
	check(t, "stale TTL", m.Answer[0].Header().Ttl, uint32(staleTTL))
}

// With a plugin above that rewrites NXDOMAIN (searchpath), an NXDOMAIN miss is cached and then
// answered through the plugin chain; other answers stay on the fast path.
func TestFastMissNXDOMAINThroughChain(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name != "nx.cluster.local." {
			answerA(w, r)
			return
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		soa, _ := dns.NewRR("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5")
		m.Ns = []dns.RR{soa}
		w.WriteMsg(m)
	})
	nc := newTestNodeCache(t, up.addr)
	addr := fastPathFor(t, nc, true)
	for _, tc := range []struct {
		name   string
		wantIP string
	}{
		{"nx.cluster.local.", "192.0.2.99"},
		{"nx.cluster.local.", "192.0.2.99"}, // now a hit, through the chain again
		{"web.cluster.local.", "10.0.0.1"},
	} {
		m := new(dns.Msg)
		if err := m.Unpack(ask(t, addr, pack(t, query(tc.name, dns.TypeA, nil)))); err != nil || len(m.Answer) != 1 {
			t.Fatalf("%s: %v %v", tc.name, m, err)
		}
		check(t, tc.name, m.Answer[0].(*dns.A).A.String(), tc.wantIP)
	}
	check(t, "upstream queries", up.queries.Load(), int32(2))
	checkDrained(t, nc)
}

// An answer larger than the client's UDP size is cut to TC on the fast path too; the whole
// answer is cached for a client that takes it.
func TestFastMissTruncates(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 20 { // 700 bytes: more than 512, less than 1232
			rr, _ := dns.NewRR(fmt.Sprintf("%s 30 IN A 10.0.%d.%d", r.Question[0].Name, i/250, i%250))
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	nc := newTestNodeCache(t, up.addr)
	addr := fastPathFor(t, nc, false)
	m := new(dns.Msg)
	if err := m.Unpack(ask(t, addr, pack(t, query("big.cluster.local.", dns.TypeA, nil)))); err != nil {
		t.Fatal(err)
	}
	check(t, "TC", m.Truncated, true)
	check(t, "answers in the truncated reply", len(m.Answer), 0)
	if err := m.Unpack(ask(t, addr, pack(t, query("big.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false) })))); err != nil {
		t.Fatal(err)
	}
	check(t, "TC with EDNS 1232", m.Truncated, false)
	check(t, "answers with EDNS 1232", len(m.Answer), 20)
	check(t, "upstream queries", up.queries.Load(), int32(1))
}

// servfail writes what CoreDNS's server writes for a failed query.
func TestServfailMatchesCoreDNS(t *testing.T) {
	for _, edit := range []func(*dns.Msg){
		nil,
		func(m *dns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true },
		func(m *dns.Msg) { m.SetEdns0(4096, true) },
		func(m *dns.Msg) { m.SetEdns0(512, false); m.AuthenticatedData = true },
	} {
		q := query("Web.cluster.local.", dns.TypeAAAA, edit)
		p := pack(t, q)
		var fq fastQuery
		if !parseFastQuery(p, &fq) {
			t.Fatal("not a fast-path query")
		}
		if got, want := servfail(nil, p), coreDNSError(t, q, dns.RcodeServerFailure); !bytes.Equal(got, want) {
			t.Errorf("%v:\ngot  %x\nwant %x", q, got, want)
		}
	}
}
