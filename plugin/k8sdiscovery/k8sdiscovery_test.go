package k8sdiscovery

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func clusterIPService(ns, name string, ips ...string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: ips[0], ClusterIPs: ips,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
}

func headlessService(ns, name string) *corev1.Service {
	s := clusterIPService(ns, name, corev1.ClusterIPNone)
	s.Spec.ClusterIPs = nil
	return s
}

func externalService(ns, name, target string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: target},
	}
}

type ep struct {
	ip, hostname, pod string
	ready             *bool
}

func boolPtr(b bool) *bool { return &b }

func slice(ns, svc, name string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	portName, proto := "http", corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.hostname != "" {
			x.Hostname = &e.hostname
		}
		if e.pod != "" {
			x.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: e.pod}
		}
		if netip.MustParseAddr(e.ip).Is6() {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

func pod(ns, name, ip string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Status:     corev1.PodStatus{Phase: phase, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func fakeClient(objs ...runtime.Object) *fake.Clientset { return fake.NewClientset(objs...) }

func startFake(t *testing.T, cfg config, objs ...runtime.Object) (*K8sDiscovery, *fake.Clientset) {
	t.Helper()
	if len(cfg.zones) == 0 {
		cfg.zones = []string{"cluster.local.", "in-addr.arpa."}
	}
	client := fakeClient(objs...)
	k := newK8sDiscovery(cfg)
	k.upstream = outsideWorld{}
	startWithClient(t, k, client)
	return k, client
}

// answers returns the rcode and the answer records' data in order, e.g. ["10.96.0.10"].
func answers(k *K8sDiscovery, qname string, qtype uint16) (string, []string) {
	m := ask(k, qname, qtype)
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		case *dns.PTR:
			out = append(out, r.Ptr)
		case *dns.CNAME:
			out = append(out, r.Target)
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %s", r.Port, r.Target))
		case *dns.TXT:
			out = append(out, strings.Join(r.Txt, " "))
		}
	}
	return dns.RcodeToString[m.Rcode], out
}

// eventually waits until the query's rcode and answer data match.
func eventually(t *testing.T, k *K8sDiscovery, qname string, qtype uint16, rcode string, want ...string) {
	t.Helper()
	var gotRcode string
	var got []string
	cond := func() bool {
		gotRcode, got = answers(k, qname, qtype)
		return gotRcode == rcode && fmt.Sprint(got) == fmt.Sprint(want)
	}
	deadline := 5 * 200
	for i := 0; i < deadline && !cond(); i++ {
		waitShort()
	}
	if !cond() {
		t.Fatalf("%s %s: got %s %v, want %s %v", qname, dns.TypeToString[qtype], gotRcode, got, rcode, want)
	}
}

func TestServfailBeforeSync(t *testing.T) {
	k := newK8sDiscovery(conformanceConfig())
	if k.Ready() {
		t.Fatal("ready before the first sync")
	}
	if m := ask(k, "web.ns1.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s before sync, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	// a name outside the zones is not ours to fail
	if _, err := k.ServeDNS(context.Background(), nil, new(dns.Msg).SetQuestion("example.org.", dns.TypeA)); err == nil {
		t.Fatal("want the no-next-plugin error for a name outside the zone")
	}
}

func TestChangesOverTime(t *testing.T) {
	ctx := context.Background()
	web := clusterIPService("ns1", "web", "10.96.0.10")
	hl := headlessService("ns1", "db")
	k, client := startFake(t, defaultConfig(), namespace("ns1"), web, hl,
		slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}, ep{ip: "10.1.0.8", ready: boolPtr(false)}),
		externalService("ns1", "ext", "web.ns1.svc.cluster.local"))

	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")

	t.Run("endpoint becomes ready", func(t *testing.T) {
		s := slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}, ep{ip: "10.1.0.8", ready: boolPtr(true)})
		if _, err := client.DiscoveryV1().EndpointSlices("ns1").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7", "10.1.0.8")
		eventually(t, k, "8.0.1.10.in-addr.arpa.", dns.TypePTR, "NOERROR", "10-1-0-8.db.ns1.svc.cluster.local.")
	})
	t.Run("endpoint becomes not ready", func(t *testing.T) {
		s := slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7", hostname: "db-0", ready: boolPtr(false)}, ep{ip: "10.1.0.8"})
		if _, err := client.DiscoveryV1().EndpointSlices("ns1").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, k, "db-0.db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
		eventually(t, k, "7.0.1.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN")
	})
	t.Run("ExternalName changed", func(t *testing.T) {
		eventually(t, k, "ext.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "web.ns1.svc.cluster.local.", "10.96.0.10")
		if _, err := client.CoreV1().Services("ns1").Update(ctx, externalService("ns1", "ext", "www.example.com"), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, k, "ext.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "www.example.com.", "192.0.2.80")
	})
	t.Run("service deleted", func(t *testing.T) {
		if err := client.CoreV1().Services("ns1").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
		eventually(t, k, "10.0.96.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN")
		eventually(t, k, "ns1.svc.cluster.local.", dns.TypeA, "NOERROR") // the namespace still exists
	})
	t.Run("namespace deleted", func(t *testing.T) {
		for _, name := range []string{"db", "ext"} {
			if err := client.CoreV1().Services("ns1").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// what namespace deletion does in a cluster: its EndpointSlices go too
		if err := client.DiscoveryV1().EndpointSlices("ns1").Delete(ctx, "db-a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := client.CoreV1().Namespaces().Delete(ctx, "ns1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, k, "ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
		svcs, slices, nss, pods, addrs := k.store.stats()
		k.store.mu.RLock()
		left := len(k.store.namespaces)
		k.store.mu.RUnlock()
		if svcs+slices+nss+pods+addrs+left != 0 {
			t.Errorf("left after everything was deleted: %d services, %d slices, %d namespaces (%d held), %d pods, %d reverse addresses",
				svcs, slices, nss, left, pods, addrs)
		}
	})
}

func TestPodModes(t *testing.T) {
	objs := []runtime.Object{namespace("ns1"), pod("ns1", "a", "10.1.0.50", corev1.PodRunning)}
	tests := []struct {
		mode  string
		qname string
		qtype uint16
		rcode string
		want  []string
	}{
		{podsDisabled, "10-1-0-50.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsDisabled, "ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsDisabled, "pod.cluster.local.", dns.TypeA, "NOERROR", nil},
		{podsInsecure, "10-9-9-9.ns1.pod.cluster.local.", dns.TypeA, "NOERROR", []string{"10.9.9.9"}},
		{podsInsecure, "10-9-9-9.ns1.pod.cluster.local.", dns.TypeAAAA, "NOERROR", nil},
		{podsInsecure, "fd00--9.ns1.pod.cluster.local.", dns.TypeAAAA, "NOERROR", []string{"fd00::9"}},
		{podsInsecure, "fd00-0-0-0-0-0-0-9.ns1.pod.cluster.local.", dns.TypeAAAA, "NOERROR", []string{"fd00::9"}},
		{podsInsecure, "10-9-9-9.nons.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsInsecure, "not-an-ip.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsInsecure, "10-9-9-999.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsVerified, "10-1-0-50.ns1.pod.cluster.local.", dns.TypeA, "NOERROR", []string{"10.1.0.50"}},
		{podsVerified, "10-9-9-9.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{podsVerified, "10-1-0-050.ns1.pod.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
	}
	for _, tc := range tests {
		t.Run(tc.mode+" "+tc.qname+" "+dns.TypeToString[tc.qtype], func(t *testing.T) {
			cfg := defaultConfig()
			cfg.podMode = tc.mode
			k, _ := startFake(t, cfg, objs...)
			rcode, got := answers(k, tc.qname, tc.qtype)
			if rcode != tc.rcode || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %s %v, want %s %v", rcode, got, tc.rcode, tc.want)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	objs := []runtime.Object{
		namespace("ns1"), namespace("ns2"),
		headlessService("ns1", "db"),
		slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}, ep{ip: "10.1.0.8", pod: "db-abc"}),
		externalService("ns1", "ip", "192.0.2.1"),
		externalService("ns1", "ip6", "2001:db8::1"),
		clusterIPService("ns2", "web", "10.96.0.30"),
	}
	tests := []struct {
		name  string
		set   func(*config)
		qname string
		qtype uint16
		rcode string
		want  []string
	}{
		{"ptr of a dashed-IP endpoint by default", func(*config) {}, "8.0.1.10.in-addr.arpa.", dns.TypePTR, "NOERROR", []string{"10-1-0-8.db.ns1.svc.cluster.local."}},
		{"ptr_hostname_only drops it", func(c *config) { c.ptrHostnameOnly = true }, "8.0.1.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN", nil},
		{"ptr_hostname_only keeps hostnames", func(c *config) { c.ptrHostnameOnly = true }, "7.0.1.10.in-addr.arpa.", dns.TypePTR, "NOERROR", []string{"db-0.db.ns1.svc.cluster.local."}},
		{"endpoint_pod_names", func(c *config) { c.endpointPodName = true }, "db-abc.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"10.1.0.8"}},
		{"without endpoint_pod_names", func(*config) {}, "db-abc.db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{"externalname_ip A", func(c *config) { c.externalNameIP = true }, "ip.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"192.0.2.1"}},
		{"externalname_ip AAAA", func(c *config) { c.externalNameIP = true }, "ip6.ns1.svc.cluster.local.", dns.TypeAAAA, "NOERROR", []string{"2001:db8::1"}},
		{"IP ExternalName by default", func(*config) {}, "ip.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{"namespaces filter hides others", func(c *config) { c.namespaces = map[string]bool{"ns1": true} }, "web.ns2.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{"namespaces filter hides the namespace", func(c *config) { c.namespaces = map[string]bool{"ns1": true} }, "ns2.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{"namespaces filter keeps its own", func(c *config) { c.namespaces = map[string]bool{"ns1": true} }, "db-0.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"10.1.0.7"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			tc.set(&cfg)
			k, _ := startFake(t, cfg, objs...)
			rcode, got := answers(k, tc.qname, tc.qtype)
			if rcode != tc.rcode || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %s %v, want %s %v", rcode, got, tc.rcode, tc.want)
			}
		})
	}
}

func TestTTLs(t *testing.T) {
	cfg := defaultConfig()
	cfg.ttl, cfg.headlessTTL = 30, 3
	k, _ := startFake(t, cfg, namespace("ns1"), clusterIPService("ns1", "web", "10.96.0.10"),
		headlessService("ns1", "db"), slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7"}))
	for qname, want := range map[string]uint32{
		"web.ns1.svc.cluster.local.": 30, "db.ns1.svc.cluster.local.": 3, "10-1-0-7.db.ns1.svc.cluster.local.": 3,
	} {
		m := ask(k, qname, dns.TypeA)
		if len(m.Answer) != 1 || m.Answer[0].Header().Ttl != want {
			t.Errorf("%s: answer %v, want TTL %d", qname, m.Answer, want)
		}
	}
	if m := ask(k, "nope.ns1.svc.cluster.local.", dns.TypeA); len(m.Ns) != 1 || m.Ns[0].(*dns.SOA).Minttl != 30 {
		t.Errorf("negative answer SOA %v, want minimum 30", m.Ns)
	}
}

func TestManifestsReload(t *testing.T) {
	manifestPoll = 20 * 1e6 // 20ms
	dir := t.TempDir()
	write := func(name, body string) { // whole, by rename: the poller must not read a half-written file
		tmp := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	svc := func(ip string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns1}\nspec: {clusterIP: " + ip + ", clusterIPs: [" + ip + "]}\n"
	}
	write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: skipped}\n")
	write("web.yaml", svc("10.96.0.10"))
	k := startFromManifests(t, defaultConfig(), dir)
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.10")

	write("web.yaml", svc("10.96.0.11"))
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.11")

	// a file that does not parse changes nothing
	write("web.yaml", "kind: Service\nmetadata: {name: [broken\n")
	waitShort()
	waitShort()
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.11")

	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
}

func TestManifestErrorsFailStartup(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newManifestSource(dir, make(chan struct{})); err == nil {
		t.Fatal("a Service without a name loaded")
	}
	if _, err := newManifestSource(filepath.Join(dir, "missing"), make(chan struct{})); err == nil {
		t.Fatal("a missing folder loaded")
	}
}
