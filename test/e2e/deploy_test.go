package e2e

// The deploy/ folders against the real apiserver, with the kubectl that
// test/e2e/controlplane/build.sh builds beside it:
//
//   TestDeployDryRun  every kustomize folder passes `kubectl apply --server-side --force-conflicts
//                     --dry-run=server -k`, reporting exactly the objects kustomize builds, and
//                     creates nothing; over a stock `coredns` Deployment too (where
//                     --force-conflicts is what makes it pass).
//   TestDeployRBAC    the ServiceAccounts, ClusterRoles and ClusterRoleBindings of deploy/ applied
//                     for real; `kubectl auth can-i` as each ServiceAccount for what its plugins
//                     read (yes) and a list of what they must not do (no), and the whole rules
//                     review (`can-i --list`); then a token of each ServiceAccount used through
//                     client-go. Everything it creates is deleted at the end.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
)

// deployDirs are the kustomize folders under deploy/, as deploy/deploy_test.go lists them.
var deployDirs = []string{".", "cluster", "node", "node-kube-dns-ip"}

// kubectl runs the harness's kubectl as the admin of the test cluster, with stdin when not empty.
func kubectl(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := filepath.Join(harness.cp.binDir, "kubectl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"--kubeconfig=" + harness.cp.kubeconfig, "--cache-dir=" + filepath.Join(harness.dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func mustKubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// manifest is one object of a kustomize build.
type manifest struct {
	apiVersion, kind, namespace, name string
	doc                               []byte // the YAML document
}

// ref is how kubectl names the object in its output: kind.group/name, lower case.
func (m manifest) ref() string {
	kind := strings.ToLower(m.kind)
	if group, _, ok := strings.Cut(m.apiVersion, "/"); ok {
		kind += "." + group
	}
	return kind + "/" + m.name
}

// kustomizeBuild is `kubectl kustomize deploy/<dir>`, split into objects.
func kustomizeBuild(t testing.TB, dir string) []manifest {
	t.Helper()
	out := mustKubectl(t, "", "kustomize", filepath.Join(harness.root, "deploy", dir))
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var ms []manifest
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kustomize deploy/%s: %v", dir, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := utilyaml.ToJSON(doc)
		if err != nil {
			t.Fatalf("kustomize deploy/%s: %v", dir, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatalf("kustomize deploy/%s: %v", dir, err)
		}
		ms = append(ms, manifest{head.APIVersion, head.Kind, head.Metadata.Namespace, head.Metadata.Name, doc})
	}
	if len(ms) == 0 {
		t.Fatalf("kustomize deploy/%s: no objects", dir)
	}
	return ms
}

// joinDocs makes one multi-document YAML stream.
func joinDocs(ms []manifest) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString("---\n")
		b.Write(m.doc)
		if !bytes.HasSuffix(m.doc, []byte("\n")) {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// serverDryRun applies deploy/<dir> with --dry-run=server and checks that kubectl reports every
// object of the build, and only those, as server-side applied in a dry run.
func serverDryRun(t *testing.T, dir string, built []manifest) {
	t.Helper()
	start := time.Now()
	out := mustKubectl(t, "", "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", filepath.Join(harness.root, "deploy", dir))
	t.Logf("kubectl apply --server-side --force-conflicts --dry-run=server -k deploy/%s (%s):\n%s",
		dir, time.Since(start).Round(time.Millisecond), strings.TrimRight(out, "\n"))
	want := map[string]bool{}
	for _, m := range built {
		want[m.ref()] = true
	}
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		ref, rest, _ := strings.Cut(line, " ")
		if rest != "serverside-applied (server dry run)" {
			t.Errorf("deploy/%s: unexpected line %q", dir, line)
			continue
		}
		got[ref] = true
	}
	for r := range want {
		if !got[r] {
			t.Errorf("deploy/%s: %s built by kustomize but not reported by the dry run", dir, r)
		}
	}
	for r := range got {
		if !want[r] {
			t.Errorf("deploy/%s: %s reported by the dry run but not in the kustomize build", dir, r)
		}
	}
}

func TestDeployDryRun(t *testing.T) {
	total := 0
	for _, dir := range deployDirs {
		t.Run("deploy/"+dir, func(t *testing.T) {
			built := kustomizeBuild(t, dir)
			serverDryRun(t, dir, built)
			total += len(built)
			// A dry run writes nothing.
			for _, m := range built {
				if m.kind != "ServiceAccount" && m.kind != "Deployment" && m.kind != "DaemonSet" {
					continue
				}
				if _, errOut, err := kubectl(t, "", "get", "-n", m.namespace, m.ref()); err == nil || !strings.Contains(errOut, "NotFound") {
					t.Errorf("deploy/%s: %s exists after a dry run (err %v, %s)", dir, m.ref(), err, strings.TrimSpace(errOut))
				}
			}
		})
	}

	// The central role patches the installer's coredns Deployment in place: make one as kubeadm
	// does (a create, so its fields belong to another manager) and dry-run deploy/cluster over it.
	t.Run("deploy/cluster over a stock coredns Deployment", func(t *testing.T) {
		stock := stockCoreDNSDeployment()
		deps := harness.client.AppsV1().Deployments("kube-system")
		if _, err := deps.Create(ctx(), stock, metav1.CreateOptions{FieldManager: "kubeadm"}); err != nil {
			t.Fatalf("create the stock coredns Deployment: %v", err)
		}
		t.Cleanup(func() {
			if err := deps.Delete(ctx(), "coredns", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete the stock coredns Deployment: %v", err)
			}
		})
		dir := filepath.Join(harness.root, "deploy", "cluster")
		// Without --force-conflicts server-side apply refuses to take over kubeadm's fields.
		out, errOut, err := kubectl(t, "", "apply", "--server-side", "--dry-run=server", "-k", dir)
		if err == nil || !strings.Contains(errOut, "conflict") {
			t.Errorf("apply without --force-conflicts over the stock Deployment: want a conflict, got err %v\n%s%s", err, out, errOut)
		} else {
			t.Logf("without --force-conflicts, as expected:\n%s", strings.TrimSpace(errOut))
		}
		built := kustomizeBuild(t, "cluster")
		serverDryRun(t, "cluster", built)
		total += len(built)
		got, err := deps.Get(ctx(), "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := got.Spec.Template.Spec.Containers[0].Image; img != stock.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("the dry run changed the stock Deployment's image to %s", img)
		}
	})
	t.Logf("dry runs: %d (the %d folders, deploy/cluster over a stock Deployment), %d objects reported as kustomize built them", len(deployDirs)+1, len(deployDirs), total)
}

// stockCoreDNSDeployment is the part of kubeadm's CoreDNS Deployment that matters here: the
// identity deploy/cluster shares with it and the fields it changes.
func stockCoreDNSDeployment() *appsv1.Deployment {
	labels := map[string]string{"k8s-app": "kube-dns"}
	replicas := int32(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "coredns",
					PriorityClassName:  "system-cluster-critical",
					DNSPolicy:          corev1.DNSDefault,
					Containers: []corev1.Container{{
						Name:  "coredns",
						Image: "registry.k8s.io/coredns/coredns:v1.12.0",
						Args:  []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts: []corev1.VolumeMount{{
							Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true,
						}},
					}},
					Volumes: []corev1.Volume{{
						Name: "config-volume",
						VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
							Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
						}},
					}},
				},
			},
		},
	}
}

// accessCheck is one `kubectl auth can-i` question and the answer the manifests must give.
type accessCheck struct {
	verb, resource string
	subresource    string
	namespace      string // "" = all namespaces (-A)
	want           bool
}

func (c accessCheck) args(user string) []string {
	a := []string{"auth", "can-i", "--as=" + user, c.verb, c.resource}
	if c.subresource != "" {
		a = append(a, "--subresource="+c.subresource)
	}
	if c.namespace == "" {
		return append(a, "-A")
	}
	return append(a, "-n", c.namespace)
}

func (c accessCheck) String() string {
	s := c.verb + " " + c.resource
	if c.subresource != "" {
		s += "/" + c.subresource
	}
	if c.namespace == "" {
		return s + " -A"
	}
	return s + " -n " + c.namespace
}

// serviceAccountRole is what one ServiceAccount of deploy/ may do.
type serviceAccountRole struct {
	name    string              // in kube-system
	allowed map[string][]string // resource -> verbs, exactly the ClusterRole's rules
}

func (r serviceAccountRole) user() string { return "system:serviceaccount:kube-system:" + r.name }

var deployRoles = []serviceAccountRole{
	{"clusterdns", map[string][]string{
		"services": {"list", "watch"}, "endpointslices.discovery.k8s.io": {"list", "watch"},
		"namespaces": {"list", "watch"}, "pods": {"list", "watch"},
	}},
	{"clusterdns-node", map[string][]string{"pods": {"list", "watch"}}},
}

// clusterScoped resources get only the -A form of a check.
var clusterScoped = map[string]bool{"namespaces": true, "nodes": true, "clusterroles.rbac.authorization.k8s.io": true,
	"clusterrolebindings.rbac.authorization.k8s.io": true, "customresourcedefinitions.apiextensions.k8s.io": true,
	"persistentvolumes": true, "users": true}

// checksFor lists the questions for one ServiceAccount: every granted verb (all namespaces, the
// kube-system namespace, another namespace) must be yes, and everything below no (all namespaces
// and kube-system; the rules reviews cover every rule of a namespace).
func checksFor(r serviceAccountRole) []accessCheck {
	var cs []accessCheck
	scopes := func(resource string) []string {
		if clusterScoped[resource] {
			return []string{""}
		}
		return []string{"", "kube-system", "default"}
	}
	add := func(verb, resource, sub string, want bool) {
		for _, ns := range scopes(resource) {
			if !want && ns == "default" { // a denial: cluster-wide and in kube-system suffice
				continue
			}
			cs = append(cs, accessCheck{verb, resource, sub, ns, want})
		}
	}
	// What the plugins read, and the other verbs on the same four kinds.
	for _, res := range []string{"services", "endpointslices.discovery.k8s.io", "namespaces", "pods"} {
		for _, verb := range []string{"list", "watch", "get", "create", "update", "patch", "delete", "deletecollection"} {
			add(verb, res, "", slices.Contains(r.allowed[res], verb))
		}
	}
	// Reads of what no plugin needs.
	for _, res := range []string{"secrets", "configmaps", "nodes", "endpoints", "serviceaccounts", "events",
		"deployments.apps", "daemonsets.apps", "leases.coordination.k8s.io",
		"clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
		"customresourcedefinitions.apiextensions.k8s.io", "persistentvolumes"} {
		for _, verb := range []string{"get", "list", "watch"} {
			add(verb, res, "", false)
		}
	}
	// Writes that would let a stolen token do harm or climb.
	for _, c := range []struct{ verb, res, sub string }{
		{"create", "events", ""}, {"create", "configmaps", ""}, {"update", "configmaps", ""},
		{"update", "endpointslices.discovery.k8s.io", ""}, {"patch", "services", ""},
		{"create", "pods", "exec"}, {"get", "pods", "log"}, {"update", "pods", "status"},
		{"create", "pods", "eviction"}, {"patch", "nodes", "status"},
		{"create", "serviceaccounts", "token"}, {"update", "deployments.apps", ""},
		{"patch", "daemonsets.apps", ""}, {"bind", "clusterroles.rbac.authorization.k8s.io", ""},
		{"escalate", "clusterroles.rbac.authorization.k8s.io", ""},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io", ""},
		{"impersonate", "users", ""}, {"impersonate", "serviceaccounts", ""},
		{"*", "*", ""},
	} {
		add(c.verb, c.res, c.sub, false)
	}
	return cs
}

// checkResult is the answer kubectl gave.
type checkResult struct {
	check  accessCheck
	answer string // "yes", "no", or the error
	ok     bool   // answer == want
}

// runChecks asks kubectl every question as user, four at a time (each is a process).
func runChecks(t *testing.T, user string, cs []accessCheck) []checkResult {
	t.Helper()
	res := make([]checkResult, len(cs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out, errOut, err := kubectl(t, "", c.args(user)...)
			answer, _, _ := strings.Cut(strings.TrimSpace(out), " ")
			switch {
			case answer == "yes" && err == nil:
			case answer == "no":
			default:
				answer = fmt.Sprintf("error %v: %s %s", err, strings.TrimSpace(out), strings.TrimSpace(errOut))
			}
			res[i] = checkResult{c, answer, answer == yesNo(c.want)}
		}()
	}
	wg.Wait()
	return res
}

// tally counts results and reports mismatches; it logs every check.
type tally struct{ run, allowed, denied, mismatches int }

func (tl *tally) add(t *testing.T, who string, rs []checkResult) {
	t.Helper()
	var b strings.Builder
	for _, r := range rs {
		tl.run++
		want := yesNo(r.check.want)
		switch {
		case !r.ok:
			tl.mismatches++
			t.Errorf("%s: can-i %s = %s, want %s", who, r.check, r.answer, want)
		case r.check.want:
			tl.allowed++
		default:
			tl.denied++
		}
		fmt.Fprintf(&b, "\n  %-4s %s", r.answer, r.check)
	}
	t.Logf("%s: %d kubectl auth can-i checks:%s", who, len(rs), b.String())
}

func (tl tally) String() string {
	return fmt.Sprintf("%d checks: %d allowed, %d denied as expected, %d mismatches", tl.run, tl.allowed, tl.denied, tl.mismatches)
}

// rbacObjects is what deploy/ (both roles) creates for its identities.
func rbacObjects(t *testing.T) []manifest {
	t.Helper()
	var ms []manifest
	for _, m := range kustomizeBuild(t, ".") {
		switch m.kind {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			ms = append(ms, m)
		}
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.ref())
	}
	sort.Strings(names)
	want := []string{
		"clusterrole.rbac.authorization.k8s.io/clusterdns", "clusterrole.rbac.authorization.k8s.io/clusterdns-node",
		"clusterrolebinding.rbac.authorization.k8s.io/clusterdns", "clusterrolebinding.rbac.authorization.k8s.io/clusterdns-node",
		"serviceaccount/clusterdns", "serviceaccount/clusterdns-node",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("RBAC objects of deploy/: %v, want %v", names, want)
	}
	return ms
}

func TestDeployRBAC(t *testing.T) {
	objs := rbacObjects(t)
	stream := joinDocs(objs)
	var before, after, reviews, tokens tally
	defaults := rulesBefore(t)

	// Before the manifests: the ServiceAccounts can do none of it (the grants come from deploy/).
	for _, r := range deployRoles {
		var cs []accessCheck
		for res, verbs := range r.allowed {
			for _, v := range verbs {
				cs = append(cs, accessCheck{v, res, "", "", false})
			}
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].String() < cs[j].String() })
		before.add(t, r.name+" before apply", runChecks(t, r.user(), cs))
	}

	start := time.Now()
	out := mustKubectl(t, stream, "apply", "--server-side", "-f", "-")
	t.Logf("kubectl apply --server-side of deploy/'s %d RBAC objects (%s):\n%s", len(objs), time.Since(start).Round(time.Millisecond), strings.TrimRight(out, "\n"))
	t.Cleanup(func() {
		c := harness.client
		for _, r := range deployRoles {
			for _, err := range []error{
				c.RbacV1().ClusterRoleBindings().Delete(ctx(), r.name, metav1.DeleteOptions{}),
				c.RbacV1().ClusterRoles().Delete(ctx(), r.name, metav1.DeleteOptions{}),
				c.CoreV1().ServiceAccounts("kube-system").Delete(ctx(), r.name, metav1.DeleteOptions{}),
			} {
				if err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})

	for _, r := range deployRoles {
		after.add(t, r.name, runChecks(t, r.user(), checksFor(r)))
		rulesReview(t, r, defaults, &reviews)
	}

	for _, r := range deployRoles {
		tokenRequests(t, r, &tokens)
	}

	t.Logf("before apply: %s", before)
	t.Logf("after apply:  %s", after)
	t.Logf("can-i --list: %d rules reviews (the additions match the ClusterRole: %d, mismatches: %d)", reviews.run, reviews.allowed, reviews.mismatches)
	t.Logf("tokens:       %s", tokens)
	t.Logf("RBAC total:   %d checks (%d can-i before apply, %d can-i after, %d can-i --list, %d token requests): "+
		"%d allowed and %d denied as expected, %d rules reviews exact, %d mismatches",
		before.run+after.run+reviews.run+tokens.run, before.run, after.run, reviews.run, tokens.run,
		before.allowed+after.allowed+tokens.allowed, before.denied+after.denied+tokens.denied, reviews.allowed,
		before.mismatches+after.mismatches+reviews.mismatches+tokens.mismatches)
}

// rules is the resource part of `kubectl auth can-i --list` as the user in ns: resource -> verbs
// (sorted), and the raw output.
func rules(t *testing.T, user, ns string) (map[string][]string, string) {
	t.Helper()
	out := mustKubectl(t, "", "auth", "can-i", "--list", "--as="+user, "-n", ns)
	got := map[string][]string{}
	for i, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if i == 0 || line == "" || line[0] == ' ' || line[0] == '\t' { // header; non-resource URLs
			continue
		}
		f := strings.Fields(line)
		n := verbCount(f)
		res := f[0]
		if len(f) >= n+2 && f[len(f)-n-1] != "[]" {
			res += "[" + f[len(f)-n-1] + "]" // a rule limited to resource names
		}
		for _, v := range strings.Fields(strings.Trim(strings.Join(f[len(f)-n:], " "), "[]")) {
			if !slices.Contains(got[res], v) {
				got[res] = append(got[res], v)
			}
		}
	}
	for res := range got {
		sort.Strings(got[res])
	}
	return got, out
}

// ruleScopes are the namespaces of the rules reviews.
var ruleScopes = []string{"kube-system", "default"}

// rulesBefore is what each ServiceAccount may do before deploy/ is applied: the defaults every
// authenticated user has (self reviews, cluster trust bundles, discovery URLs).
func rulesBefore(t *testing.T) map[string]map[string][]string {
	t.Helper()
	m := map[string]map[string][]string{}
	for _, r := range deployRoles {
		for _, ns := range ruleScopes {
			m[r.name+" "+ns], _ = rules(t, r.user(), ns)
		}
	}
	t.Logf("resource rules every ServiceAccount has before deploy/ (defaults of the apiserver): %v", m[deployRoles[0].name+" kube-system"])
	return m
}

// rulesReview: `kubectl auth can-i --list` as the ServiceAccount, minus what it could do before
// deploy/ was applied, is exactly the ClusterRole's resources and verbs.
func rulesReview(t *testing.T, r serviceAccountRole, before map[string]map[string][]string, tl *tally) {
	t.Helper()
	want := map[string][]string{}
	for res, v := range r.allowed {
		want[res] = slices.Sorted(slices.Values(v))
	}
	for _, ns := range ruleScopes {
		after, out := rules(t, r.user(), ns)
		added := map[string][]string{}
		for res, verbs := range after {
			for _, v := range verbs {
				if !slices.Contains(before[r.name+" "+ns][res], v) {
					added[res] = append(added[res], v)
				}
			}
		}
		tl.run++
		if mapsEqual(added, want) {
			tl.allowed++
		} else {
			tl.mismatches++
			t.Errorf("%s -n %s: can-i --list adds %v to the defaults, want %v", r.name, ns, added, want)
		}
		t.Logf("kubectl auth can-i --list --as=%s -n %s (added by deploy/: %v):\n%s", r.user(), ns, added, strings.TrimRight(out, "\n"))
	}
}

// verbCount is how many trailing fields of a can-i --list row make up its "[verb verb]" column.
func verbCount(f []string) int {
	for n := 1; n <= len(f); n++ {
		if strings.HasPrefix(f[len(f)-n], "[") {
			return n
		}
	}
	return 1
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// tokenRequests gets a real token of the ServiceAccount (`kubectl create token`, the TokenRequest
// API) and uses it through client-go: what the plugins do works, the rest is forbidden.
func tokenRequests(t *testing.T, r serviceAccountRole, tl *tally) {
	t.Helper()
	token := strings.TrimSpace(mustKubectl(t, "", "create", "token", r.name, "-n", "kube-system", "--duration=10m"))
	if strings.Count(token, ".") != 2 {
		t.Fatalf("kubectl create token %s: not a JWT: %q", r.name, token)
	}
	who := strings.TrimSpace(mustKubectl(t, "", "auth", "whoami", "--token="+token, "-o", "jsonpath={.status.userInfo.username}"))
	if who != r.user() {
		t.Errorf("kubectl auth whoami with the %s token: %q, want %q", r.name, who, r.user())
	}
	cfg, err := harness.cp.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.BearerToken, cfg.BearerTokenFile = token, ""
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review with the %s token: %v", r.name, err)
	}
	if u := review.Status.UserInfo.Username; u != r.user() {
		t.Errorf("the %s token authenticates as %q", r.name, u)
	}

	type call struct {
		what string
		do   func() (int, error) // items seen
	}
	list := func(what string, f func() (int, error)) call { return call{what, f} }
	opts := metav1.ListOptions{}
	watch := func(f func() (interface{ Stop() }, error)) func() (int, error) {
		return func() (int, error) {
			w, err := f()
			if err == nil {
				w.Stop()
			}
			return 0, err
		}
	}
	one := int64(1)
	wopts := metav1.ListOptions{TimeoutSeconds: &one}
	calls := []call{
		list("list services -A", func() (int, error) { return listed(c.CoreV1().Services("").List(ctx(), opts)) }),
		list("watch services -A", watch(func() (interface{ Stop() }, error) { return c.CoreV1().Services("").Watch(ctx(), wopts) })),
		list("list endpointslices -A", func() (int, error) { return listed(c.DiscoveryV1().EndpointSlices("").List(ctx(), opts)) }),
		list("watch endpointslices -A", watch(func() (interface{ Stop() }, error) { return c.DiscoveryV1().EndpointSlices("").Watch(ctx(), wopts) })),
		list("list namespaces", func() (int, error) { return listed(c.CoreV1().Namespaces().List(ctx(), opts)) }),
		list("list pods -A", func() (int, error) { return listed(c.CoreV1().Pods("").List(ctx(), opts)) }),
		list("list pods -A spec.nodeName="+nodeName, func() (int, error) {
			return listed(c.CoreV1().Pods("").List(ctx(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName}))
		}),
		list("watch pods -A spec.nodeName="+nodeName, watch(func() (interface{ Stop() }, error) {
			return c.CoreV1().Pods("").Watch(ctx(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName, TimeoutSeconds: &one})
		})),
		list("get service default/kubernetes", func() (int, error) {
			_, err := c.CoreV1().Services("default").Get(ctx(), "kubernetes", metav1.GetOptions{})
			return 1, err
		}),
		list("list secrets -A", func() (int, error) { return listed(c.CoreV1().Secrets("").List(ctx(), opts)) }),
		list("list secrets -n kube-system", func() (int, error) { return listed(c.CoreV1().Secrets("kube-system").List(ctx(), opts)) }),
		list("list configmaps -n kube-system", func() (int, error) { return listed(c.CoreV1().ConfigMaps("kube-system").List(ctx(), opts)) }),
		list("list nodes", func() (int, error) { return listed(c.CoreV1().Nodes().List(ctx(), opts)) }),
		list("list endpoints -A", func() (int, error) { return listed(c.CoreV1().Endpoints("").List(ctx(), opts)) }),
		list("create configmap -n kube-system", func() (int, error) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "clusterdns-rbac-probe", Namespace: "kube-system"}}
			_, err := c.CoreV1().ConfigMaps("kube-system").Create(ctx(), cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return 1, err
		}),
		list("delete service default/kubernetes (dry run)", func() (int, error) {
			return 1, c.CoreV1().Services("default").Delete(ctx(), "kubernetes", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}),
	}
	// What each call needs from the ClusterRole.
	needs := map[string]string{
		"list services -A": "services", "watch services -A": "services",
		"list endpointslices -A": "endpointslices.discovery.k8s.io", "watch endpointslices -A": "endpointslices.discovery.k8s.io",
		"list namespaces": "namespaces", "list pods -A": "pods",
		"list pods -A spec.nodeName=" + nodeName: "pods", "watch pods -A spec.nodeName=" + nodeName: "pods",
	}
	var b strings.Builder
	for _, cl := range calls {
		n, err := cl.do()
		want := needs[cl.what] != "" && r.allowed[needs[cl.what]] != nil
		tl.run++
		var got string
		switch {
		case err == nil:
			got = fmt.Sprintf("ok (%d items)", n)
			if strings.HasPrefix(cl.what, "watch") {
				got = "ok (watch opened)"
			}
		case apierrors.IsForbidden(err):
			got = "forbidden"
		default:
			got = "error: " + err.Error()
		}
		switch {
		case want && err == nil:
			tl.allowed++
		case !want && apierrors.IsForbidden(err):
			tl.denied++
		default:
			tl.mismatches++
			t.Errorf("%s token: %s: %s, want %s", r.name, cl.what, got, map[bool]string{true: "ok", false: "forbidden"}[want])
		}
		fmt.Fprintf(&b, "\n  %-40s %s", cl.what, got)
	}
	t.Logf("%s token (kubectl create token, %d characters; whoami %s) through client-go:%s", r.name, len(token), who, b.String())
}

// listed is the number of items of a list call that succeeded.
func listed[L runtime.Object](l L, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	return apimeta.LenList(l), nil
}

func yesNo(b bool) string { return map[bool]string{true: "yes", false: "no"}[b] }
