package nodecache

import (
	"bytes"
	"context"
	"fmt"
	"github.com/coredns/coredns/plugin"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// slowServer runs nc behind a miekg/dns UDP server, as CoreDNS's server runs it, and returns a
// function that sends a query's bytes and returns the answer's bytes: the slow path.
func slowServer(t *testing.T, nc *NodeCache) func(q []byte) []byte {
	pc := mustListenUDP(t)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		nc.ServeDNS(context.Background(), dnstest.NewRecorder(w), r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return func(q []byte) []byte {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(q)
		b := make([]byte, 65535)
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return b[:n]
	}
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

// fastRouteFor routes every name to nc on the fast path.
func fastRouteFor(nc *NodeCache) *fastRoute {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "y"})
	return &fastRoute{label: "dns://test", zones: []fastZone{{name: ".", nc: nc, hitSuccess: c, hitDenial: c, truncated: c, misses: c, inFlight: g}}}
}

// The fast path answers byte for byte what the slow path (ServeDNS on a UDP client connection)
// writes: ID, the question's case, TTL counting down, OPT only for EDNS clients, DO, CD, RD,
// AD, and TC when the answer exceeds the client's UDP size.
func TestFastPathMatchesSlowPath(t *testing.T) {
	nc := newTestNodeCache(t, "127.0.0.1:1")
	stored := time.Now().Add(-2 * time.Second)
	small := msgFor("web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "web.default.svc.cluster.local. 30 IN A 10.0.0.1")
	small.AuthenticatedData = true
	big := msgFor("big.cluster.local.", dns.TypeA, dns.RcodeSuccess)
	for i := range 40 {
		rr, _ := dns.NewRR(fmt.Sprintf("big.cluster.local. 30 IN A 10.0.%d.%d", i/250, i%250))
		big.Answer = append(big.Answer, rr)
	}
	denial := msgFor("gone.cluster.local.", dns.TypeAAAA, dns.RcodeNameError, "cluster.local. 60 IN SOA ns. host. 1 2 3 4 5")
	for _, m := range []*dns.Msg{small, big, denial} {
		for _, do := range []bool{false, true} {
			a, ttl, err := cacheable(m, 30*time.Second, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			q := m.Question[0]
			nc.node.cache.put(newCacheKey(q.Name, q.Qtype, q.Qclass, do, false), q.Name, a, ttl, 0, stored)
		}
	}
	rt := fastRouteFor(nc)
	ask := slowServer(t, nc)
	cases := []struct {
		name string
		q    *dns.Msg
		tc   bool
	}{
		{"plain, mixed case", query("Web.DEFAULT.svc.Cluster.local.", dns.TypeA, nil), false},
		{"EDNS", query("web.default.svc.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, false) }), false},
		{"EDNS DO, AD asked", query("WEB.default.svc.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true); m.AuthenticatedData = true }), false},
		{"no RD, CD", query("web.default.svc.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true }), false},
		{"denial", query("Gone.cluster.local.", dns.TypeAAAA, nil), false},
		{"denial EDNS", query("gone.cluster.local.", dns.TypeAAAA, func(m *dns.Msg) { m.SetEdns0(1232, false) }), false},
		{"big, no EDNS: TC", query("big.cluster.local.", dns.TypeA, nil), true},
		{"big, EDNS 256 (512 applies): TC", query("big.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(256, false) }), true},
		{"big, EDNS 1232: fits", query("big.cluster.local.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false) }), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.q.CheckingDisabled {
				// CD is part of the key: store it under that key too.
				a, ttl, _ := cacheable(small, 30*time.Second, 5*time.Second)
				nc.node.cache.put(newCacheKey(small.Question[0].Name, dns.TypeA, dns.ClassINET, false, true), small.Question[0].Name, a, ttl, 0, stored)
			}
			p, err := tc.q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			var fq fastQuery
			fast, verdict, _ := answerFast(rt, nc.node.cache, p, &fq, nil, time.Now())
			if verdict != fastAnswered {
				t.Fatal("fast path did not answer a hit")
			}
			if slow := ask(p); !bytes.Equal(fast, slow) {
				t.Fatalf("fast and slow answers differ:\nfast %x\nslow %x", fast, slow)
			}
			m := new(dns.Msg)
			if err := m.Unpack(fast); err != nil {
				t.Fatal(err)
			}
			check(t, "id", m.Id, uint16(0xbeef))
			check(t, "question as asked", m.Question[0].Name, tc.q.Question[0].Name)
			check(t, "TC", m.Truncated, tc.tc)
			check(t, "OPT iff asked", m.IsEdns0() != nil, tc.q.IsEdns0() != nil)
			for _, rr := range append(m.Answer, m.Ns...) {
				want := uint32(28) // 30 stored 2 s ago
				if rr.Header().Rrtype == dns.TypeSOA {
					want = 3 // the denial cap, 5
				}
				if ttl := rr.Header().Ttl; ttl != want {
					t.Errorf("TTL %d on %s: not counted down from the cached one", ttl, rr.Header().Name)
				}
			}
		})
	}
}

// What the fast path leaves to the normal CoreDNS path.
func TestFastPathDeclines(t *testing.T) {
	nc := newTestNodeCache(t, "127.0.0.1:1")
	name := "web.default.svc.cluster.local."
	a, ttl, _ := cacheable(msgFor(name, dns.TypeA, dns.RcodeSuccess, name+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	nc.node.cache.put(newCacheKey(name, dns.TypeA, dns.ClassINET, false, false), name, a, ttl, 0, time.Now())
	nc.node.cache.put(newCacheKey(name, dns.TypeA, dns.ClassINET, true, false), name, a, ttl, 0, time.Now())
	expired := "old.cluster.local."
	b, _, _ := cacheable(msgFor(expired, dns.TypeA, dns.RcodeSuccess, expired+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	nc.node.cache.put(newCacheKey(expired, dns.TypeA, dns.ClassINET, false, false), expired, b, 1, time.Hour, time.Now().Add(-2*time.Second))

	pack := func(m *dns.Msg) []byte {
		p, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	hit := pack(query(name, dns.TypeA, nil))
	cases := map[string][]byte{
		"miss":            pack(query("other.cluster.local.", dns.TypeA, nil)),
		"expired (stale)": pack(query(expired, dns.TypeA, nil)),
		"response":        pack(query(name, dns.TypeA, func(m *dns.Msg) { m.Response = true })),
		"opcode NOTIFY":   pack(query(name, dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })),
		"class CH":        pack(query(name, dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })),
		"EDNS option": pack(query(name, dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
		})),
		"EDNS version 1":  pack(query(name, dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) })),
		"two questions":   pack(query(name, dns.TypeA, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) })),
		"an extra record": pack(query(name, dns.TypeA, func(m *dns.Msg) { rr, _ := dns.NewRR("x. 0 IN TXT x"); m.Extra = append(m.Extra, rr) })),
		"DS":              pack(query(name, dns.TypeDS, nil)),
		"escaped name":    pack(query(`we\.b.cluster.local.`, dns.TypeA, nil)),
		"root":            pack(query(".", dns.TypeNS, nil)),
		"short":           hit[:11],
		"trailing byte":   append(append([]byte(nil), hit...), 0),
		"TC set":          pack(query(name, dns.TypeA, func(m *dns.Msg) { m.Truncated = true })),
		"compressed name": append(append(append([]byte(nil), hit[:12]...), 0xC0, 12), hit[len(hit)-4:]...),
	}
	rt := fastRouteFor(nc)
	var q fastQuery
	if _, v, _ := answerFast(rt, nc.node.cache, hit, &q, nil, time.Now()); v != fastAnswered {
		t.Fatal("the hit itself is not answered")
	}
	for what, p := range cases {
		want := fastSlow
		if what == "miss" {
			want = fastMiss // asked upstream on the fast path
		}
		if _, v, _ := answerFast(rt, nc.node.cache, p, &q, nil, time.Now()); v != want {
			t.Errorf("%s: verdict %d, want %d", what, v, want)
		}
	}
	// A zone the server routes elsewhere (another plugin's block): not answered.
	rt.zones = append([]fastZone{{name: "default.svc.cluster.local."}}, rt.zones...)
	if _, v, _ := answerFast(rt, nc.node.cache, hit, &q, nil, time.Now()); v == fastAnswered {
		t.Error("answered a name of a zone without a fast-path block")
	}
	if _, v, _ := answerFast(nil, nc.node.cache, hit, &q, nil, time.Now()); v == fastAnswered {
		t.Error("answered without a route")
	}
}

// The fast path's hash of the wire name is the cache key's hash of the presentation name.
func TestFastQueryHash(t *testing.T) {
	for _, name := range []string{"a.", "Web.Default.SVC.cluster.local.", "_dns._udp.x-y.example.", "1.0.0.10.in-addr.arpa."} {
		p, _ := query(name, dns.TypeA, nil).Pack()
		var q fastQuery
		if !parseFastQuery(p, &q) {
			t.Fatalf("%s: not parsed", name)
		}
		check(t, name+" hash", q.hash, newCacheKey(name, dns.TypeA, dns.ClassINET, false, false).hash)
		check(t, name+" lower", string(q.name()), string(bytes.ToLower([]byte(name))))
	}
}

func TestInZone(t *testing.T) {
	for _, c := range []struct {
		name, zone string
		in         bool
	}{
		{"a.cluster.local.", "cluster.local.", true},
		{"cluster.local.", "cluster.local.", true},
		{"acluster.local.", "cluster.local.", false},
		{"local.", "cluster.local.", false},
		{"x.", ".", true},
	} {
		check(t, c.name+" in "+c.zone, inZone([]byte(c.name), c.zone), c.in)
	}
}

// The fast path reads the server's zones, PROXY protocol policy and allowed opcodes by
// reflection: this breaks when an upgrade of CoreDNS renames them.
func TestServerFieldsReadable(t *testing.T) {
	cfg := &dnsserver.Config{Zone: "cluster.local.", Port: "1053", ListenHosts: []string{"127.0.0.1"}}
	s, err := dnsserver.NewServer("dns://127.0.0.1:1053", []*dnsserver.Config{cfg})
	if err != nil {
		t.Fatal(err)
	}
	zones, ok := serverZones(s)
	check(t, "zones readable", ok, true)
	check(t, "zones", fmt.Sprint(zones), "map[cluster.local.:1]")
	check(t, "plain server", serverPlain(s), true)
	check(t, "zones field type", reflect.ValueOf(s).Elem().FieldByName("zones").Type().String(), "map[string][]*dnsserver.Config")
}

func BenchmarkAnswerFast(b *testing.B) {
	nc := &NodeCache{config: defaultConfig(), node: &node{cache: newCache(100, 100, 1<<20)}}
	name := "web.default.svc.cluster.local."
	a, ttl, _ := cacheable(msgFor(name, dns.TypeA, dns.RcodeSuccess, name+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	nc.node.cache.put(newCacheKey(name, dns.TypeA, dns.ClassINET, false, false), name, a, ttl, 0, time.Now())
	p, _ := query(name, dns.TypeA, nil).Pack()
	rt := fastRouteFor(nc)
	buf := make([]byte, 0, 2048)
	var q fastQuery
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, v, _ := answerFast(rt, nc.node.cache, p, &q, buf, now); v != fastAnswered {
			b.Fatal("no hit")
		}
	}
}

type namedHandler struct {
	plugin.Handler
	name     string
	rewriter bool
}

func (h namedHandler) Name() string               { return h.name }
func (h namedHandler) RewritesOnlyNXDOMAIN() bool { return h.rewriter }

func TestHandlersAllowFastPath(t *testing.T) {
	nc := namedHandler{name: pluginName}
	tests := []struct {
		name         string
		above        []plugin.Handler
		ok, nxdomain bool
	}{
		{"nothing above", nil, true, false},
		{"passive plugins above", []plugin.Handler{namedHandler{name: "errors"}, namedHandler{name: "log"}}, true, false},
		{"searchpath above: NXDOMAIN hits go through it", []plugin.Handler{namedHandler{name: "errors"}, namedHandler{name: "searchpath", rewriter: true}}, true, true},
		{"a plugin that rewrites answers above", []plugin.Handler{namedHandler{name: "rewrite"}}, false, false},
		{"searchpath and a rewriting plugin above", []plugin.Handler{namedHandler{name: "searchpath", rewriter: true}, namedHandler{name: "acl"}}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, nxdomain, why := handlersAllowFastPath(append(tc.above, nc, namedHandler{name: "after"}))
			if ok != tc.ok || nxdomain != tc.nxdomain {
				t.Fatalf("ok=%v nxdomainSlow=%v (%s), want ok=%v nxdomainSlow=%v", ok, nxdomain, why, tc.ok, tc.nxdomain)
			}
		})
	}
}

// With searchpath above, an NXDOMAIN hit is left to the chain (searchpath turns it into the
// pod's search-list answer); a positive hit is answered on the fast path as before.
func TestFastPathLeavesNXDOMAINToSearchpath(t *testing.T) {
	nc := newTestNodeCache(t, "127.0.0.1:1")
	name, missing := "web.default.svc.cluster.local.", "example.com.default.svc.cluster.local."
	a, ttl, _ := cacheable(msgFor(name, dns.TypeA, dns.RcodeSuccess, name+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	nc.node.cache.put(newCacheKey(name, dns.TypeA, dns.ClassINET, false, false), name, a, ttl, 0, time.Now())
	nx := msgFor(missing, dns.TypeA, dns.RcodeNameError)
	soa, _ := dns.NewRR("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5")
	nx.Ns = []dns.RR{soa}
	d, dttl, err := cacheable(nx, 30*time.Second, 5*time.Second)
	if err != nil || d == nil {
		t.Fatalf("NXDOMAIN not cacheable: %v", err)
	}
	nc.node.cache.put(newCacheKey(missing, dns.TypeA, dns.ClassINET, false, false), missing, d, dttl, 0, time.Now())

	rt := fastRouteFor(nc)
	hit, _ := query(name, dns.TypeA, nil).Pack()
	nxq, _ := query(missing, dns.TypeA, nil).Pack()
	var q fastQuery
	if _, v, _ := answerFast(rt, nc.node.cache, nxq, &q, nil, time.Now()); v != fastAnswered {
		t.Fatal("without searchpath above, the NXDOMAIN hit should be answered on the fast path")
	}
	rt.zones[0].nxdomainSlow = true
	if _, v, _ := answerFast(rt, nc.node.cache, nxq, &q, nil, time.Now()); v == fastAnswered {
		t.Error("NXDOMAIN hit answered on the fast path with searchpath above")
	}
	if _, v, _ := answerFast(rt, nc.node.cache, hit, &q, nil, time.Now()); v != fastAnswered {
		t.Error("positive hit not answered on the fast path with searchpath above")
	}
}
