package nodecache

import (
	"fmt"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/miekg/dns"
)

func msgFor(qname string, qtype uint16, rcode int, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Response, m.Rcode, m.Compress = true, rcode, true
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	m.SetEdns0(1232, false)
	return m
}

func TestCacheable(t *testing.T) {
	soa := "cluster.local. 60 IN SOA ns.cluster.local. h.cluster.local. 1 7200 1800 86400 3"
	tests := []struct {
		name   string
		msg    *dns.Msg
		ttl    uint32
		denial bool
	}{
		{"success capped at 30s", msgFor("a.cluster.local.", dns.TypeA, dns.RcodeSuccess, "a.cluster.local. 300 IN A 10.0.0.1"), 30, false},
		{"success under the cap keeps its TTL", msgFor("a.cluster.local.", dns.TypeA, dns.RcodeSuccess, "a.cluster.local. 7 IN A 10.0.0.1", "a.cluster.local. 20 IN A 10.0.0.2"), 7, false},
		{"NXDOMAIN from the SOA minimum", msgFor("x.cluster.local.", dns.TypeA, dns.RcodeNameError, soa), 3, true},
		{"NODATA capped at 5s", msgFor("a.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, "cluster.local. 60 IN SOA ns.cluster.local. h.cluster.local. 1 7200 1800 86400 60"), 5, true},
		{"denial without SOA not cached", msgFor("x.cluster.local.", dns.TypeA, dns.RcodeNameError), 0, true},
		{"SERVFAIL not cached", msgFor("x.cluster.local.", dns.TypeA, dns.RcodeServerFailure), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, ttl, err := cacheable(tc.msg, 30*time.Second, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "ttl", ttl, tc.ttl)
			if ttl > 0 {
				check(t, "denial", a.denial, tc.denial)
			}
		})
	}
}

func TestCacheLifetime(t *testing.T) {
	now := time.Now()
	a, ttl, _ := cacheable(msgFor("web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "web.default.svc.cluster.local. 10 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	c := newCache(100, 100, 1<<20)
	k := newCacheKey([]byte("web.default.svc.cluster.local."), dns.TypeA, dns.ClassINET, false, false)
	c.put(k, "web.default.svc.cluster.local.", a, ttl, time.Minute, now)

	tests := []struct {
		name      string
		qname     string
		at        time.Duration
		found     bool
		remaining uint32
	}{
		{"fresh", "web.default.svc.cluster.local.", time.Second, true, 9},
		{"other case, same entry", "WEB.Default.svc.cluster.local.", time.Second, true, 9},
		{"expired, inside the stale window", "web.default.svc.cluster.local.", 30 * time.Second, true, 0},
		{"past the stale window", "web.default.svc.cluster.local.", 2 * time.Minute, false, 0},
		{"gone once past the window", "web.default.svc.cluster.local.", time.Second, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lower := []byte(dns.CanonicalName(tc.qname))
			k := newCacheKey(lower, dns.TypeA, dns.ClassINET, false, false)
			e := c.get(k, lower, now.Add(tc.at))
			check(t, "found", e != nil, tc.found)
			if e != nil {
				check(t, "remaining", e.remaining(now.Add(tc.at)), tc.remaining)
			}
		})
	}
}

func TestCacheBounds(t *testing.T) {
	tests := []struct {
		name            string
		success, denial int
		memory          int64
		puts            int
		wantMaxEntries  int
		wantMaxBytes    int64
	}{
		{"entry capacity", 32, 32, 1 << 30, 1000, 32, 1 << 30},
		{"memory bound", 100000, 100000, 16 * 2048, 1000, 100000, 16 * 2048},
		{"denial bound, success plenty", 100000, 32, 1 << 30, 1000, 100000, 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(tc.success, tc.denial, tc.memory)
			now := time.Now()
			for i := range tc.puts {
				name := fmt.Sprintf("n%d.cluster.local.", i)
				m := msgFor(name, dns.TypeA, dns.RcodeSuccess, name+" 30 IN A 10.0.0.1")
				if i%2 == 1 {
					m = msgFor(name, dns.TypeA, dns.RcodeNameError, "cluster.local. 5 IN SOA ns. host. 1 2 3 4 5")
				}
				a, ttl, _ := cacheable(m, 30*time.Second, 5*time.Second)
				c.put(newCacheKey([]byte(name), dns.TypeA, dns.ClassINET, false, false), name, a, ttl, 0, now)
			}
			success, denial, bytes := c.counts()
			check(t, "success within bound", success <= tc.wantMaxEntries, true)
			check(t, "denial within bound", denial <= min(tc.denial, tc.wantMaxEntries), true)
			check(t, "bytes within bound", bytes <= tc.wantMaxBytes, true)
			check(t, "cache not empty", success > 0, true)
			for i := range c.shards {
				s := &c.shards[i]
				check(t, "every entry listed once", len(s.kinds[0])+len(s.kinds[1]), len(s.items))
				for kind, list := range s.kinds {
					for slot, l := range list {
						if e := l.e; e.slot != slot || kindOf(e) != kind || s.items[e.key] != e {
							t.Fatalf("shard %d: entry %s at %d/%d records slot %d", i, e.qname, kind, slot, e.slot)
						}
					}
				}
			}
		})
	}
}

func TestRender(t *testing.T) {
	big := msgFor("big.cluster.local.", dns.TypeA, dns.RcodeSuccess)
	for i := range 40 {
		rr, _ := dns.NewRR(fmt.Sprintf("big.cluster.local. 30 IN A 10.0.%d.%d", i/250, i%250))
		big.Answer = append(big.Answer, rr)
	}
	// The same answer as CoreDNS sends it over TCP: uncompressed.
	bigPlain := big.Copy()
	bigPlain.Compress = false
	small := msgFor("web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, "web.default.svc.cluster.local. 30 IN A 10.0.0.1")
	small.Authoritative = true
	// Three SRV records whose glue (every address of each target) does not fit in 512 bytes.
	srv := msgFor("_http._tcp.db.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess)
	for i := range 3 {
		target := fmt.Sprintf("db-%d.db.default.svc.cluster.local.", i)
		rr, _ := dns.NewRR(fmt.Sprintf("_http._tcp.db.default.svc.cluster.local. 30 IN SRV 0 33 80 %s", target))
		srv.Answer = append(srv.Answer, rr)
		for j := range 12 {
			glue, _ := dns.NewRR(fmt.Sprintf("%s 30 IN AAAA fd00::%d:%d", target, i, j))
			srv.Extra = append(srv.Extra, glue)
		}
	}

	tests := []struct {
		name    string
		msg     *dns.Msg
		client  reply
		ttl     uint32
		tc      bool
		answers int
		edns    bool
	}{
		{"ID, case and TTL patched", small, reply{id: 4242, qname: "Web.DEFAULT.svc.cluster.local.", rd: true, maxSize: 512}, 17, false, 1, false},
		{"EDNS client gets an OPT", small, reply{id: 1, qname: "web.default.svc.cluster.local.", edns: true, maxSize: 1232}, 30, false, 1, true},
		// RFC 2181 9: the whole records that fit, TC because answer records were dropped.
		{"too big for 512 bytes: the addresses that fit, TC", big, reply{id: 7, qname: "big.cluster.local.", maxSize: 512}, 30, true, 29, false},
		{"an uncompressed upstream answer is kept compressed: as many addresses fit", bigPlain, reply{id: 7, qname: "big.cluster.local.", maxSize: 512}, 30, true, 29, false},
		{"and the whole of it in 1232 bytes", bigPlain, reply{id: 7, qname: "big.cluster.local.", edns: true, maxSize: 1232}, 30, false, 40, true},
		{"glue that does not fit is dropped, no TC", srv, reply{id: 7, qname: "_http._tcp.db.default.svc.cluster.local.", maxSize: 512}, 30, false, 3, false},
		{"EDNS 600 bytes: answers kept, no TC", srv, reply{id: 7, qname: "_http._tcp.db.default.svc.cluster.local.", edns: true, maxSize: 600}, 30, false, 3, true},
		{"fits the EDNS size", big, reply{id: 7, qname: "big.cluster.local.", edns: true, maxSize: 1232}, 30, false, 40, true},
		{"TCP takes it all", big, reply{id: 7, qname: "big.cluster.local.", maxSize: dns.MaxMsgSize}, 30, false, 40, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _, err := cacheable(tc.msg, 30*time.Second, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out, ok := a.render(nil, tc.client, tc.ttl)
			check(t, "rendered", ok, true)
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatalf("unpack rendered answer: %v", err)
			}
			check(t, "id", m.Id, tc.client.id)
			check(t, "question as asked", m.Question[0].Name, tc.client.qname)
			check(t, "TC", m.Truncated, tc.tc)
			check(t, "AA cleared, RA set", []bool{m.Authoritative, m.RecursionAvailable, m.RecursionDesired}, []bool{false, true, tc.client.rd})
			check(t, "answers", len(m.Answer), tc.answers)
			check(t, "OPT", m.IsEdns0() != nil, tc.edns)
			check(t, "size within the client's", len(out) <= tc.client.maxSize, true)
			if tc.answers == len(tc.msg.Answer) && len(out) < len(a.wire) {
				check(t, "additional records dropped when they do not fit", len(m.Extra) < len(tc.msg.Extra)+1, true)
			}
			for _, rr := range m.Answer {
				check(t, "ttl", rr.Header().Ttl, tc.ttl)
			}
		})
	}
}

func TestParseAnswerRejects(t *testing.T) {
	want := dns.Question{Name: "web.cluster.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	good := msgFor("web.cluster.local.", dns.TypeA, dns.RcodeSuccess, "web.cluster.local. 30 IN A 10.0.0.1")
	pack := func(m *dns.Msg) []byte { b, _ := m.Pack(); return b }
	optFirst := good.Copy()
	glue, _ := dns.NewRR("ns.cluster.local. 30 IN A 10.0.0.9")
	optFirst.Extra = append(optFirst.Extra, glue) // OPT, then a record
	query := good.Copy()
	query.Response = false
	tests := []struct {
		name string
		raw  []byte
		err  error
	}{
		{"answer to another name", pack(msgFor("other.cluster.local.", dns.TypeA, dns.RcodeSuccess)), errNotAnswer},
		{"a query, not a response", pack(query), errNotAnswer},
		{"cut short", pack(good)[:30], errBadWire},
		{"OPT before another record: repacked", pack(optFirst), nil},
		{"good", pack(good), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseAnswer(tc.raw, want, 30*time.Second, 5*time.Second)
			check(t, "error", err, tc.err)
		})
	}
}

// A put on a full cache (the miss path once the cache is warm) and how well eviction keeps the
// entries with the most TTL left.
func BenchmarkCachePutFull(b *testing.B) {
	c := newCache(9984, 9984, 64<<20)
	now := time.Now()
	names := make([]string, 200000)
	for i := range names {
		names[i] = fmt.Sprintf("m%d-bench.bench.svc.cluster.local.", i)
	}
	a, _, _ := cacheable(msgFor(names[0], dns.TypeA, dns.RcodeSuccess, names[0]+" 30 IN A 10.0.0.1"), 30*time.Second, 5*time.Second)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		n := names[i%len(names)]
		i++
		// TTLs spread over 1-30 s: the victim should be among the soonest to expire.
		c.put(newCacheKey([]byte(n), dns.TypeA, dns.ClassINET, false, false), n, a, uint32(1+i%30), 0, now)
	}
	var sum, cnt float64
	for s := range c.shards {
		for _, l := range c.shards[s].kinds[0] {
			sum += float64(l.expires-now.UnixNano()) / 1e9
			cnt++
		}
	}
	b.ReportMetric(sum/cnt, "mean-ttl-left-s")
}

// A UDP answer is at most the client's EDNS size and never more than 1232 bytes; 512 without EDNS.
func TestUDPSize(t *testing.T) {
	for _, tc := range []struct{ asked, want int }{{0, 512}, {512, 512}, {700, 700}, {1232, 1232}, {4096, 1232}, {65535, 1232}} {
		check(t, fmt.Sprintf("client size %d", tc.asked), door.UDPSize(tc.asked), tc.want)
	}
	big := msgFor("big.cluster.local.", dns.TypeA, dns.RcodeSuccess)
	for i := range 200 {
		rr, _ := dns.NewRR(fmt.Sprintf("big.cluster.local. 30 IN A 10.0.%d.%d", i/250, i%250))
		big.Answer = append(big.Answer, rr)
	}
	a, _, err := cacheable(big, 30*time.Second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("big.cluster.local.", dns.TypeA)
	q.SetEdns0(4096, false)
	b, _ := q.Pack()
	var fq door.Query
	if !door.ParseQuery(b, &fq) {
		t.Fatal("a plain EDNS query not taken by the door")
	}
	out, _ := a.render(nil, replyTo(&fq), 30)
	check(t, "answer for a client advertising 4096 bytes", len(out) <= 1232, true)
}
