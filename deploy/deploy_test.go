// Package deploy holds the kube-system manifests (kustomize folders) and, in this test, the checks
// that keep them in step with the Corefiles and the plugins: every manifest decodes as a
// Kubernetes kind, every kustomization builds (with kustomize's own library, under the same load
// restrictions as `kubectl apply -k`), the ConfigMaps carry the repository's Corefiles, the
// DaemonSet can hand over without loss, and the ClusterRoles grant exactly what the plugins read.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/coredns/caddy/caddyfile"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// The kustomize folders, each of which must build.
var kustomizations = []string{".", "cluster", "node", "node-kube-dns-ip"}

// decode turns one YAML document into a typed object of client-go's scheme.
func decode(t *testing.T, where string, doc []byte) runtime.Object {
	t.Helper()
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("%s: does not decode as a Kubernetes kind: %v", where, err)
	}
	if gvk.Kind == "" || gvk.Version == "" {
		t.Fatalf("%s: no kind/apiVersion", where)
	}
	return obj
}

// TestManifestsDecode: every YAML document under deploy/ other than kustomize's own files is an
// object of a kind client-go knows (typed, with its fields: unknown fields fail).
func TestManifestsDecode(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := sigsyaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s document %d: %v", path, i, err)
			}
			if head.APIVersion == "" && head.Kind == "" {
				continue // comments only
			}
			if strings.HasPrefix(head.APIVersion, "kustomize.config.k8s.io/") {
				continue // built by TestKustomizationsBuild
			}
			strictDecode(t, path+" document "+strconv.Itoa(i), doc)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 9 {
		t.Errorf("decoded only %d objects under deploy/", n)
	}
}

// strictDecode decodes doc and fails on fields the kind does not have (a typo such as
// `maxSurg` would otherwise vanish silently, and only the dry-run against an API server finds it).
func strictDecode(t *testing.T, where string, doc []byte) runtime.Object {
	t.Helper()
	obj := decode(t, where, doc)
	js, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	fresh, err := scheme.Scheme.New(obj.GetObjectKind().GroupVersionKind())
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if err := sigsyaml.UnmarshalStrict(js, fresh); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return obj
}

// build runs kustomize on one folder, as `kubectl apply -k` would, and returns the typed objects.
func build(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []runtime.Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strictDecode(t, dir+": "+r.CurId().String(), y))
	}
	return out
}

func TestKustomizationsBuild(t *testing.T) {
	for _, dir := range kustomizations {
		objs := build(t, dir)
		if len(objs) == 0 {
			t.Errorf("%s builds to nothing", dir)
		}
		for _, o := range objs {
			if m, ok := o.(interface{ GetNamespace() string }); ok {
				switch o.(type) {
				case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
				default:
					if m.GetNamespace() != "kube-system" {
						t.Errorf("%s: %T %v is not in kube-system", dir, o, o.(interface{ GetName() string }).GetName())
					}
				}
			}
		}
	}
}

// rendered is what one kustomization builds to, by kind.
type rendered struct {
	deployments     []*appsv1.Deployment
	daemonSets      []*appsv1.DaemonSet
	configMaps      map[string]*corev1.ConfigMap
	services        map[string]*corev1.Service
	serviceAccounts map[string]*corev1.ServiceAccount
	roles           map[string]*rbacv1.ClusterRole
	bindings        []*rbacv1.ClusterRoleBinding
	budgets         []*policyv1.PodDisruptionBudget
}

func render(t *testing.T, dir string) rendered {
	r := rendered{configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		serviceAccounts: map[string]*corev1.ServiceAccount{}, roles: map[string]*rbacv1.ClusterRole{}}
	for _, o := range build(t, dir) {
		switch o := o.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *appsv1.DaemonSet:
			r.daemonSets = append(r.daemonSets, o)
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ServiceAccount:
			r.serviceAccounts[o.Name] = o
		case *rbacv1.ClusterRole:
			r.roles[o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			r.bindings = append(r.bindings, o)
		case *policyv1.PodDisruptionBudget:
			r.budgets = append(r.budgets, o)
		default:
			t.Errorf("%s: unexpected kind %T", dir, o)
		}
	}
	return r
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCorefileCopies: kustomize cannot read files outside its folder, so each role folder keeps
// a copy of the repository's Corefile; the copy and what lands in the ConfigMap must equal it.
func TestCorefileCopies(t *testing.T) {
	for _, c := range []struct {
		dir, repo, configMap string
		hashed               bool
	}{
		{"cluster", "../Corefile.cluster", "coredns", false},
		{"node", "../Corefile.nodelocal", "clusterdns-node", true},
	} {
		want := readFile(t, c.repo)
		if got := readFile(t, filepath.Join(c.dir, "Corefile")); got != want {
			t.Errorf("deploy/%s/Corefile differs from %s; run: cp %s deploy/%s/Corefile",
				c.dir, strings.TrimPrefix(c.repo, "../"), strings.TrimPrefix(c.repo, "../"), c.dir)
		}
		r := render(t, c.dir)
		cm := configMapOf(t, r, c.configMap, c.hashed)
		if cm.Data["Corefile"] != want {
			t.Errorf("%s: ConfigMap %s does not hold %s", c.dir, cm.Name, c.repo)
		}
		if len(cm.Data) != 1 {
			t.Errorf("%s: ConfigMap %s has keys %v, want only Corefile", c.dir, cm.Name, keys(cm.Data))
		}
	}
}

// configMapOf finds the generated ConfigMap of a generator name: name-<hash> when hashed, else
// the name itself.
func configMapOf(t *testing.T, r rendered, generator string, hashed bool) *corev1.ConfigMap {
	t.Helper()
	if !hashed {
		if cm := r.configMaps[generator]; cm != nil {
			return cm
		}
		t.Fatalf("no ConfigMap %s among %v", generator, keys(r.configMaps))
	}
	pattern := regexp.MustCompile("^" + regexp.QuoteMeta(generator) + "-[a-z0-9]{10}$")
	for name, cm := range r.configMaps {
		if pattern.MatchString(name) {
			return cm
		}
	}
	t.Fatalf("no generated ConfigMap %s-<hash> among %v", generator, keys(r.configMaps))
	return nil
}

// TestCentralReadsStockConfigMap: the central role's Corefile is kube-system/coredns itself, the
// ConfigMap that kubeadm's documentation and the Kubernetes DNS e2e tests edit (stub domains,
// forward rules), and every server block reloads it, so an edit applies without a rollout.
func TestCentralReadsStockConfigMap(t *testing.T) {
	r := render(t, "cluster")
	cm := configMapOf(t, r, "coredns", false)
	if cm.Namespace != "kube-system" {
		t.Errorf("ConfigMap coredns in namespace %q, want kube-system", cm.Namespace)
	}
	if len(r.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(r.deployments))
	}
	spec := r.deployments[0].Spec.Template.Spec
	mounted := false
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "coredns" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("the Deployment does not mount ConfigMap coredns: %+v", spec.Volumes)
	}
	blocks, err := caddyfile.Parse("Corefile", strings.NewReader(cm.Data["Corefile"]), nil)
	if err != nil || len(blocks) == 0 {
		t.Fatalf("the Corefile does not parse into server blocks: %v", err)
	}
	for _, b := range blocks {
		if _, ok := b.Tokens["reload"]; !ok {
			t.Errorf("server block %v has no reload: an edit of the ConfigMap would need a rollout", b.Keys)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// corefilePorts reads the health, ready and prometheus addresses of a Corefile (CoreDNS's
// defaults where a directive has no address): "health" -> "127.0.0.1:8081" or ":8080".
func corefilePorts(corefile string) map[string][]string {
	out := map[string][]string{}
	defaults := map[string]string{"health": ":8080", "ready": ":8181", "prometheus": "localhost:9153"}
	for _, line := range strings.Split(corefile, "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if def, ok := defaults[f[0]]; ok {
			addr := def
			if len(f) > 1 && f[1] != "{" {
				addr = f[1]
			}
			out[f[0]] = append(out[f[0]], addr)
		}
	}
	return out
}

func hostPort(t *testing.T, addr string) (string, int32) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return addr[:i], int32(p)
}

// checkProbe: an HTTP probe on the path and address a Corefile directive serves.
func checkProbe(t *testing.T, what string, p *corev1.Probe, path, addr string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: no HTTP probe", what)
		return
	}
	host, port := hostPort(t, addr)
	if p.HTTPGet.Path != path || p.HTTPGet.Port.IntVal != port {
		t.Errorf("%s: probe %s:%s, want %s on port %d (from the Corefile)", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, port)
	}
	// A directive bound to one address (127.0.0.1:8081) must be probed there; with hostNetwork
	// the kubelet would otherwise ask the node's IP, where nothing listens.
	if host != "" && host != "localhost" && p.HTTPGet.Host != host {
		t.Errorf("%s: probe host %q, want %q (the Corefile binds %s)", what, p.HTTPGet.Host, host, addr)
	}
}

// checkEnvCoversCorefile: every {$VAR} the Corefile reads is set in the container, bar the
// optional ones.
func checkEnvCoversCorefile(t *testing.T, what, corefile string, c corev1.Container, optional ...string) {
	t.Helper()
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	uncommented := regexp.MustCompile(`(?m)#.*$`).ReplaceAllString(corefile, "")
	for _, m := range regexp.MustCompile(`\{\$([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(uncommented, -1) {
		if !env[m[1]] && !slices.Contains(optional, m[1]) {
			t.Errorf("%s: the Corefile reads {$%s} but the container does not set it", what, m[1])
		}
	}
}

// checkMemory: a memory request and limit, and GOMEMLIMIT under the limit.
func checkMemory(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Errorf("%s: no memory limit", what)
		return
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Errorf("%s: no memory request", what)
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Errorf("%s: no CPU request", what)
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		q, err := resource.ParseQuantity(strings.Replace(strings.Replace(e.Value, "MiB", "Mi", 1), "GiB", "Gi", 1))
		if err != nil {
			t.Errorf("%s: GOMEMLIMIT %q: %v", what, e.Value, err)
		} else if q.Cmp(limit) >= 0 || q.Value() < limit.Value()*3/4 {
			t.Errorf("%s: GOMEMLIMIT %s should sit a little under the memory limit %s", what, e.Value, limit.String())
		}
		return
	}
	t.Errorf("%s: no GOMEMLIMIT", what)
}

func TestClusterDeployment(t *testing.T) {
	r := render(t, "cluster")
	corefile := readFile(t, "../Corefile.cluster")
	if len(r.deployments) != 1 || len(r.daemonSets) != 0 {
		t.Fatalf("cluster: want one Deployment, got %d Deployments and %d DaemonSets", len(r.deployments), len(r.daemonSets))
	}
	d := r.deployments[0]
	// Stock identity, so that applying patches the installer's Deployment (its selector is immutable).
	if d.Name != "coredns" || d.Namespace != "kube-system" || d.Spec.Selector.MatchLabels["k8s-app"] != "kube-dns" ||
		d.Spec.Template.Labels["k8s-app"] != "kube-dns" {
		t.Errorf("Deployment %s/%s selector %v labels %v: want kube-system/coredns selecting k8s-app=kube-dns",
			d.Namespace, d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	if len(d.Spec.Selector.MatchLabels) != 1 {
		t.Errorf("selector %v: the stock one is k8s-app=kube-dns alone", d.Spec.Selector.MatchLabels)
	}
	// One disruption budget over exactly the Deployment's pods: a drain takes one at a time.
	if len(r.budgets) != 1 {
		t.Fatalf("cluster: want one PodDisruptionBudget, got %d", len(r.budgets))
	}
	b := r.budgets[0]
	sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) || b.Spec.MaxUnavailable == nil || b.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget %s: selector %v, maxUnavailable %v; want the Deployment's pods, at most 1 unavailable", b.Name, b.Spec.Selector, b.Spec.MaxUnavailable)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("Deployment rollout: want maxUnavailable 0")
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || spec.Containers[0].Name != "coredns" {
		t.Fatalf("want one container named coredns (the stock name), got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !strings.HasPrefix(c.Image, "clusterdns/coredns:") {
		t.Errorf("image %q, want clusterdns/coredns:<tag> (deploy/image)", c.Image)
	}
	if !slices.Equal(c.Args, []string{"-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("args %q", c.Args)
	}
	if spec.ServiceAccountName != "clusterdns" || r.serviceAccounts["clusterdns"] == nil {
		t.Errorf("service account %q, want clusterdns (defined beside it)", spec.ServiceAccountName)
	}
	if spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy %q, want Default (forward . /etc/resolv.conf must not loop back)", spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	checkConfigVolume(t, "cluster", spec, c, configMapOf(t, r, "coredns", false).Name)

	ports := corefilePorts(corefile)
	if len(ports["health"]) != 1 || len(ports["ready"]) != 1 {
		t.Fatalf("Corefile.cluster: health %v ready %v, want one each", ports["health"], ports["ready"])
	}
	checkProbe(t, "cluster readiness", c.ReadinessProbe, "/ready", ports["ready"][0])
	checkProbe(t, "cluster liveness", c.LivenessProbe, "/health", ports["health"][0])
	if !regexp.MustCompile(`(?s)health\s*\{[^}]*lameduck\s+\d+s`).MatchString(corefile) {
		t.Error("Corefile.cluster: health has no lameduck")
	}
	var dnsUDP, dnsTCP, metrics bool
	for _, p := range c.Ports {
		dnsUDP = dnsUDP || p.ContainerPort == 53 && p.Protocol == corev1.ProtocolUDP
		dnsTCP = dnsTCP || p.ContainerPort == 53 && p.Protocol == corev1.ProtocolTCP
		for _, addr := range ports["prometheus"] {
			if _, port := hostPort(t, addr); port == p.ContainerPort {
				metrics = true
			}
		}
	}
	if !dnsUDP || !dnsTCP || !metrics {
		t.Errorf("ports %v: want 53/UDP, 53/TCP and the prometheus port %v", c.Ports, ports["prometheus"])
	}
	checkMemory(t, "cluster", c)
	checkEnvCoversCorefile(t, "cluster", corefile, c, "KUBECONFIG")
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("central role should run as non-root")
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("central role: want allowPrivilegeEscalation false and a read-only root filesystem")
	}
}

// checkConfigVolume: the Corefile's ConfigMap is mounted at /etc/coredns under the stock volume name.
func checkConfigVolume(t *testing.T, what string, spec corev1.PodSpec, c corev1.Container, configMap string) {
	t.Helper()
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "config-volume" {
			vol = &spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != configMap {
		t.Errorf("%s: volume config-volume does not mount ConfigMap %s: %+v", what, configMap, vol)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "config-volume" && m.MountPath == "/etc/coredns" {
			return
		}
	}
	t.Errorf("%s: config-volume is not mounted at /etc/coredns", what)
}

func TestNodeDaemonSet(t *testing.T) {
	for _, dir := range []string{"node", "node-kube-dns-ip"} {
		r := render(t, dir)
		corefile := readFile(t, "../Corefile.nodelocal")
		if len(r.daemonSets) != 1 || len(r.deployments) != 0 {
			t.Fatalf("%s: want one DaemonSet, got %d DaemonSets and %d Deployments", dir, len(r.daemonSets), len(r.deployments))
		}
		ds := r.daemonSets[0]
		if ds.Name != "clusterdns-node" || ds.Namespace != "kube-system" {
			t.Errorf("%s: DaemonSet %s/%s", dir, ds.Namespace, ds.Name)
		}
		// The handover: the new pod starts beside the old one before the old one stops.
		us := ds.Spec.UpdateStrategy
		if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
			us.RollingUpdate.MaxSurge == nil || us.RollingUpdate.MaxSurge.String() != "1" ||
			us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "0" {
			t.Errorf("%s: update strategy %+v, want RollingUpdate with maxSurge 1 and maxUnavailable 0", dir, us)
		}
		spec := ds.Spec.Template.Spec
		if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSDefault {
			t.Errorf("%s: hostNetwork %t dnsPolicy %q, want true and Default", dir, spec.HostNetwork, spec.DNSPolicy)
		}
		if spec.PriorityClassName != "system-node-critical" {
			t.Errorf("%s: priorityClassName %q", dir, spec.PriorityClassName)
		}
		if spec.ServiceAccountName != "clusterdns-node" || r.serviceAccounts["clusterdns-node"] == nil {
			t.Errorf("%s: service account %q, want clusterdns-node (defined beside it)", dir, spec.ServiceAccountName)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", dir, len(spec.Containers))
		}
		c := spec.Containers[0]
		if !strings.HasPrefix(c.Image, "clusterdns/coredns:") {
			t.Errorf("%s: image %q", dir, c.Image)
		}
		// With hostNetwork a declared port is a host port, and the scheduler keeps the surge pod
		// off a node whose old pod holds it: the rolling update would never finish.
		if len(c.Ports) != 0 {
			t.Errorf("%s: container declares ports %v: with hostNetwork they become hostPorts and block maxSurge", dir, c.Ports)
		}
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Add, "NET_ADMIN") {
			t.Errorf("%s: NET_ADMIN not added", dir)
		} else {
			for _, capability := range sc.Capabilities.Add {
				if !slices.Contains([]corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}, capability) {
					t.Errorf("%s: capability %s is more than the node role needs", dir, capability)
				}
			}
			if !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: capabilities not dropped first", dir)
			}
		}
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", dir)
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
			t.Errorf("%s: NODE_NAME must come from the downward API (spec.nodeName): %+v", dir, e)
		}
		if !strings.Contains(env["LOCAL_IPS"].Value, "169.254.20.10") {
			t.Errorf("%s: LOCAL_IPS %q lacks 169.254.20.10", dir, env["LOCAL_IPS"].Value)
		}
		if dir == "node-kube-dns-ip" && len(strings.Fields(env["LOCAL_IPS"].Value)) != 2 {
			t.Errorf("%s: LOCAL_IPS %q should add the kube-dns address", dir, env["LOCAL_IPS"].Value)
		}
		// CLUSTER_DNS: the clusterdns-upstream Service, through the variable kubelet sets for it.
		up := r.services["clusterdns-upstream"]
		if up == nil {
			t.Fatalf("%s: no clusterdns-upstream Service", dir)
		}
		if env["CLUSTER_DNS"].Value != "$(CLUSTERDNS_UPSTREAM_SERVICE_HOST)" || spec.EnableServiceLinks == nil || !*spec.EnableServiceLinks {
			t.Errorf("%s: CLUSTER_DNS %q, want $(CLUSTERDNS_UPSTREAM_SERVICE_HOST) with service links on", dir, env["CLUSTER_DNS"].Value)
		}
		checkEnvCoversCorefile(t, dir, corefile, c, "KUBECONFIG")
		checkMemory(t, dir, c)
		checkConfigVolume(t, dir, spec, c, configMapOf(t, r, "clusterdns-node", true).Name)

		// The instances of a node find each other through /run/nodecache: both pods must see the host's.
		shared := false
		for _, v := range spec.Volumes {
			if v.HostPath != nil && v.HostPath.Path == "/run/nodecache" {
				for _, m := range c.VolumeMounts {
					shared = shared || m.Name == v.Name && m.MountPath == "/run/nodecache"
				}
			}
		}
		if !shared {
			t.Errorf("%s: /run/nodecache of the host is not mounted at /run/nodecache", dir)
		}

		ports := corefilePorts(corefile)
		if len(ports["health"]) != 1 || len(ports["ready"]) != 1 {
			t.Fatalf("Corefile.nodelocal: health %v ready %v, want one each", ports["health"], ports["ready"])
		}
		checkProbe(t, dir+" readiness", c.ReadinessProbe, "/ready", ports["ready"][0])
		checkProbe(t, dir+" liveness", c.LivenessProbe, "/health", ports["health"][0])
		if ds.Spec.Template.Annotations["prometheus.io/port"] != "9253" || !slices.Contains(ports["prometheus"], ":9253") {
			t.Errorf("%s: metrics port annotation %q, Corefile prometheus %v", dir, ds.Spec.Template.Annotations["prometheus.io/port"], ports["prometheus"])
		}
		// The headless metrics Service selects exactly these pods, on the Corefile's port.
		if dir == "node" {
			ms := r.services["clusterdns-node-metrics"]
			if ms == nil || ms.Spec.ClusterIP != corev1.ClusterIPNone || len(ms.Spec.Ports) != 1 || ms.Spec.Ports[0].Port != 9253 ||
				ms.Spec.Ports[0].TargetPort.IntValue() != 9253 || ms.Spec.Ports[0].Name != "metrics" ||
				!labels.SelectorFromSet(ms.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
				t.Errorf("%s: clusterdns-node-metrics %+v: want a headless Service on port 9253 over the DaemonSet's pods", dir, ms)
			}
		}
	}
}

func TestUpstreamService(t *testing.T) {
	cluster, node := render(t, "cluster"), render(t, "node")
	svc := node.services["clusterdns-upstream"]
	if svc == nil {
		t.Fatal("no clusterdns-upstream")
	}
	pods := cluster.deployments[0].Spec.Template.Labels
	for k, v := range svc.Spec.Selector {
		if pods[k] != v {
			t.Errorf("clusterdns-upstream selects %v, which the central role's pods (%v) do not carry", svc.Spec.Selector, pods)
		}
	}
	if len(svc.Spec.Selector) == 0 || svc.Spec.Selector["k8s-app"] != "kube-dns" {
		t.Errorf("clusterdns-upstream selector %v, want kube-dns's (k8s-app=kube-dns)", svc.Spec.Selector)
	}
	var udp, tcp bool
	for _, p := range svc.Spec.Ports {
		udp = udp || p.Port == 53 && p.Protocol == corev1.ProtocolUDP && p.TargetPort.IntValue() == 53
		tcp = tcp || p.Port == 53 && p.Protocol == corev1.ProtocolTCP && p.TargetPort.IntValue() == 53
	}
	if !udp || !tcp {
		t.Errorf("clusterdns-upstream ports %v, want 53/UDP and 53/TCP", svc.Spec.Ports)
	}

	// The pipelined path lines up: Corefile.cluster's pipelining port, the central container's
	// port of that number, the Service port named dns-pipelined onto it, and the node role's
	// CLUSTER_DNS_PIPELINED built from the variable kubelet sets for that Service port.
	m := regexp.MustCompile(`(?m)^\s*pipelining\s+\S+:(\d+)`).FindStringSubmatch(readFile(t, "cluster/Corefile"))
	if m == nil {
		t.Fatal("Corefile.cluster has no `pipelining ADDRESS:PORT`")
	}
	port := m[1]
	declared := false
	for _, p := range cluster.deployments[0].Spec.Template.Spec.Containers[0].Ports {
		declared = declared || strconv.Itoa(int(p.ContainerPort)) == port && p.Protocol == corev1.ProtocolTCP
	}
	if !declared {
		t.Errorf("the central container does not declare TCP port %s (pipelining)", port)
	}
	var pipelined *corev1.ServicePort
	for i, p := range svc.Spec.Ports {
		if p.Name == "dns-pipelined" {
			pipelined = &svc.Spec.Ports[i]
		}
	}
	if pipelined == nil || pipelined.Protocol != corev1.ProtocolTCP || pipelined.TargetPort.String() != port {
		t.Fatalf("clusterdns-upstream port dns-pipelined %+v, want TCP onto the pipelining port %s", pipelined, port)
	}
	for _, e := range node.daemonSets[0].Spec.Template.Spec.Containers[0].Env {
		if e.Name == "CLUSTER_DNS_PIPELINED" && e.Value != "[$(CLUSTERDNS_UPSTREAM_SERVICE_HOST)]:$(CLUSTERDNS_UPSTREAM_SERVICE_PORT_DNS_PIPELINED)" {
			t.Errorf("CLUSTER_DNS_PIPELINED %q, want the Service's host and its dns-pipelined port", e.Value)
		}
	}
}

// TestRBAC: each ClusterRole grants get/list/watch only, on exactly the resources its role's
// plugins read, and is bound to the service account its workload runs as.
func TestRBAC(t *testing.T) {
	for _, c := range []struct {
		dir, role string
		want      []string // group/resource
	}{
		// k8sdiscovery: Services, EndpointSlices, Namespaces, and Pods for `pods verified`.
		{"cluster", "clusterdns", []string{"/namespaces", "/pods", "/services", "discovery.k8s.io/endpointslices"}},
		// searchpath's watch of this node's pods; nodecache reads nothing.
		{"node", "clusterdns-node", []string{"/pods"}},
	} {
		r := render(t, c.dir)
		if len(r.roles) != 1 {
			t.Errorf("%s: %d ClusterRoles, want 1", c.dir, len(r.roles))
		}
		role := r.roles[c.role]
		if role == nil {
			t.Fatalf("%s: no ClusterRole %s", c.dir, c.role)
		}
		if role.AggregationRule != nil {
			t.Errorf("%s: aggregated role", c.role)
		}
		var got []string
		for _, rule := range role.Rules {
			if len(rule.NonResourceURLs) > 0 || len(rule.ResourceNames) > 0 {
				t.Errorf("%s: unexpected rule %+v", c.role, rule)
			}
			for _, v := range rule.Verbs {
				if v != "get" && v != "list" && v != "watch" {
					t.Errorf("%s: verb %q: the plugins only read", c.role, v)
				}
			}
			if !slices.Contains(rule.Verbs, "list") || !slices.Contains(rule.Verbs, "watch") {
				t.Errorf("%s: rule %+v: informers need list and watch", c.role, rule)
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					if g == "*" || res == "*" || strings.Contains(res, "/") {
						t.Errorf("%s: %q/%q: wildcards and subresources are more than the plugins need", c.role, g, res)
					}
					got = append(got, g+"/"+res)
				}
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s grants %v, want exactly %v", c.role, got, c.want)
		}

		var workloadSA string
		if len(r.deployments) > 0 {
			workloadSA = r.deployments[0].Spec.Template.Spec.ServiceAccountName
		} else {
			workloadSA = r.daemonSets[0].Spec.Template.Spec.ServiceAccountName
		}
		bound := false
		for _, b := range r.bindings {
			if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != c.role {
				continue
			}
			for _, s := range b.Subjects {
				bound = bound || s.Kind == "ServiceAccount" && s.Name == workloadSA && s.Namespace == "kube-system"
			}
		}
		if !bound {
			t.Errorf("%s: ClusterRole %s is not bound to kube-system/%s", c.dir, c.role, workloadSA)
		}
	}
}

// TestOneImage: both roles run the same image, set in one place (deploy/image).
func TestOneImage(t *testing.T) {
	all := render(t, ".")
	images := map[string]bool{}
	for _, d := range all.deployments {
		images[d.Spec.Template.Spec.Containers[0].Image] = true
	}
	for _, d := range all.daemonSets {
		images[d.Spec.Template.Spec.Containers[0].Image] = true
	}
	if len(images) != 1 {
		t.Errorf("images %v, want one", keys(images))
	}
	comp := readFile(t, "image/kustomization.yaml")
	if !bytes.Contains([]byte(comp), []byte("name: clusterdns/coredns")) {
		t.Error("deploy/image does not set clusterdns/coredns")
	}
}

// TestNodeAsksCentralFirst: both blocks of the node role send misses to the cluster DNS first
// (pipelined, then one query per connection on port 53 while the pipelining port fails), so
// that the central role's configuration (stub domains and forward rules in kube-system/coredns)
// answers the same with a node cache in front; the `.` block falls back to the node's resolvers.
func TestNodeAsksCentralFirst(t *testing.T) {
	t.Setenv("CLUSTER_DNS", "10.96.0.10") // the parser expands {$CLUSTER_DNS}
	t.Setenv("CLUSTER_DNS_PIPELINED", "[10.96.0.10]:5353")
	r := render(t, "node")
	cm := configMapOf(t, r, "clusterdns-node", true)
	blocks, err := caddyfile.Parse("Corefile", strings.NewReader(cm.Data["Corefile"]), nil)
	if err != nil || len(blocks) == 0 {
		t.Fatalf("the Corefile does not parse into server blocks: %v", err)
	}
	for _, b := range blocks {
		var upstreams [][]string
		toks := b.Tokens["nodecache"]
		for i := 0; i < len(toks); i++ {
			if toks[i].Text != "upstream" {
				continue
			}
			var args []string
			for j := i + 1; j < len(toks) && toks[j].Line == toks[i].Line; j++ {
				args = append(args, toks[j].Text)
			}
			upstreams = append(upstreams, args)
		}
		if len(upstreams) < 2 || !slices.Equal(upstreams[0], []string{"pipelined", "[10.96.0.10]:5353"}) || !slices.Equal(upstreams[1], []string{"tcp", "10.96.0.10"}) {
			t.Errorf("block %v: upstreams %v, want `pipelined {$CLUSTER_DNS_PIPELINED}` then `tcp {$CLUSTER_DNS}` first", b.Keys, upstreams)
		}
		if slices.Contains(b.Keys, ".") && (len(upstreams) != 3 || !slices.Equal(upstreams[2], []string{"udp", "/etc/resolv.conf"})) {
			t.Errorf("block %v: upstreams %v, want the node's resolvers after the cluster DNS", b.Keys, upstreams)
		}
	}
}
