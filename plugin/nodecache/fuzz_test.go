package nodecache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary upstream bytes to the cache's wire parser and renders what it
// accepts for a client: never a panic, and a rendered answer always unpacks, carries the client's
// ID and question spelling, and fits the client's size (whole records, TC when answers are cut).
func FuzzAnswer(f *testing.F) {
	seed := new(dns.Msg)
	seed.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
	seed.Response = true
	rr, _ := dns.NewRR("web.ns1.svc.cluster.local. 30 IN A 10.96.0.10")
	seed.Answer = []dns.RR{rr}
	b, _ := seed.Pack()
	f.Add(b, "WEB.ns1.svc.cluster.local.", uint16(512), true)
	f.Add(b[:20], "web.ns1.svc.cluster.local.", uint16(65535), false)
	f.Fuzz(func(t *testing.T, raw []byte, asked string, size uint16, edns bool) {
		want := dns.Question{Name: "web.ns1.svc.cluster.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
		a, ttl, err := parseAnswer(raw, want, 30*time.Second, 5*time.Second)
		if err != nil || a == nil {
			return
		}
		if !strings.EqualFold(asked, want.Name) || len(asked) != len(want.Name) {
			asked = want.Name
		}
		maxSize := int(size)
		if maxSize < 512 {
			maxSize = 512
		}
		out, ok := a.render(nil, reply{id: 0xbeef, qname: asked, rd: true, edns: edns, maxSize: maxSize}, ttl)
		if !ok {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("rendered answer does not unpack: %v", err)
		}
		if m.Id != 0xbeef || len(m.Question) != 1 || m.Question[0].Name != asked {
			t.Fatalf("rendered answer for id %d question %v, want id 0xbeef question %s", m.Id, m.Question, asked)
		}
		if len(out) > maxSize {
			t.Fatalf("%d-byte answer for a client taking %d (TC=%v)", len(out), maxSize, m.Truncated)
		}
		// TC only when answer records were dropped, and then nothing after them is kept.
		if m.Truncated && len(m.Ns)+len(m.Extra) > 0 && !(edns && len(m.Ns) == 0 && len(m.Extra) == 1) {
			t.Fatalf("truncated answer still carries %d authority and %d additional records", len(m.Ns), len(m.Extra))
		}
		if !m.Truncated && len(m.Answer) != a.counts[0] {
			t.Fatalf("%d of %d answer records without TC", len(m.Answer), a.counts[0])
		}
	})
}

// FuzzServeDNS sends arbitrary messages through the handler with a warm cache and a live TCP
// upstream: never a panic, and whatever is written answers the question asked.
func FuzzServeDNS(f *testing.F) {
	for _, name := range []string{"web.default.svc.cluster.local.", "Web.Default.SVC.cluster.local.", "x."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	// One upstream and one transport group per fuzzing process, shared by every input (a fresh
	// cache each): a group per input would leave its connections open for the close grace, and
	// thousands of inputs a second would use up the machine's ephemeral ports.
	up := startTCPUpstream(f, time.Minute, -1, answerA)
	shared := newTestNodeCache(f, up.addr)
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := new(dns.Msg)
		if err := r.Unpack(wire); err != nil || len(r.Question) != 1 {
			return // CoreDNS's server answers these before any plugin
		}
		nc := &NodeCache{config: shared.config, node: &node{cache: newCache(100, 100, 1<<20)}, upstreams: shared.upstreams}
		warm := new(dns.Msg)
		warm.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		nc.ServeDNS(context.Background(), dnstest.NewRecorder(&test.ResponseWriter{}), warm)
		for i := 0; i < 2; i++ { // a miss, then (if cacheable) a hit
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			nc.ServeDNS(context.Background(), rec, r.Copy())
			if rec.Msg == nil {
				continue // an error rcode left to the server to write
			}
			if len(rec.Msg.Question) != 1 || !strings.EqualFold(rec.Msg.Question[0].Name, r.Question[0].Name) || rec.Msg.Id != r.Id {
				t.Fatalf("reply %v (id %d) does not answer %v (id %d)", rec.Msg.Question, rec.Msg.Id, r.Question, r.Id)
			}
		}
	})
}

// FuzzParseStanza: any stanza text parses or fails with an error; never a panic.
func FuzzParseStanza(f *testing.F) {
	f.Add("nodecache {\n listen 169.254.20.10 fd00::a\n upstream tcp 10.96.0.10:53\n success 9984 30\n prefetch 10 1m 10%\n max_memory 256MiB\n}")
	f.Add("nodecache {\nlisten {$LOCAL_IPS}\nupstream udp /etc/resolv.conf\nserve_stale 1h\n}")
	f.Fuzz(func(t *testing.T, input string) {
		parseStanza(caddy.NewTestController("dns", input))
	})
}
