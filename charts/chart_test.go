// Package charts holds the Helm chart charts/clusterdns and, in these tests, the checks that keep
// it honest: `helm lint` passes, `helm template` with default values renders exactly the objects
// that kustomize builds from deploy/ (every field, and for each deploy/ folder the values that
// select it), the options the defaults leave off (autoscaler, metrics Services, ServiceMonitors)
// fit together, and everything rendered passes a server-side dry run on a real kube-apiserver
// (apiserver_test.go). helm itself is built from the Go module proxy by charts/helm/build.sh.
package charts

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// chartDir is the chart, relative to this package.
const chartDir = "clusterdns"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary builds helm with charts/helm/build.sh (a no-op when .cache/ has it) and returns its
// path. There is no skipping: without helm the chart is not checked, so the test fails.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		build := exec.Command("helm/build.sh")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			helmErr = fmt.Errorf("charts/helm/build.sh: %w", err)
			return
		}
		out, err := exec.Command("helm/build.sh", "path").Output()
		if err != nil {
			helmErr = fmt.Errorf("charts/helm/build.sh path: %w", err)
			return
		}
		helmPath = strings.TrimSpace(string(out))
		if _, err := os.Stat(helmPath); err != nil {
			helmErr = fmt.Errorf("helm not built: %w", err)
		}
	})
	if helmErr != nil {
		t.Fatalf("helm is needed to check the chart: %v", helmErr)
	}
	return helmPath
}

// helm runs helm with its configuration, cache and data in a temporary folder (nothing of the
// user's helm setup plays a part) and no kubeconfig unless args give one.
func helm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// runHelm is helm that must succeed; it returns stdout.
func runHelm(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// object is one rendered or built Kubernetes object, as plain JSON values.
type object struct {
	fields map[string]any
	doc    []byte // its YAML
}

func (o object) kind() string { s, _ := o.fields["kind"].(string); return s }

func (o object) metadata(key string) string {
	m, _ := o.fields["metadata"].(map[string]any)
	s, _ := m[key].(string)
	return s
}

// id names the object as kubectl does, with its namespace: "Deployment kube-system/coredns".
func (o object) id() string {
	if ns := o.metadata("namespace"); ns != "" {
		return o.kind() + " " + ns + "/" + o.metadata("name")
	}
	return o.kind() + " " + o.metadata("name")
}

// get walks o's fields: get("spec", "template", "spec") or get("spec", "containers", 0).
func (o object) get(path ...any) any {
	var v any = o.fields
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[p]
		case int:
			l, _ := v.([]any)
			if p >= len(l) {
				return nil
			}
			v = l[p]
		}
	}
	return v
}

// parseObjects splits a multi-document YAML stream into objects, dropping empty documents.
func parseObjects(t *testing.T, where string, stream []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		js, err := utilyaml.ToJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		var fields map[string]any
		if err := json.Unmarshal(js, &fields); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if len(fields) == 0 {
			continue // a template that rendered nothing, or comments only
		}
		out = append(out, object{fields: fields, doc: doc})
	}
}

// helmTemplate renders the chart as `helm install clusterdns charts/clusterdns -n kube-system`
// would, with more helm flags (values: sets(...), --set-file).
func helmTemplate(t *testing.T, flags ...string) []object {
	t.Helper()
	args := append([]string{"template", "clusterdns", chartDir, "--namespace", "kube-system"}, flags...)
	return parseObjects(t, "helm template", []byte(runHelm(t, args...)))
}

// kustomizeBuild builds deploy/<dir> with kustomize's library, as `kubectl kustomize` does.
func kustomizeBuild(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("..", "deploy", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return parseObjects(t, "deploy/"+dir, y)
}

func byID(objs []object) map[string]object {
	m := map[string]object{}
	for _, o := range objs {
		m[o.id()] = o
	}
	return m
}

// fieldDiffs lists, by field path, where got differs from want.
func fieldDiffs(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, got %v", path, got)}
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		var out []string
		for _, k := range sortedKeys(keys) {
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inG:
				out = append(out, fmt.Sprintf("%s.%s: missing (want %v)", path, k, compact(wv)))
			case !inW:
				out = append(out, fmt.Sprintf("%s.%s: not wanted (got %v)", path, k, compact(gv)))
			default:
				out = append(out, fieldDiffs(path+"."+k, wv, gv)...)
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: want %v, got %v", path, compact(want), compact(got))}
		}
		var out []string
		for i := range w {
			out = append(out, fieldDiffs(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	default:
		if !reflect.DeepEqual(want, got) {
			return []string{fmt.Sprintf("%s: want %v, got %v", path, compact(want), compact(got))}
		}
		return nil
	}
}

// compact is a value as one line of JSON, cut short.
func compact(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// deployCases are the deploy/ folders and the chart values that stand for each.
var deployCases = []struct {
	name, dir string
	sets      []string
}{
	{"both roles (defaults)", ".", nil},
	{"central role", "cluster", []string{"node.enabled=false"}},
	{"node role", "node", []string{"deployment.enabled=false"}},
	{"node role on the kube-dns IP", "node-kube-dns-ip", []string{"deployment.enabled=false", "node.localIPs=169.254.20.10 10.96.0.10"}},
}

// TestChartMatchesDeploy: the chart renders the objects deploy/ builds, field for field: same
// kinds, names, namespaces, labels, RBAC rules, Corefiles (and ConfigMap names), ports, probes,
// security contexts. A change to one side alone fails here.
func TestChartMatchesDeploy(t *testing.T) {
	for _, c := range deployCases {
		t.Run(c.name, func(t *testing.T) {
			want := byID(kustomizeBuild(t, c.dir))
			got := byID(helmTemplate(t, sets(c.sets...)...))
			if len(want) < 4 {
				t.Fatalf("deploy/%s builds only %d objects", c.dir, len(want))
			}
			for _, id := range sortedKeys(want) {
				g, ok := got[id]
				if !ok {
					t.Errorf("%s: in deploy/%s, not rendered by the chart (it renders %v)", id, c.dir, sortedKeys(got))
					continue
				}
				for _, d := range fieldDiffs("", want[id].fields, g.fields) {
					t.Errorf("%s%s (want: deploy/%s)", id, d, c.dir)
				}
			}
			for _, id := range sortedKeys(got) {
				if _, ok := want[id]; !ok {
					t.Errorf("%s: rendered by the chart, not in deploy/%s", id, c.dir)
				}
			}
		})
	}
}

// TestCorefileCopies: helm reads no file outside the chart, so files/ holds copies of the
// repository's Corefiles; they must equal them.
func TestCorefileCopies(t *testing.T) {
	for _, name := range []string{"Corefile.cluster", "Corefile.nodelocal"} {
		repo, err := os.ReadFile(filepath.Join("..", name))
		if err != nil {
			t.Fatal(err)
		}
		copied, err := os.ReadFile(filepath.Join(chartDir, "files", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(repo, copied) {
			t.Errorf("charts/clusterdns/files/%s differs from %s; run: cp %s charts/clusterdns/files/", name, name, name)
		}
	}
}

// allOptions turns on everything the defaults leave off.
var allOptions = []string{
	"autoscaler.enabled=true",
	"prometheus.service.enabled=true",
	"prometheus.monitor.enabled=true",
}

// TestHelmLint: `helm lint --strict` with the defaults and with every option on.
func TestHelmLint(t *testing.T) {
	out := runHelm(t, "lint", "--strict", chartDir)
	t.Logf("helm lint --strict:\n%s", out)
	runHelm(t, append([]string{"lint", "--strict", chartDir, "--namespace", "kube-system"}, sets(allOptions...)...)...)
}
