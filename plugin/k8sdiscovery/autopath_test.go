package k8sdiscovery

import (
	"fmt"
	"testing"

	"github.com/coredns/coredns/plugin/autopath"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

var _ autopath.AutoPather = (*K8sDiscovery)(nil)

// AutoPath gives upstream's autopath the asking pod's search path (pods verified), nil otherwise.
func TestAutoPath(t *testing.T) {
	cfg := defaultConfig()
	cfg.podMode = podsVerified
	k, _ := startFake(t, cfg, namespace("ns1"), namespace("ns2"), pod("ns1", "a", "10.1.0.50", corev1.PodRunning),
		pod("ns1", "b", "10.1.0.51", corev1.PodRunning), pod("ns2", "c", "10.1.0.51", corev1.PodRunning))
	k.hostSearch = []string{"corp.example."}
	waitFor(t, "pods", func() bool { return k.AutoPath(stateFrom("10.1.0.50", "web.ns1.svc.cluster.local.")) != nil })

	cases := []struct{ from, qname, want string }{
		{"10.1.0.50", "web.ns1.svc.cluster.local.", "[ns1.svc.cluster.local. svc.cluster.local. cluster.local. corp.example. ]"},
		{"10.1.0.51", "web.ns1.svc.cluster.local.", "[]"}, // two namespaces on one address
		{"10.1.0.99", "web.ns1.svc.cluster.local.", "[]"}, // no pod
		{"10.1.0.50", "example.org.", "[]"},               // outside the zone
		{"10.1.0.50", "5.0.1.10.in-addr.arpa.", "[]"},     // a reverse zone
	}
	for _, c := range cases {
		if got := fmt.Sprint(k.AutoPath(stateFrom(c.from, c.qname))); got != c.want {
			t.Errorf("from %s asking %s: %s, want %s", c.from, c.qname, got, c.want)
		}
	}

	cfg = defaultConfig() // pods not watched: no search path, as upstream
	k2, _ := startFake(t, cfg, namespace("ns1"), pod("ns1", "a", "10.1.0.50", corev1.PodRunning))
	if got := k2.AutoPath(stateFrom("10.1.0.50", "web.ns1.svc.cluster.local.")); got != nil {
		t.Errorf("without pods verified: %v", got)
	}
}

func stateFrom(ip, qname string) request.Request {
	r := new(dns.Msg)
	r.SetQuestion(qname, dns.TypeA)
	return request.Request{W: &test.ResponseWriter{RemoteIP: ip}, Req: r}
}
