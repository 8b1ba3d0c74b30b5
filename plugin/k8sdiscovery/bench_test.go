package k8sdiscovery

import (
	"context"
	"fmt"
	"testing"

	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/runtime"
)

// discardWriter drops answers, so that the benchmarks measure the plugin and not a recorder.
type discardWriter struct{ *test.ResponseWriter }

func (discardWriter) WriteMsg(*dns.Msg) error { return nil }

// BenchmarkServeDNS measures the query path on an index of 1,000 services (100 headless ones with
// 100 ready endpoints each). Run: go test -run x -bench ServeDNS -benchmem ./plugin/k8sdiscovery/
func BenchmarkServeDNS(b *testing.B) {
	objs := []runtime.Object{namespace("ns1")}
	for i := 0; i < 900; i++ {
		objs = append(objs, clusterIPService("ns1", fmt.Sprintf("web%d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)))
	}
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("db%d", i)
		eps := make([]ep, 100)
		for j := range eps {
			eps[j] = ep{ip: fmt.Sprintf("10.%d.%d.%d", 100+i/50, i%50, j+1)}
		}
		objs = append(objs, headlessService("ns1", name), slice("ns1", name, name+"-a", 5432, eps...))
	}
	cfg := defaultConfig()
	cfg.zones = []string{"cluster.local.", "in-addr.arpa."}
	k := newK8sDiscovery(cfg)
	startWithClient(b, k, fakeClient(objs...))

	cases := []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"ClusterIP_A", "web500.ns1.svc.cluster.local.", dns.TypeA},
		{"Headless_A_100_endpoints", "db50.ns1.svc.cluster.local.", dns.TypeA},
		{"SRV_named", "_http._tcp.web500.ns1.svc.cluster.local.", dns.TypeSRV},
		{"PTR", "1.2.96.10.in-addr.arpa.", dns.TypePTR},
		{"NXDOMAIN", "nope.ns1.svc.cluster.local.", dns.TypeA},
	}
	ctx := context.Background()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := new(dns.Msg)
			r.SetQuestion(c.qname, c.qtype)
			w := discardWriter{&test.ResponseWriter{}}
			if rcode, err := k.ServeDNS(ctx, w, r); err != nil || rcode != dns.RcodeSuccess {
				b.Fatalf("rcode %d err %v", rcode, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k.ServeDNS(ctx, w, r)
			}
		})
	}
}
