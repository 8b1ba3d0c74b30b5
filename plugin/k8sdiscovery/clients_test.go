package k8sdiscovery

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterdns/clusterdns/internal/kube"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// Pods watched only for searchpath's client index are not DNS data: they do not bump the serial,
// and they are kept in every namespace even with a namespaces filter.
func TestPodsForTheClientIndex(t *testing.T) {
	cfg := defaultConfig()
	cfg.podMode = podsInsecure
	cfg.namespaces = map[string]bool{"ns1": true}
	client := fakeClient(namespace("ns1"), namespace("kube-system"), pod("kube-system", "a", "10.1.0.50", corev1.PodRunning))
	cfg.zones = []string{"cluster.local.", "in-addr.arpa."}
	k := newK8sDiscovery(cfg)
	k.WatchPods()
	startWithClient(t, k, client)
	if got := k.PodsByIP("10.1.0.50"); len(got) != 1 || got[0].Namespace != "kube-system" {
		t.Fatalf("PodsByIP = %v, want the kube-system pod", got)
	}
	eventually(t, k, "10-1-0-50.kube-system.pod.cluster.local.", dns.TypeA, "NXDOMAIN") // filtered namespace
	serial, changes := k.store.soaSerial(), k.store.changeCount()
	if _, err := client.CoreV1().Pods("ns1").Create(context.Background(), pod("ns1", "b", "10.1.0.51", corev1.PodRunning), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new pod in the client index", func() bool { return len(k.PodsByIP("10.1.0.51")) == 1 })
	if k.store.changeCount() != changes || k.store.soaSerial() != serial {
		t.Fatal("a pod that no record names bumped the serial")
	}
	// The operator's annotation reaches searchpath through the index.
	p := pod("ns1", "b", "10.1.0.51", corev1.PodRunning)
	p.Annotations = map[string]string{kube.SearchPathAnnotation: "off"}
	if _, err := client.CoreV1().Pods("ns1").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the annotation in the client index", func() bool {
		got := k.PodsByIP("10.1.0.51")
		return len(got) == 1 && got[0].NoExpansion
	})
}
