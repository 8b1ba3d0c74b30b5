package e2e

// multicluster on the real API server: the Multi-Cluster Services CRDs installed by the test
// (from the mcs-api module), ServiceImports and MCS-labelled EndpointSlices, answered by
// k8sdiscovery as upstream's kubernetes answers them, with and without the CRD at startup.

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned/typed/apis/v1alpha1"
	sigsyaml "sigs.k8s.io/yaml"
)

const multiclusterCorefile = `.:%[1]d {
    bind 127.0.0.1
    ready 127.0.0.1:%[2]d
    %[3]s cluster.local clusterset.local {
        kubeconfig %[4]s
        multicluster clusterset.local
    }
}
`

func multiclusterServer(t *testing.T, name, plugin string) *dnsServer {
	return startCorefile(t, name, func(p, r int) string {
		return fmt.Sprintf(multiclusterCorefile, p, r, plugin, harness.cp.kubeconfig)
	})
}

// mcsCRDs is the apiserver's CustomResourceDefinitions.
func mcsCRDs(t *testing.T) dynamic.ResourceInterface {
	t.Helper()
	cfg, err := harness.cp.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
}

// installMCSCRDs creates the ServiceExport and ServiceImport CRDs, waits until both are served,
// and deletes them when the test ends.
func installMCSCRDs(t *testing.T) {
	t.Helper()
	crds := mcsCRDs(t)
	for _, doc := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
		var obj map[string]any
		if err := sigsyaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if _, err := crds.Create(ctx(), u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create CRD %s: %v", u.GetName(), err)
		}
		name := u.GetName()
		t.Cleanup(func() { crds.Delete(ctx(), name, metav1.DeleteOptions{}) })
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := crds.Get(ctx(), u.GetName(), metav1.GetOptions{})
			if err == nil && established(got) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established: %v", u.GetName(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// mcsSlice is an EndpointSlice as an MCS implementation writes it for one cluster's endpoints of
// an imported Service (managed by it, so the cluster's EndpointSlice controller leaves it alone).
func mcsSlice(ns, svc, cluster, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := endpointSlice(ns, svc, name, discoveryv1.AddressTypeIPv4, ports, eps...)
	s.Labels = map[string]string{
		mcsv1alpha1.LabelServiceName:   svc,
		mcsv1alpha1.LabelSourceCluster: cluster,
		discoveryv1.LabelManagedBy:     "mcs-controller.clusterdns.test",
	}
	return s
}

func TestMulticluster(t *testing.T) {
	// Started before the CRD exists: it syncs and serves the cluster's names all the same.
	crds := mcsCRDs(t)
	if _, err := crds.Get(ctx(), "serviceimports.multicluster.x-k8s.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the ServiceImport CRD is there before the test installs it (%v): the phase without it would test nothing", err)
	}
	ours := multiclusterServer(t, "multicluster-k8sdiscovery", "k8sdiscovery")
	expectDNS(t, ours, []dnsCase{
		{name: "without the CRD: the cluster's names", q: "kubernetes.default.svc.cluster.local. A", skipAnswer: true,
			check: func(m *dns.Msg) error {
				if len(m.Answer) != 1 {
					return fmt.Errorf("want the kubernetes Service's address, got %v", m.Answer)
				}
				return nil
			}},
		{name: "without the CRD: no clusterset names", q: "web.mcs.svc.clusterset.local. A", rcode: nxdomain},
	})

	installMCSCRDs(t)
	crdAt := time.Now()
	createNamespace(t, "mcs")
	cfg, err := harness.cp.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	imports := mc.ServiceImports("mcs")
	for _, si := range []*mcsv1alpha1.ServiceImport{
		{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "mcs"}, Spec: mcsv1alpha1.ServiceImportSpec{
			Type: mcsv1alpha1.ClusterSetIP, IPs: []string{"10.200.0.1"},
			Ports: []mcsv1alpha1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "mcs"}, Spec: mcsv1alpha1.ServiceImportSpec{
			Type: mcsv1alpha1.Headless, Ports: []mcsv1alpha1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}}},
	} {
		if _, err := imports.Create(ctx(), si, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ServiceImport %s: %v", si.Name, err)
		}
	}
	pg := []discoveryv1.EndpointPort{slicePort("pg", 5432)}
	createSlice(t, mcsSlice("mcs", "db", "east", "db-east", pg, ep("10.2.1.1", hostname("db-0")), ep("10.2.1.2", notReady)))
	createSlice(t, mcsSlice("mcs", "db", "west", "db-west", pg, ep("10.2.2.1", hostname("db-0")), ep("10.2.2.2")))
	createSlice(t, mcsSlice("mcs", "web", "east", "web-east", []discoveryv1.EndpointPort{slicePort("http", 8080)}, ep("10.2.1.9")))

	const web, db = "web.mcs.svc.clusterset.local.", "db.mcs.svc.clusterset.local."
	eventually(t, ours, dnsCase{q: web + " A", answer: []string{a(web, "10.200.0.1")}}, 30*time.Second)
	logf("multicluster: ServiceImport answered %s after the CRD was installed (asked again every 10 s while absent)",
		time.Since(crdAt).Round(time.Millisecond))
	eventually(t, ours, dnsCase{q: "db-0.west." + db + " A", answer: []string{a("db-0.west."+db, "10.2.2.1")}}, 10*time.Second)

	pgSRV := "_pg._tcp." + db
	expectDNS(t, ours, []dnsCase{
		{name: "ClusterSetIP A", q: web + " A", answer: []string{a(web, "10.200.0.1")}},
		{name: "ClusterSetIP SRV", q: "_http._tcp." + web + " SRV", answer: []string{srv("_http._tcp."+web, 100, 80, web)},
			extra: []string{a(web, "10.200.0.1")}},
		{name: "Headless A: ready endpoints of every cluster", q: db + " A",
			answer: []string{a(db, "10.2.1.1"), a(db, "10.2.2.1"), a(db, "10.2.2.2")}},
		{name: "endpoint of one cluster", q: "db-0.east." + db + " A", answer: []string{a("db-0.east."+db, "10.2.1.1")}},
		{name: "endpoint by dashed IP", q: "10-2-2-2.west." + db + " A", answer: []string{a("10-2-2-2.west."+db, "10.2.2.2")}},
		{name: "not-ready endpoint", q: "10-2-1-2.east." + db + " A", rcode: nxdomain},
		{name: "endpoint without its cluster", q: "db-0." + db + " A", rcode: nxdomain},
		{name: "Headless SRV", q: pgSRV + " SRV", answer: []string{
			srv(pgSRV, 33, 5432, "10-2-2-2.west."+db), srv(pgSRV, 33, 5432, "db-0.east."+db), srv(pgSRV, 33, 5432, "db-0.west."+db)}},
		{name: "an import is not a cluster name", q: "web.mcs.svc.cluster.local. A", rcode: nxdomain},
	})

	// The same questions to upstream's kubernetes with the same stanza.
	up := multiclusterServer(t, "multicluster-upstream", "kubernetes")
	for _, q := range []string{
		web + " A", web + " AAAA", web + " SRV", "_http._tcp." + web + " SRV", "_dns._udp." + web + " SRV",
		db + " A", db + " SRV", pgSRV + " SRV", "db-0.east." + db + " A", "db-0.west." + db + " A",
		"10-2-2-2.west." + db + " A", "10-2-1-2.east." + db + " A", "db-0." + db + " A", "10-2-1-9.east." + web + " A",
		"nosuch.mcs.svc.clusterset.local. A", "mcs.svc.clusterset.local. A", "clusterset.local. SOA",
		"web.mcs.svc.cluster.local. A", "kubernetes.default.svc.cluster.local. A",
	} {
		tu, to, err := bothReplies(up, ours, q)
		if err != nil {
			t.Error(err)
			continue
		}
		if tu != to {
			t.Errorf("%s:\nupstream: %s\nk8sdiscovery: %s", q, tu, to)
		}
	}

	// A deleted import's names go.
	if err := imports.Delete(ctx(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, ours, dnsCase{q: web + " A", rcode: nxdomain}, 10*time.Second)
}
