package charts

// The rendered chart on a real kube-apiserver (v1.37, from test/e2e/controlplane/build.sh):
//
//   TestServerSideDryRun  every object of the chart with every option on is created with
//                         dryRun=All and strict field validation: the API's own schema,
//                         defaulting, validation and admission (priority classes) accept it, and
//                         nothing is stored. A broken Deployment and a misspelt ServiceMonitor
//                         field are refused, so the check can fail.
//   TestAutoscalerRBAC    the autoscaler's ServiceAccount, roles and bindings applied for real,
//                         then asked (SubjectAccessReview) what it may and may not do.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/controlplane"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

var (
	apiOnce   sync.Once
	apiServer *controlplane.APIServer
	apiDir    string
	apiErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if apiServer != nil {
		apiServer.Stop()
	}
	if apiDir != "" {
		os.RemoveAll(apiDir)
	}
	os.Exit(code)
}

// cluster is a client set for the package's apiserver, started on first use.
type cluster struct {
	dyn    dynamic.Interface
	kube   kubernetes.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// startAPIServer runs etcd and kube-apiserver built by test/e2e/controlplane/build.sh (a no-op
// when .cache/ has them; CI's build.sh test builds them first) for the whole package.
func startAPIServer(t *testing.T) cluster {
	t.Helper()
	apiOnce.Do(func() {
		script := filepath.Join("..", "test", "e2e", "controlplane", "build.sh")
		build := exec.Command(script)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if apiErr = build.Run(); apiErr != nil {
			apiErr = fmt.Errorf("%s: %w", script, apiErr)
			return
		}
		out, err := exec.Command(script, "dir").Output()
		if err != nil {
			apiErr = fmt.Errorf("%s dir: %w", script, err)
			return
		}
		if apiDir, apiErr = os.MkdirTemp("", "clusterdns-chart-apiserver-"); apiErr != nil {
			return
		}
		start := time.Now()
		apiServer, apiErr = controlplane.StartAPIServer(strings.TrimSpace(string(out)), apiDir)
		if apiErr == nil {
			fmt.Fprintf(os.Stderr, "kube-apiserver ready in %s\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if apiErr != nil {
		t.Fatalf("kube-apiserver: %v", apiErr)
	}
	cfg, err := apiServer.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 30 * time.Second
	c := cluster{}
	if c.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	// The apiserver creates kube-system shortly after it is ready.
	waitFor(t, 30*time.Second, func() error {
		_, err := c.kube.CoreV1().Namespaces().Get(context.Background(), "kube-system", metav1.GetOptions{})
		return err
	})
	return c
}

func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// resource finds the REST endpoint of an object's kind (discovery read again when the kind is new,
// as a CRD's is).
func (c cluster) resource(o object) (dynamic.ResourceInterface, error) {
	u := &unstructured.Unstructured{Object: o.fields}
	gvk := u.GroupVersionKind()
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		mapping, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace()), nil
	}
	return c.dyn.Resource(mapping.Resource), nil
}

// create sends o to the apiserver with strict field validation, as a dry run or for real.
func (c cluster) create(o object, dryRun bool) error {
	ri, err := c.resource(o)
	if err != nil {
		return err
	}
	opts := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Create(context.Background(), &unstructured.Unstructured{Object: o.fields}, opts)
	return err
}

// installServiceMonitorCRD creates testdata/servicemonitor-crd.yaml and waits until the
// apiserver serves the kind.
func installServiceMonitorCRD(t *testing.T, c cluster) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "servicemonitor-crd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := parseObjects(t, "testdata/servicemonitor-crd.yaml", b)[0]
	if err := c.create(crd, false); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("ServiceMonitor CRD: %v", err)
	}
	gvr := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
	waitFor(t, 30*time.Second, func() error {
		_, err := c.dyn.Resource(gvr).Namespace("kube-system").List(context.Background(), metav1.ListOptions{})
		return err
	})
}

// dryRunValues: every option on, with the optional fields the templates pass on filled.
var dryRunValues = append(sets(allOptions...), sets(
	"prometheus.monitor.interval=30s", "prometheus.monitor.scrapeTimeout=10s", "prometheus.monitor.honorLabels=true",
	"prometheus.monitor.additionalLabels.release=kube-prometheus-stack",
	"prometheus.monitor.relabelings[0].targetLabel=node", "prometheus.monitor.relabelings[0].sourceLabels[0]=__meta_kubernetes_endpoint_node_name",
	"image.pullSecrets[0].name=regcred", "autoscaler.image.pullSecrets[0].name=regcred", "podAnnotations.example=yes")...)

func TestServerSideDryRun(t *testing.T) {
	c := startAPIServer(t)
	installServiceMonitorCRD(t, c)
	objs := helmTemplate(t, dryRunValues...)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.kind()]++
		if err := c.create(o, true); err != nil {
			t.Errorf("%s: refused by the apiserver: %v", o.id(), err)
		}
	}
	t.Logf("server-side dry run of %d objects: %v", len(objs), kinds)
	for _, kind := range []string{"Deployment", "DaemonSet", "ConfigMap", "Service", "ServiceAccount", "ClusterRole",
		"ClusterRoleBinding", "Role", "RoleBinding", "PodDisruptionBudget", "ServiceMonitor"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s rendered with every option on", kind)
		}
	}
	// A dry run stores nothing.
	for _, o := range objs {
		ri, err := c.resource(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ri.Get(context.Background(), o.metadata("name"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s exists after the dry run (%v)", o.id(), err)
		}
	}

	// The same check refuses what is wrong: an invalid rollout, an unknown field of a built-in
	// kind, a misspelt ServiceMonitor field, an interval that is not a duration.
	for _, bad := range []struct {
		id, what string
		path     []string
		value    any
	}{
		{"Deployment kube-system/coredns", "maxSurge and maxUnavailable both 0", []string{"spec", "strategy", "rollingUpdate", "maxSurge"}, int64(0)},
		{"DaemonSet kube-system/clusterdns-node", "an unknown field", []string{"spec", "template", "spec", "hostNetwrok"}, true},
		{"ServiceMonitor kube-system/clusterdns-node", "a misspelt field", []string{"spec", "namespaceSelecter"}, map[string]any{}},
		{"ServiceMonitor kube-system/coredns", "an interval that is not a duration", []string{"spec", "endpoints"},
			[]any{map[string]any{"port": "metrics", "interval": "half a minute"}}},
	} {
		o := findOne(t, objs, bad.id)
		broken := object{fields: deepCopy(o.fields)}
		if err := unstructured.SetNestedField(broken.fields, bad.value, bad.path...); err != nil {
			t.Fatal(err)
		}
		err := c.create(broken, true)
		if err == nil {
			t.Errorf("%s with %s (%s): accepted by the dry run", bad.id, bad.what, strings.Join(bad.path, "."))
		} else {
			t.Logf("%s with %s: refused: %v", bad.id, bad.what, err)
		}
	}
}

func deepCopy(m map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: m}).DeepCopy().Object
}

// TestAutoscalerRBAC: cluster-proportional-autoscaler's identity, applied for real, may do what it
// does (list and watch nodes, get its ConfigMap, get and update the scale of coredns) and nothing
// near it.
func TestAutoscalerRBAC(t *testing.T) {
	c := startAPIServer(t)
	objs := helmTemplate(t, sets("autoscaler.enabled=true")...)
	var created []object
	for _, o := range objs {
		switch o.kind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := c.create(o, false); err != nil {
				t.Fatalf("%s: %v", o.id(), err)
			}
			created = append(created, o)
		}
	}
	t.Cleanup(func() {
		for _, o := range created {
			if ri, err := c.resource(o); err == nil {
				_ = ri.Delete(context.Background(), o.metadata("name"), metav1.DeleteOptions{})
			}
		}
	})
	for _, a := range []struct {
		allowed                                      bool
		verb, group, resource, subresource, ns, name string
	}{
		{true, "list", "", "nodes", "", "", ""},
		{true, "watch", "", "nodes", "", "", ""},
		{true, "get", "", "configmaps", "", "kube-system", "coredns-autoscaler"},
		{true, "get", "apps", "deployments", "scale", "kube-system", "coredns"},
		{true, "update", "apps", "deployments", "scale", "kube-system", "coredns"},
		{false, "update", "apps", "deployments", "scale", "kube-system", "clusterdns-other"},
		{false, "update", "apps", "deployments", "scale", "default", "coredns"},
		{false, "patch", "apps", "deployments", "", "kube-system", "coredns"},
		{false, "update", "apps", "daemonsets", "", "kube-system", "clusterdns-node"},
		{false, "get", "", "configmaps", "", "kube-system", "coredns"},
		{false, "update", "", "configmaps", "", "kube-system", "coredns-autoscaler"},
		{false, "get", "", "secrets", "", "kube-system", ""},
		{false, "get", "", "nodes", "", "", "node-1"},
		{false, "update", "", "nodes", "", "", "node-1"},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:kube-system:coredns-autoscaler",
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.ns, Name: a.name,
			},
		}}
		got, err := c.kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("%s %s", a.verb, strings.Trim(a.group+"/"+a.resource+"/"+a.subresource, "/"))
		if a.name != "" || a.ns != "" {
			what += " " + strings.Trim(a.ns+"/"+a.name, "/")
		}
		if got.Status.Allowed != a.allowed {
			t.Errorf("coredns-autoscaler may %s: %v, want %v", what, got.Status.Allowed, a.allowed)
		}
	}
}

// TestHelmInstallOverStockCoreDNS: README.md's install command on a cluster with kubeadm's
// CoreDNS. Plain `helm install` refuses the existing coredns Deployment; with --take-ownership it
// takes it over in place: same Deployment, now with clusterdns's image and service account, and
// kubeadm's `coredns` ConfigMap, still mounted, now holding the chart's Corefile.
func TestHelmInstallOverStockCoreDNS(t *testing.T) {
	c := startAPIServer(t)
	b, err := os.ReadFile(filepath.Join("testdata", "stock-coredns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	stock := parseObjects(t, "testdata/stock-coredns.yaml", b)
	for _, o := range stock {
		if err := c.create(o, false); err != nil {
			t.Fatalf("%s: %v", o.id(), err)
		}
	}
	kubeconfig := "--kubeconfig=" + apiServer.Kubeconfig
	t.Cleanup(func() {
		helm(t, "uninstall", "clusterdns", "-n", "kube-system", kubeconfig)
		for _, o := range stock {
			if ri, err := c.resource(o); err == nil {
				_ = ri.Delete(context.Background(), o.metadata("name"), metav1.DeleteOptions{})
			}
		}
	})

	out, errOut, err := helm(t, "install", "clusterdns", chartDir, "-n", "kube-system", kubeconfig)
	if err == nil || !strings.Contains(errOut, "exists and cannot be imported") {
		t.Errorf("helm install over the stock Deployment without --take-ownership: want a refusal, got err %v\n%s%s", err, out, errOut)
	}
	runHelm(t, "install", "clusterdns", chartDir, "-n", "kube-system", "--take-ownership", kubeconfig)

	ctx := context.Background()
	d, err := c.kube.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rendered := findOne(t, helmTemplate(t), "Deployment kube-system/coredns")
	spec := d.Spec.Template.Spec
	wantConfigMap, _ := rendered.get("spec", "template", "spec", "volumes", 0, "configMap", "name").(string)
	if len(spec.Containers) != 1 || spec.Containers[0].Image != "clusterdns/coredns:latest" ||
		spec.ServiceAccountName != "clusterdns" || len(spec.Volumes) != 1 || spec.Volumes[0].ConfigMap == nil ||
		spec.Volumes[0].ConfigMap.Name != wantConfigMap {
		t.Errorf("coredns after the install: %d containers, image %s, service account %s, volumes %+v; want clusterdns/coredns:latest, clusterdns, ConfigMap %s",
			len(spec.Containers), spec.Containers[0].Image, spec.ServiceAccountName, spec.Volumes, wantConfigMap)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("coredns rollout after the install: %+v, want maxUnavailable 0", d.Spec.Strategy.RollingUpdate)
	}
	if lim := spec.Containers[0].Resources.Limits.Memory().String(); lim != "512Mi" {
		t.Errorf("coredns memory limit %s after the install, want the chart's 512Mi", lim)
	}
	if wantConfigMap != "coredns" {
		t.Errorf("the chart mounts ConfigMap %q, want kubeadm's coredns", wantConfigMap)
	}
	corefile, err := os.ReadFile(filepath.Join(chartDir, "files", "Corefile.cluster"))
	if err != nil {
		t.Fatal(err)
	}
	cm, err := c.kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil || cm.Data["Corefile"] != string(corefile) || cm.Data["Corefile"] == stock[0].get("data", "Corefile") {
		t.Errorf("kubeadm's coredns ConfigMap after the install (%v): want the chart's Corefile.cluster in place of kubeadm's, got\n%s", err, cm.Data["Corefile"])
	}
	if _, err := c.kube.AppsV1().DaemonSets("kube-system").Get(ctx, "clusterdns-node", metav1.GetOptions{}); err != nil {
		t.Errorf("the node role's DaemonSet: %v", err)
	}
}
