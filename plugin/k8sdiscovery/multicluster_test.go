package k8sdiscovery

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/metadata"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsfake "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned/fake"
)

func serviceImport(ns, name string, typ mcsv1alpha1.ServiceImportType, ips ...string) *mcsv1alpha1.ServiceImport {
	return &mcsv1alpha1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: mcsv1alpha1.ServiceImportSpec{Type: typ, IPs: ips, Ports: []mcsv1alpha1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
		}},
	}
}

// mcSlice is an EndpointSlice an MCS implementation writes for the cluster's share of svc.
func mcSlice(ns, svc, cluster, name string, eps ...ep) *discoveryv1.EndpointSlice {
	s := slice(ns, "", name, 8080, eps...)
	s.Labels = map[string]string{mcsv1alpha1.LabelServiceName: svc}
	if cluster != "" {
		s.Labels[mcsv1alpha1.LabelSourceCluster] = cluster
	}
	return s
}

func multiclusterConfig() config {
	cfg := conformanceConfig()
	cfg.zones = []string{"cluster.local.", "clusterset.local.", "in-addr.arpa."}
	cfg.multicluster = []string{"clusterset.local."}
	return cfg
}

func startMulticluster(t *testing.T, cfg config, imports []runtime.Object, objs ...runtime.Object) (*K8sDiscovery, *mcsfake.Clientset) {
	k, mc, _ := startMulticlusterClients(t, cfg, imports, objs...)
	return k, mc
}

func startMulticlusterClients(t *testing.T, cfg config, imports []runtime.Object, objs ...runtime.Object) (*K8sDiscovery, *mcsfake.Clientset, *fake.Clientset) {
	t.Helper()
	k := newK8sDiscovery(cfg)
	k.upstream = outsideWorld{}
	mc := mcsfake.NewSimpleClientset(imports...)
	kc := fakeClient(objs...)
	w := newWatcher(k, kc)
	w.watchImports(mc.MulticlusterV1alpha1())
	w.run(k.stopCh)
	t.Cleanup(k.stop)
	waitFor(t, "first sync", k.synced.Load)
	return k, mc, kc
}

func TestMulticlusterNames(t *testing.T) {
	ready := boolPtr(true)
	k, mc := startMulticluster(t, multiclusterConfig(),
		[]runtime.Object{
			serviceImport("ns1", "web", mcsv1alpha1.ClusterSetIP, "10.200.0.1"),
			serviceImport("ns1", "db", mcsv1alpha1.Headless),
			serviceImport("ns1", "pending", mcsv1alpha1.ClusterSetIP),
		},
		namespace("ns1"),
		clusterIPService("ns1", "local", "10.96.0.5"),
		mcSlice("ns1", "db", "east", "db-east", ep{ip: "10.1.0.1", hostname: "db-0", ready: ready}),
		mcSlice("ns1", "db", "west", "db-west", ep{ip: "10.2.0.1", hostname: "db-0", ready: ready}, ep{ip: "10.2.0.2", ready: ready}),
		mcSlice("ns1", "db", "", "db-nocluster", ep{ip: "10.3.0.1", ready: ready}),
		mcSlice("ns1", "web", "east", "web-east", ep{ip: "10.1.0.9", hostname: "w", ready: ready}),
	)
	for _, tc := range []struct {
		qname string
		qtype uint16
		rcode string
		want  []string
	}{
		{"web.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.200.0.1"}},
		{"web.ns1.svc.clusterset.local.", dns.TypeAAAA, "NOERROR", nil},
		{"web.ns1.svc.clusterset.local.", dns.TypeSRV, "NOERROR", []string{"80 web.ns1.svc.clusterset.local."}},
		{"_http._tcp.web.ns1.svc.clusterset.local.", dns.TypeSRV, "NOERROR", []string{"80 web.ns1.svc.clusterset.local."}},
		{"_tcp.web.ns1.svc.clusterset.local.", dns.TypeSRV, "NOERROR", nil},
		{"_dns._udp.web.ns1.svc.clusterset.local.", dns.TypeSRV, "NXDOMAIN", nil},
		// The endpoints of a ClusterSetIP import are named too (as upstream), by cluster.
		{"w.east.web.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.1.0.9"}},
		// Headless: every ready endpoint of every cluster; a slice without a source cluster is not published.
		{"db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.1.0.1", "10.2.0.1", "10.2.0.2"}},
		{"db-0.east.db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.1.0.1"}},
		{"db-0.west.db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.2.0.1"}},
		{"10-2-0-2.west.db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", []string{"10.2.0.2"}},
		{"10-2-0-2.east.db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN", nil},
		{"db-0.db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN", nil},
		{"db.ns1.svc.clusterset.local.", dns.TypeSRV, "NOERROR", []string{
			"8080 10-2-0-2.west.db.ns1.svc.clusterset.local.", "8080 db-0.east.db.ns1.svc.clusterset.local.", "8080 db-0.west.db.ns1.svc.clusterset.local."}},
		{"_http._tcp.db.ns1.svc.clusterset.local.", dns.TypeSRV, "NOERROR", []string{
			"8080 10-2-0-2.west.db.ns1.svc.clusterset.local.", "8080 db-0.east.db.ns1.svc.clusterset.local.", "8080 db-0.west.db.ns1.svc.clusterset.local."}},
		// Without IPs yet: the name exists, without addresses.
		{"pending.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", nil},
		// The cluster's own Services are not clusterset names, and imports are not cluster names.
		{"local.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN", nil},
		{"web.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil},
		{"local.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"10.96.0.5"}},
		{"ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", nil},
		{"nons.svc.clusterset.local.", dns.TypeA, "NXDOMAIN", nil},
		{"clusterset.local.", dns.TypeSOA, "NOERROR", nil},
		// No zonal names in a multicluster zone, no PTR for imported addresses.
		{"east.pin._zone.db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN", nil},
		{"1.0.200.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN", nil},
	} {
		rcode, got := answers(k, tc.qname, tc.qtype)
		if tc.qtype == dns.TypeSOA {
			got = nil
		}
		if rcode != tc.rcode || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s %s: got %s %v, want %s %v", tc.qname, dns.TypeToString[tc.qtype], rcode, got, tc.rcode, tc.want)
		}
	}

	// The additional section of a headless SRV answer has the targets' addresses.
	m := ask(k, "db.ns1.svc.clusterset.local.", dns.TypeSRV)
	if len(m.Extra) != 3 || !strings.HasPrefix(m.Extra[0].Header().Name, "10-2-0-2.west.") {
		t.Errorf("additional section: %v", m.Extra)
	}

	// Changes: an import goes, its name goes; one comes back with another type.
	ctx := context.Background()
	imports := mc.MulticlusterV1alpha1().ServiceImports("ns1")
	if err := imports.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "web.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	if _, err := imports.Create(ctx, serviceImport("ns1", "web", mcsv1alpha1.Headless), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "web.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.1.0.9")
}

// A ServiceImport whose ports are all gone has no name (as upstream); ignore empty_service makes a
// ClusterSetIP import without endpoints NXDOMAIN.
func TestMulticlusterEmpty(t *testing.T) {
	noPorts := serviceImport("ns1", "noports", mcsv1alpha1.ClusterSetIP, "10.200.0.2")
	noPorts.Spec.Ports = nil
	imports := []runtime.Object{noPorts, serviceImport("ns1", "web", mcsv1alpha1.ClusterSetIP, "10.200.0.1")}
	k, _ := startMulticluster(t, multiclusterConfig(), imports, namespace("ns1"))
	eventually(t, k, "noports.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "web.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.200.0.1")

	cfg := multiclusterConfig()
	cfg.ignoreEmptyService = true
	k, _ = startMulticluster(t, cfg, imports, namespace("ns1"))
	eventually(t, k, "web.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
}

// A relist sweeps the imports and MCS slices it no longer names; a slice that loses its MCS label
// leaves the import; one with both labels serves both names.
func TestMulticlusterSliceChangesAndSweep(t *testing.T) {
	ready := boolPtr(true)
	both := mcSlice("ns1", "db", "east", "db-east", ep{ip: "10.1.0.1", hostname: "db-0", ready: ready})
	both.Labels[discoveryv1.LabelServiceName] = "db"
	k, _, kc := startMulticlusterClients(t, multiclusterConfig(), []runtime.Object{serviceImport("ns1", "db", mcsv1alpha1.Headless)},
		namespace("ns1"), headlessService("ns1", "db"), both)
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.1.0.1")
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.1")

	// The slice moves to another source cluster, then loses its MCS label.
	slices := kc.DiscoveryV1().EndpointSlices("ns1")
	both.Labels[mcsv1alpha1.LabelSourceCluster] = "west"
	if _, err := slices.Update(context.Background(), both, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "db-0.west.db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.1.0.1")
	eventually(t, k, "db-0.east.db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	delete(both.Labels, mcsv1alpha1.LabelServiceName)
	if _, err := slices.Update(context.Background(), both, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.1")
	both.Labels[mcsv1alpha1.LabelServiceName] = "db"
	if _, err := slices.Update(context.Background(), both, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.1.0.1")

	// Sweeps: a relist (epoch 99) that names nothing removes every import and MCS slice.
	k.store.sweep(resImports, 99)
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	k.store.putImport("ns1", "db", toImport(serviceImport("ns1", "db", mcsv1alpha1.Headless), 100))
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NOERROR", "10.1.0.1")
	k.store.sweep(resSlices, 99)
	eventually(t, k, "db.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	if _, slices, _, _, addrs := k.store.stats(); addrs != 0 || slices != 0 {
		t.Errorf("%d slices and %d reverse addresses after the sweep", slices, addrs)
	}
}

// Without the ServiceImport CRD the plugin still syncs and serves the cluster's names.
func TestMulticlusterWithoutCRD(t *testing.T) {
	k := newK8sDiscovery(multiclusterConfig())
	mc := mcsfake.NewSimpleClientset()
	notFound := func(action k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: mcsv1alpha1.GroupName, Resource: "serviceimports"}, "")
	}
	mc.PrependReactor("list", "serviceimports", notFound)
	mc.PrependWatchReactor("serviceimports", func(action k8stesting.Action) (bool, watch.Interface, error) {
		_, _, err := notFound(action)
		return true, nil, err
	})
	w := newWatcher(k, fakeClient(namespace("ns1"), clusterIPService("ns1", "local", "10.96.0.5")))
	w.watchImports(mc.MulticlusterV1alpha1())
	w.run(k.stopCh)
	t.Cleanup(k.stop)
	waitFor(t, "first sync without the CRD", k.synced.Load)
	eventually(t, k, "local.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.5")
	eventually(t, k, "web.ns1.svc.clusterset.local.", dns.TypeA, "NXDOMAIN")
}

// A transfer of a multicluster zone holds the ServiceImports' names, and none of the cluster's own.
func TestMulticlusterTransfer(t *testing.T) {
	k, _ := startMulticluster(t, multiclusterConfig(),
		[]runtime.Object{serviceImport("ns1", "web", mcsv1alpha1.ClusterSetIP, "10.200.0.1"), serviceImport("ns1", "db", mcsv1alpha1.Headless)},
		namespace("ns1"), clusterIPService("ns1", "local", "10.96.0.5"),
		mcSlice("ns1", "db", "east", "db-east", ep{ip: "10.1.0.1", hostname: "db-0"}))
	ch, err := k.Transfer("clusterset.local.", 0)
	if err != nil {
		t.Fatal(err)
	}
	var text []string
	for batch := range ch {
		for _, rr := range batch {
			text = append(text, strings.Join(strings.Fields(rr.String()), " "))
		}
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{
		"web.ns1.svc.clusterset.local. 5 IN A 10.200.0.1",
		"_http._tcp.web.ns1.svc.clusterset.local. 5 IN SRV 0 100 80 web.ns1.svc.clusterset.local.",
		"db.ns1.svc.clusterset.local. 5 IN A 10.1.0.1",
		"db-0.east.db.ns1.svc.clusterset.local. 5 IN A 10.1.0.1",
		"_http._tcp.db.ns1.svc.clusterset.local. 5 IN SRV 0 100 8080 db-0.east.db.ns1.svc.clusterset.local.",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("transfer lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "local.ns1") {
		t.Errorf("transfer of clusterset.local holds a cluster Service:\n%s", all)
	}
}

// Metadata in a multicluster zone reads <endpoint>.<cluster> names and sets kubernetes/cluster
// (as upstream); zonal names are not read there.
func TestMulticlusterMetadata(t *testing.T) {
	cfg := multiclusterConfig()
	cfg.zonal = true
	k, _ := startMulticluster(t, cfg, nil, namespace("ns1"))
	for _, c := range []struct {
		qname string
		want  map[string]string
	}{
		{"db-0.east.db.ns1.svc.clusterset.local.", map[string]string{"kubernetes/cluster": "east", "kubernetes/endpoint": "db-0", "kubernetes/service": "db"}},
		{"_http._tcp.web.ns1.svc.clusterset.local.", map[string]string{"kubernetes/cluster": "", "kubernetes/port-name": "http"}},
		{"a.pin._zone.db.ns1.svc.clusterset.local.", map[string]string{"kubernetes/zone": "", "kubernetes/parse-error": "more labels than the schema has"}},
		{"db-0.east.db.ns1.svc.cluster.local.", map[string]string{"kubernetes/parse-error": "an SRV name is _<port>._<protocol>.<service>.<namespace>.svc"}},
	} {
		expectMetadata(t, k, "10.1.0.50", c.qname, c.want)
	}
	ctx := k.Metadata(metadata.ContextWithMetadata(context.Background()), stateFrom("10.1.0.50", "web.ns1.svc.cluster.local."))
	if f := metadata.ValueFunc(ctx, "kubernetes/cluster"); f != nil {
		t.Errorf("kubernetes/cluster set for a cluster zone name: %q", f())
	}
}

// Without RBAC for ServiceImports (Forbidden), as without the CRD, the plugin syncs.
func TestMulticlusterForbidden(t *testing.T) {
	k := newK8sDiscovery(multiclusterConfig())
	mc := mcsfake.NewSimpleClientset()
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: mcsv1alpha1.GroupName, Resource: "serviceimports"}, "", nil)
	mc.PrependReactor("list", "serviceimports", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, forbidden })
	mc.PrependWatchReactor("serviceimports", func(k8stesting.Action) (bool, watch.Interface, error) { return true, nil, forbidden })
	w := newWatcher(k, fakeClient(namespace("ns1"), clusterIPService("ns1", "local", "10.96.0.5")))
	w.watchImports(mc.MulticlusterV1alpha1())
	w.run(k.stopCh)
	t.Cleanup(k.stop)
	waitFor(t, "first sync without RBAC for ServiceImports", k.synced.Load)
	eventually(t, k, "local.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.5")
}
