package nodecache

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/internal/wiretest"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
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

// namedHandler is a plugin of some name above nodecache, for the door's eligibility rules.
type namedHandler struct {
	name     string
	rewriter bool
}

func (h namedHandler) Name() string               { return h.name }
func (h namedHandler) RewritesOnlyNXDOMAIN() bool { return h.rewriter }
func (h namedHandler) ServeDNS(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	return 0, nil
}

// doorFor opens nc's packet door on a loopback port, with a CoreDNS server behind it for what it
// hands on (nxdomainToA above nc when rewriter is set), and returns the address to ask.
func doorFor(t *testing.T, nc *NodeCache, rewriter bool) string {
	t.Helper()
	pc := mustListenUDP(t)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	key := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg := &dnsserver.Config{Zone: ".", Port: strconv.Itoa(port), ListenHosts: []string{"127.0.0.1"}}
	// The block's handlers are read in directive order, as plugin.cfg gives it in the binary.
	directives := dnsserver.Directives
	dnsserver.Directives = []string{"nxdomaintoa", pluginName}
	t.Cleanup(func() { dnsserver.Directives = directives })
	if rewriter {
		cfg.Plugin = append(cfg.Plugin, func(next plugin.Handler) plugin.Handler { return nxdomainToA{next} })
	}
	cfg.Plugin = append(cfg.Plugin, func(next plugin.Handler) plugin.Handler { nc.Next = next; return nc })
	s, err := dnsserver.NewServer("dns://"+key, []*dnsserver.Config{cfg})
	if err != nil {
		t.Fatal(err)
	}
	rt, zones, notes := buildRoute(s, key, []*doorBlock{{nc: nc, cfg: cfg, zones: []string{"."}, listen: map[string]bool{key: true}}}, nil)
	if len(notes) > 0 {
		t.Fatalf("route: %v", notes)
	}
	check(t, "NXDOMAIN through the chain", zones[0].nxdomainSlow, rewriter)
	d, err := door.Open(key, rt, &nc.node.inFlight, log)
	if err != nil {
		t.Fatal(err)
	}
	zones[0].d = d
	t.Cleanup(d.Close)
	return key
}

// serveDNSOver answers over UDP through ServeDNS alone (CoreDNS's normal path), for comparison.
func serveDNSOver(t *testing.T, nc *NodeCache) string {
	pc := mustListenUDP(t)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		nc.ServeDNS(context.Background(), dnstest.NewRecorder(w), r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func query(name string, qtype uint16, edit func(m *dns.Msg)) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xbeef
	if edit != nil {
		edit(m)
	}
	return m
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

// The door's answers, a miss and then a hit, are byte for byte what ServeDNS writes through
// CoreDNS's server, for every shape of plain query.
func TestDoorAnswersAsServeDNS(t *testing.T) {
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
	door := doorFor(t, newTestNodeCache(t, up.addr), false)
	plain := serveDNSOver(t, newTestNodeCache(t, up.addr))
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
			q := wiretest.Pack(t, query(fmt.Sprintf("Miss-%d.Default.svc.cluster.local.", i), dns.TypeA, tc.edit))
			for _, phase := range []string{"miss", "hit"} {
				got, want := wiretest.ExchangeUDP(t, door, q), wiretest.ExchangeUDP(t, plain, q)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: door %x\nServeDNS %x", phase, got, want)
				}
			}
		})
	}
}

// Identical misses through both doors go upstream once; every asker gets the answer in its own
// spelling and with its own ID.
func TestDoorSingleFlight(t *testing.T) {
	release := make(chan struct{})
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name != "." {
			<-release
		}
		answerA(w, r)
	})
	nc := newTestNodeCache(t, up.addr)
	addr := doorFor(t, nc, false)
	const askers = 20
	var wg sync.WaitGroup
	var answered atomic.Int32
	for i := range askers {
		wg.Go(func() {
			name := "same.default.svc.cluster.local."
			if i%2 == 1 {
				name = "SAME.default.svc.cluster.local."
			}
			q := query(name, dns.TypeA, func(m *dns.Msg) { m.Id = uint16(i) })
			m := new(dns.Msg)
			if err := m.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, q))); err != nil || m.Id != uint16(i) || m.Question[0].Name != name || len(m.Answer) != 1 {
				t.Errorf("asker %d: %v (%v)", i, m, err)
				return
			}
			answered.Add(1)
		})
	}
	wg.Go(func() { // ServeDNS joins the same flight
		time.Sleep(50 * time.Millisecond)
		nc.ServeDNS(context.Background(), &byteWriter{}, askA("same.default.svc.cluster.local."))
	})
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	check(t, "upstream queries", up.queries.Load(), int32(1))
	check(t, "answers", answered.Load(), int32(askers))
	checkDrained(t, nc)
}

// coreDNSError is what CoreDNS's server writes when a plugin fails with rc.
func coreDNSError(t *testing.T, q *dns.Msg, rc int) []byte {
	m := new(dns.Msg)
	m.SetRcode(q, rc)
	(&request.Request{Req: q.Copy()}).SizeAndDo(m)
	return wiretest.Pack(t, m)
}

// When no upstream answers, the door's asker gets the SERVFAIL CoreDNS's server writes.
func TestDoorUpstreamFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	nc := newTestNodeCache(t, dead)
	addr := doorFor(t, nc, false)
	for _, edit := range []func(m *dns.Msg){nil, func(m *dns.Msg) { m.SetEdns0(1232, true); m.CheckingDisabled = true }} {
		q := query("gone.cluster.local.", dns.TypeA, edit)
		got := wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, q))
		if want := coreDNSError(t, q, dns.RcodeServerFailure); !bytes.Equal(got, want) {
			t.Fatalf("door %x\nCoreDNS %x", got, want)
		}
	}
	checkDrained(t, nc)
}

// An expired entry asked through the door is asked again; when the upstream fails, the stale
// answer goes out with TTL 30 (RFC 8767), on the same path as ServeDNS.
func TestDoorServesStale(t *testing.T) {
	var failing atomic.Bool
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		if failing.Load() {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 1 IN A 10.0.0.7")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	nc := newTestNodeCache(t, up.addr)
	nc.config.serveStale = time.Hour
	addr := doorFor(t, nc, false)
	q := wiretest.Pack(t, query("stale.cluster.local.", dns.TypeA, nil))
	wiretest.ExchangeUDP(t, addr, q)
	failing.Store(true)
	time.Sleep(1100 * time.Millisecond)
	m := new(dns.Msg)
	if err := m.Unpack(wiretest.ExchangeUDP(t, addr, q)); err != nil || len(m.Answer) != 1 {
		t.Fatalf("stale answer: %v %v", m, err)
	}
	check(t, "rcode", m.Rcode, dns.RcodeSuccess)
	check(t, "address", m.Answer[0].(*dns.A).A.String(), "10.0.0.7")
	check(t, "stale TTL", m.Answer[0].Header().Ttl, uint32(staleTTL))
	check(t, "asked again", up.queries.Load(), int32(2))
	checkDrained(t, nc)
}

// With a plugin above that rewrites NXDOMAIN (searchpath), an NXDOMAIN, hit or miss, goes
// through the chain; other answers are the door's.
func TestDoorNXDOMAINThroughChain(t *testing.T) {
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
	addr := doorFor(t, nc, true)
	for _, tc := range []struct {
		name   string
		wantIP string
	}{
		{"nx.cluster.local.", "192.0.2.99"},
		{"nx.cluster.local.", "192.0.2.99"}, // now a hit, through the chain again
		{"web.cluster.local.", "10.0.0.1"},
	} {
		m := new(dns.Msg)
		if err := m.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, query(tc.name, dns.TypeA, nil)))); err != nil || len(m.Answer) != 1 {
			t.Fatalf("%s: %v %v", tc.name, m, err)
		}
		check(t, tc.name, m.Answer[0].(*dns.A).A.String(), tc.wantIP)
	}
	check(t, "upstream queries", up.queries.Load(), int32(2))
	checkDrained(t, nc)
}

// Queries the door does not take as they are (EDNS options, odd flags, other classes) go
// through CoreDNS's server and are still answered.
func TestDoorHandsOnOddQueries(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, answerA)
	nc := newTestNodeCache(t, up.addr)
	addr := doorFor(t, nc, false)
	for _, tc := range []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"EDNS cookie", func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			o := m.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}},
		{"Z bit", func(m *dns.Msg) { m.Zero = true }},
		{"escaped name", func(m *dns.Msg) { m.Question[0].Name = `we\.b.cluster.local.` }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := query("odd.cluster.local.", dns.TypeA, tc.edit)
			var fq door.Query
			check(t, "the door takes it", door.ParseQuery(wiretest.Pack(t, q), &fq), false)
			m := new(dns.Msg)
			if err := m.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, q))); err != nil || len(m.Answer) != 1 || m.Id != q.Id {
				t.Fatalf("%v %v", m, err)
			}
		})
	}
	checkDrained(t, nc)
}

// The hash the door computes while it reads the name is the cache key's hash.
func TestFastQueryHash(t *testing.T) {
	for _, name := range []string{"Web.Default.svc.cluster.local.", "a.", "x-y_z.cluster.local."} {
		var fq door.Query
		if !door.ParseQuery(wiretest.Pack(t, query(name, dns.TypeA, nil)), &fq) {
			t.Fatalf("%s: not taken", name)
		}
		want := newCacheKey([]byte(dns.CanonicalName(name)), dns.TypeA, dns.ClassINET, false, false)
		check(t, name, fq.Hash, want.hash)
	}
}

func TestJudgeAbove(t *testing.T) {
	nc := &NodeCache{}
	for _, tc := range []struct {
		name             string
		above            []plugin.Handler
		ok, nxdomainSlow bool
	}{
		{"nothing above", nil, true, false},
		{"passive plugins", []plugin.Handler{namedHandler{name: "prometheus"}, namedHandler{name: "errors"}}, true, false},
		{"log sees every answer: through the chain", []plugin.Handler{namedHandler{name: "log"}}, false, false},
		{"searchpath-like", []plugin.Handler{namedHandler{name: "searchpath", rewriter: true}}, true, true},
		{"rewrite", []plugin.Handler{namedHandler{name: "rewrite"}}, false, false},
	} {
		ok, slow, why := judgeAbove(door.HandlersAbove(append(tc.above, nc), pluginName))
		check(t, tc.name+" ("+why+")", []bool{ok, slow}, []bool{tc.ok, tc.nxdomainSlow})
	}
}

// A flood of names nobody asked before (random subdomains) holds at most maxFlights questions
// upstream: the rest get SERVFAIL at once, and cached names keep being answered meanwhile.
func TestDoorShedsMissesPastTheBound(t *testing.T) {
	release := make(chan struct{})
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name != "cached.cluster.local." && r.Question[0].Name != "." {
			<-release
		}
		answerA(w, r)
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	nc := newTestNodeCache(t, up.addr)
	nc.config.maxFlights = 5
	nc.config.timeout = 3 * time.Second
	addr := doorFor(t, nc, false)
	wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, query("cached.cluster.local.", dns.TypeA, nil)))

	const flood = 20
	rcodes := make(chan int, flood)
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			m := new(dns.Msg)
			if err := m.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, query(fmt.Sprintf("r%d.cluster.local.", i), dns.TypeA, nil)))); err != nil {
				t.Error(err)
				return
			}
			rcodes <- m.Rcode
		})
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(rcodes) < flood-5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	check(t, "answered at once (shed) while 5 wait upstream", len(rcodes), flood-5)
	check(t, "questions upstream", nc.flightsOpen.Load(), int64(5))
	m := new(dns.Msg)
	if err := m.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, query("cached.cluster.local.", dns.TypeA, nil)))); err != nil || len(m.Answer) != 1 {
		t.Fatalf("cached name during the flood: %v %v", m, err)
	}
	close(release)
	wg.Wait()
	close(rcodes)
	counts := map[int]int{}
	for rc := range rcodes {
		counts[rc]++
	}
	check(t, "rcodes", counts, map[int]int{dns.RcodeSuccess: 5, dns.RcodeServerFailure: flood - 5})
	checkDrained(t, nc)
}

// BenchmarkDoorHit is a cache hit through the packet door's handler: parse, route, lookup,
// render and the standard metrics (no socket I/O).
func BenchmarkDoorHit(b *testing.B) {
	nc := &NodeCache{config: defaultConfig(), node: &node{cache: newCache(100, 100, 1<<20)}}
	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR("web.default.svc.cluster.local. 30 IN A 10.96.0.10")
	m.Answer = []dns.RR{rr}
	a, ttl, err := cacheable(m, 30*time.Second, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	lower := []byte("web.default.svc.cluster.local.")
	nc.node.cache.put(newCacheKey(lower, dns.TypeA, dns.ClassINET, false, false), string(lower), a, ttl, 0, time.Now())
	z := &doorZone{name: "cluster.local.", nc: nc, report: true, label: "dns://bench", m: metricsFor("dns://bench")}
	q := new(dns.Msg)
	q.SetQuestion("Web.Default.svc.cluster.local.", dns.TypeA)
	p, _ := q.Pack()
	from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}
	buf := make([]byte, 0, 1232)
	b.ReportAllocs()
	for b.Loop() {
		var fq door.Query
		if !door.ParseQuery(p, &fq) {
			b.Fatal("not taken")
		}
		if out, v := z.answer(nil, &fq, p, from, buf); v != door.Answered || len(out) == 0 {
			b.Fatal("no answer")
		}
	}
}

// The AD bit and TTLs of what the node cache writes: AD only for a client that asked with AD or
// DO (RFC 6840 §5.7-5.8), and one remaining TTL on every record of a cached answer, so a CNAME
// never outlives its target (the answer of a hit, through either door).
func TestADAndCNAMETTL(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.AuthenticatedData = true
		name := r.Question[0].Name
		cname, _ := dns.NewRR(name + " 3600 IN CNAME target.example.org.")
		a, _ := dns.NewRR("target.example.org. 7 IN A 10.0.0.9")
		m.Answer = []dns.RR{cname, a}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, o.Do())
		}
		w.WriteMsg(m)
	})
	nc := newTestNodeCache(t, up.addr)
	doors := map[string]string{"packet door": doorFor(t, nc, false), "ServeDNS": serveDNSOver(t, nc)}
	cases := []struct {
		name   string
		edit   func(m *dns.Msg)
		wantAD bool
	}{
		{"plain", nil, false},
		{"EDNS without DO", func(m *dns.Msg) { m.SetEdns0(1232, false) }, false},
		{"DO", func(m *dns.Msg) { m.SetEdns0(1232, true) }, true},
		{"AD asked", func(m *dns.Msg) { m.AuthenticatedData = true }, true},
	}
	for door, addr := range doors {
		for _, tc := range cases {
			t.Run(door+"/"+tc.name, func(t *testing.T) {
				for _, phase := range []string{"first", "again"} {
					r := new(dns.Msg)
					if err := r.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, query("alias.default.svc.cluster.local.", dns.TypeA, tc.edit)))); err != nil {
						t.Fatal(err)
					}
					if r.AuthenticatedData != tc.wantAD {
						t.Errorf("%s: AD %v, want %v", phase, r.AuthenticatedData, tc.wantAD)
					}
					if len(r.Answer) != 2 {
						t.Fatalf("%s: %d answer records, want CNAME and A", phase, len(r.Answer))
					}
					if c, a := r.Answer[0].Header().Ttl, r.Answer[1].Header().Ttl; c > a || a > 7 {
						t.Errorf("%s: CNAME TTL %d, A TTL %d: the CNAME outlives its target", phase, c, a)
					}
				}
			})
		}
	}
}

// The door's own TCP listeners answer through CoreDNS's server (the whole chain), pipelined
// queries on one connection included, as CoreDNS's TCP server would.
func TestDoorServesTCP(t *testing.T) {
	up := startTCPUpstream(t, time.Minute, -1, answerA)
	nc := newTestNodeCache(t, up.addr)
	addr := doorFor(t, nc, false)
	conn, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, name := range []string{"web.default.svc.cluster.local.", "web.default.svc.cluster.local.", "Other.Default.svc.cluster.local."} {
		q := query(name, dns.TypeA, nil)
		q.Id = uint16(100 + i)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatalf("%s over the door's TCP: %v", name, err)
		}
		if r.Id != q.Id || len(r.Answer) != 1 || r.Answer[0].Header().Name != name {
			t.Errorf("%s over TCP: id %d, answer %v", name, r.Id, r.Answer)
		}
	}
}
