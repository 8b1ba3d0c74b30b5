package k8sdiscovery

import (
	"context"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/metadata"
	corev1 "k8s.io/api/core/v1"
)

var _ metadata.Provider = (*K8sDiscovery)(nil)

// The metadata labels are upstream's, with the values a query for each kind of name gives.
func TestMetadata(t *testing.T) {
	cfg := defaultConfig()
	cfg.podMode = podsVerified
	cfg.zonal = true
	k, _ := startFake(t, cfg, namespace("ns1"), pod("ns1", "client-1", "10.1.0.50", corev1.PodRunning))
	waitFor(t, "the pod", func() bool { ns, _ := k.clientPod(mustParseAddr("10.1.0.50")); return ns == "ns1" })

	cases := []struct {
		qname string
		want  map[string]string
	}{
		{"web.ns1.svc.cluster.local.", map[string]string{"kubernetes/kind": "svc", "kubernetes/namespace": "ns1", "kubernetes/service": "web",
			"kubernetes/endpoint": "", "kubernetes/client-namespace": "ns1", "kubernetes/client-pod-name": "client-1"}},
		{"db-0.db.ns1.svc.cluster.local.", map[string]string{"kubernetes/service": "db", "kubernetes/endpoint": "db-0"}},
		{"_http._tcp.web.ns1.svc.cluster.local.", map[string]string{"kubernetes/port-name": "http", "kubernetes/protocol": "tcp", "kubernetes/service": "web"}},
		{"10-1-0-9.ns1.pod.cluster.local.", map[string]string{"kubernetes/kind": "pod", "kubernetes/namespace": "ns1", "kubernetes/endpoint": "10-1-0-9"}},
		{"a.b.c.d.e.svc.cluster.local.", map[string]string{"kubernetes/parse-error": "more labels than the schema has"}},
		{"us-west-2a.pin._zone.db.ns1.svc.cluster.local.", map[string]string{"kubernetes/zone": "us-west-2a", "kubernetes/service": "db", "kubernetes/namespace": "ns1"}},
		{"example.org.", map[string]string{"kubernetes/kind": "", "kubernetes/client-pod-name": "client-1"}},
	}
	for _, c := range cases {
		expectMetadata(t, k, "10.1.0.50", c.qname, c.want)
	}
	ctx := k.Metadata(metadata.ContextWithMetadata(context.Background()), stateFrom("10.1.0.99", "web.ns1.svc.cluster.local."))
	if f := metadata.ValueFunc(ctx, "kubernetes/client-namespace"); f != nil {
		t.Errorf("an address without a pod has client-namespace %q", f())
	}
}

func mustParseAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// expectMetadata asks for qname from addr and checks the labels set (a label not set reads "").
func expectMetadata(t *testing.T, k *K8sDiscovery, addr, qname string, want map[string]string) {
	t.Helper()
	ctx := k.Metadata(metadata.ContextWithMetadata(context.Background()), stateFrom(addr, qname))
	for key, w := range want {
		got := ""
		if f := metadata.ValueFunc(ctx, key); f != nil {
			got = f()
		}
		if got != w {
			t.Errorf("%s: %s = %q, want %q", qname, key, got, w)
		}
	}
}
