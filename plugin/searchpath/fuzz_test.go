package searchpath

import (
	"context"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// FuzzExpansion asks arbitrary names from a pod with arbitrary extra search domains: never a
// panic, the question is always kept, and a synthesized CNAME always starts at the asked name.
func FuzzExpansion(f *testing.F) {
	f.Add("example.com.ns1.svc.cluster.local.", "custom.example", uint16(dns.TypeA))
	f.Add("web.ns1.ns1.svc.cluster.local.", "", uint16(dns.TypeAAAA))
	f.Add("ns1.svc.cluster.local.", "..", uint16(dns.TypeSRV))
	f.Fuzz(func(t *testing.T, qname, searches string, qtype uint16) {
		if _, ok := dns.IsDomainName(qname); !ok {
			return
		}
		qname = dns.Fqdn(qname)
		p := clientPod("ns1", "10.1.0.50", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: strings.Split(searches, ",")}
		})
		s := &SearchPath{Next: nextHandler, config: config{zones: []string{"."}, clusterDomain: "cluster.local"},
			hostSearches: []string{"corp.example"}, pods: pods{p}, resolver: newWorld()}
		r := new(dns.Msg)
		r.SetQuestion(qname, qtype)
		rec := dnstest.NewRecorder(&clientWriter{ip: "10.1.0.50"})
		s.ServeDNS(context.Background(), rec, r)
		if rec.Msg == nil || len(rec.Msg.Question) != 1 || rec.Msg.Question[0] != r.Question[0] {
			t.Fatalf("question not kept: %v", rec.Msg)
		}
		// A synthesized CNAME comes first and starts at the asked name.
		if len(rec.Msg.Answer) > 0 {
			if h := rec.Msg.Answer[0].Header(); h.Rrtype == dns.TypeCNAME && h.Name != qname {
				t.Fatalf("CNAME from %s, want from %s", h.Name, qname)
			}
		}
	})
}

// FuzzParseStanza: any stanza text parses or fails with an error; never a panic.
func FuzzParseStanza(f *testing.F) {
	f.Add("searchpath cluster.local {\n node_name n1\n resolv_conf /etc/resolv.conf\n}")
	f.Add("searchpath {\nsource k8sdiscovery\n}")
	f.Fuzz(func(t *testing.T, input string) {
		parseStanza(caddy.NewTestController("dns", input))
	})
}
