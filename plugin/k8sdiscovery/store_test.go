package k8sdiscovery

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/miekg/dns"
)

func TestSerialBumpsOnlyOnDNSChanges(t *testing.T) {
	ctx := context.Background()
	cfg := defaultConfig()
	cfg.podMode = podsVerified
	p := pod("ns1", "a", "10.1.0.50", corev1.PodRunning)
	k, client := startFake(t, cfg, namespace("ns1"), p)
	eventually(t, k, "10-1-0-50.ns1.pod.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.50")
	before, changes := k.store.soaSerial(), k.store.changeCount()

	// status churn that DNS does not see: a condition flips
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	if _, err := client.CoreV1().Pods("ns1").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	marker := pod("ns1", "b", "10.1.0.51", corev1.PodRunning)
	if _, err := client.CoreV1().Pods("ns1").Create(ctx, marker, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "10-1-0-51.ns1.pod.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.51")
	// the churn and the new pod were processed in order; only the new pod changed DNS data
	if got := k.store.changeCount(); got != changes+1 {
		t.Fatalf("%d DNS changes after a status churn and one new pod, want 1", got-changes)
	}
	if k.store.soaSerial() == before {
		t.Fatal("serial unchanged after a new pod record")
	}
	mid := k.store.soaSerial()
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := client.CoreV1().Pods("ns1").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Pods("ns1").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "10-1-0-51.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN")
	if got := k.store.soaSerial(); got == mid {
		t.Fatal("serial unchanged after a pod record went away")
	}
	// writing an identical pod changes nothing
	s := k.store.soaSerial()
	if k.store.putPod("ns1", "a", toPod(p, false, 1)) {
		t.Fatal("identical pod reported as a change")
	}
	if k.store.soaSerial() != s {
		t.Fatal("serial bumped by an identical pod")
	}
}

func TestStoreEmptyNonTerminals(t *testing.T) {
	k := newK8sDiscovery(defaultConfig())
	svc, err := k.toService(clusterIPService("ns1", "web", "10.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	k.store.putService("ns1", "web", svc)
	exists := func(name string) bool {
		v := k.store.read()
		_, ok := k.lookup(v, "cluster.local.", name, dns.TypeA)
		v.end()
		return ok
	}
	for _, name := range []string{"_http._tcp.web.ns1.svc", "_tcp.web.ns1.svc", "web.ns1.svc", "ns1.svc", "svc", ""} {
		if !exists(name) {
			t.Errorf("%q should exist", name)
		}
	}
	for _, name := range []string{"_udp.web.ns1.svc", "_dns._tcp.web.ns1.svc", "x.web.ns1.svc", "ns2.svc", "x.svc.y"} {
		if exists(name) {
			t.Errorf("%q should not exist", name)
		}
	}
	k.store.putService("ns1", "web", nil)
	for _, name := range []string{"_tcp.web.ns1.svc", "web.ns1.svc", "ns1.svc"} {
		if exists(name) {
			t.Errorf("%q remains after its Service went", name)
		}
	}
	if n := len(k.store.namespaces); n != 0 {
		t.Errorf("%d namespaces held by an empty store", n)
	}
}

func TestStoreReverseOwners(t *testing.T) {
	k := newK8sDiscovery(defaultConfig())
	ip := netip.MustParseAddr("10.1.0.5")
	put := func(ns, svc string, e ep) {
		t.Helper()
		s, err := k.toService(headlessService(ns, svc), 1)
		if err != nil {
			t.Fatal(err)
		}
		k.store.putService(ns, svc, s)
		k.store.putSlice(ns, svc+"-a", k.toSlice(slice(ns, svc, svc+"-a", 80, e), 1))
	}
	put("ns2", "b", ep{ip: "10.1.0.5"})
	put("ns1", "a", ep{ip: "10.1.0.5"})
	if got := fmt.Sprint(reverseOf(k, ip)); got != "[10-1-0-5.a.ns1.svc 10-1-0-5.b.ns2.svc]" {
		t.Fatalf("two owners: %s", got)
	}
	put("ns1", "a", ep{ip: "10.1.0.5", hostname: "db-0"})
	if got := fmt.Sprint(reverseOf(k, ip)); got != "[10-1-0-5.b.ns2.svc db-0.a.ns1.svc]" {
		t.Fatalf("one owner changed: %s", got)
	}
	k.store.putSlice("ns2", "b-a", nil)
	if got := fmt.Sprint(reverseOf(k, ip)); got != "[db-0.a.ns1.svc]" {
		t.Fatalf("one owner left: %s", got)
	}
	k.store.putService("ns1", "a", nil)
	if _, _, _, _, addrs := k.store.stats(); addrs != 0 || reverseOf(k, ip) != nil {
		t.Fatalf("%d reverse addresses left, want none", addrs)
	}
	k.store.putSlice("ns1", "a-a", nil)
	k.store.putService("ns2", "b", nil)
	if n := len(k.store.namespaces); n != 0 {
		t.Errorf("%d namespaces held by an empty store", n)
	}
}

func TestStoreSweep(t *testing.T) {
	k := newK8sDiscovery(defaultConfig())
	for i, name := range []string{"a", "b", "c"} {
		svc, _ := k.toService(clusterIPService("ns1", name, fmt.Sprintf("10.96.0.%d", i+1)), 1)
		k.store.putService("ns1", name, svc)
		k.store.putSlice("ns1", name+"-x", k.toSlice(slice("ns1", name, name+"-x", 80, ep{ip: fmt.Sprintf("10.1.0.%d", i+1)}), 1))
	}
	// the next list names a and c only, and only a's slice
	for i, name := range []string{"a", "c"} {
		svc, _ := k.toService(clusterIPService("ns1", name, fmt.Sprintf("10.96.0.%d", 2*i+1)), 2)
		if k.store.putService("ns1", name, svc) {
			t.Errorf("unchanged service %s reported as a change", name)
		}
	}
	k.store.putSlice("ns1", "a-x", k.toSlice(slice("ns1", "a", "a-x", 80, ep{ip: "10.1.0.1"}), 2))
	if n := k.store.sweep(resServices, 2); n != 1 {
		t.Errorf("swept %d services, want 1", n)
	}
	if n := k.store.sweep(resSlices, 2); n != 2 {
		t.Errorf("swept %d slices, want 2", n)
	}
	svcs, slices, _, _, addrs := k.store.stats()
	if svcs != 2 || slices != 1 || addrs != 3 { // 2 cluster IPs + a's endpoint
		t.Errorf("after the sweep: %d services, %d slices, %d reverse addresses; want 2, 1, 3", svcs, slices, addrs)
	}
}

// reverseOf reads an address's PTR names through a view, as a query does.
func reverseOf(k *K8sDiscovery, ip netip.Addr) []string {
	v := k.store.read()
	defer v.end()
	return v.reverse(ip)
}
