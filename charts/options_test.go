package charts

// The options the defaults leave off (so TestChartMatchesDeploy does not see them): the
// autoscaler, the metrics Services and ServiceMonitors, and values that change what is rendered.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/hasher"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

// sets turns "key=value" pairs into helm --set flags.
func sets(pairs ...string) []string {
	var out []string
	for _, p := range pairs {
		out = append(out, "--set", p)
	}
	return out
}

func findOne(t *testing.T, objs []object, id string) object {
	t.Helper()
	for _, o := range objs {
		if o.id() == id {
			return o
		}
	}
	var ids []string
	for _, o := range objs {
		ids = append(ids, o.id())
	}
	t.Fatalf("%s not rendered; rendered: %v", id, ids)
	return object{}
}

func ofKind(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// stringMap reads a map of strings (labels, a selector's matchLabels).
func stringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	out := map[string]string{}
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out
}

// selects: every label of the selector is on the object.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// rule is one RBAC policy rule.
type rule struct {
	APIGroups     []string `json:"apiGroups"`
	Resources     []string `json:"resources"`
	ResourceNames []string `json:"resourceNames"`
	Verbs         []string `json:"verbs"`
}

func rulesOf(t *testing.T, o object) []rule {
	t.Helper()
	b, _ := json.Marshal(o.get("rules"))
	var rules []rule
	if err := json.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s rules: %v", o.id(), err)
	}
	return rules
}

// grants: some rule allows verb on group/resource (a subresource as "deployments/scale") named name.
func grants(rules []rule, group, resource, name, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) &&
			(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

// flagValue reads --name=value from a command line.
func flagValue(command []any, name string) string {
	for _, a := range command {
		if s, _ := a.(string); strings.HasPrefix(s, "--"+name+"=") {
			return strings.TrimPrefix(s, "--"+name+"=")
		}
	}
	return ""
}

// linearParams is cluster-proportional-autoscaler's "linear" ConfigMap entry.
type linearParams struct {
	CoresPerReplica           float64 `json:"coresPerReplica"`
	NodesPerReplica           float64 `json:"nodesPerReplica"`
	Min                       int     `json:"min"`
	Max                       int     `json:"max"`
	PreventSinglePointFailure bool    `json:"preventSinglePointFailure"`
	IncludeUnschedulableNodes bool    `json:"includeUnschedulableNodes"`
}

// TestAutoscaler: with autoscaler.enabled the Deployment leaves its replicas to
// cluster-proportional-autoscaler, which targets it, reads a ConfigMap holding the values'
// linear parameters, and is granted exactly what that takes.
func TestAutoscaler(t *testing.T) {
	for _, c := range []struct {
		name  string
		pairs []string
		want  linearParams
	}{
		{"defaults", nil, linearParams{CoresPerReplica: 256, NodesPerReplica: 16, Min: 2, PreventSinglePointFailure: true}},
		{"values", []string{"autoscaler.coresPerReplica=128", "autoscaler.nodesPerReplica=8", "autoscaler.min=3", "autoscaler.max=50",
			"autoscaler.preventSinglePointFailure=false", "autoscaler.includeUnschedulableNodes=true"},
			linearParams{CoresPerReplica: 128, NodesPerReplica: 8, Min: 3, Max: 50, IncludeUnschedulableNodes: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := helmTemplate(t, sets(append([]string{"autoscaler.enabled=true"}, c.pairs...)...)...)
			dns := findOne(t, objs, "Deployment kube-system/coredns")
			if r := dns.get("spec", "replicas"); r != nil {
				t.Errorf("coredns has replicas %v: with the autoscaler on, applying would reset its count", r)
			}
			cpa := findOne(t, objs, "Deployment kube-system/coredns-autoscaler")
			command, _ := cpa.get("spec", "template", "spec", "containers", 0, "command").([]any)
			if flagValue(command, "target") != "deployment/coredns" || flagValue(command, "namespace") != "kube-system" {
				t.Errorf("autoscaler command %v: want --target=deployment/coredns --namespace=kube-system", command)
			}
			cmName := flagValue(command, "configmap")
			cm := findOne(t, objs, "ConfigMap kube-system/"+cmName)
			linear, _ := cm.get("data", "linear").(string)
			dec := json.NewDecoder(strings.NewReader(linear))
			dec.DisallowUnknownFields()
			var got linearParams
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("ConfigMap %s linear %q: %v", cmName, linear, err)
			}
			if got != c.want {
				t.Errorf("linear parameters %+v, want %+v", got, c.want)
			}

			// The ServiceAccount the pod runs as, and what its bindings grant.
			sa, _ := cpa.get("spec", "template", "spec", "serviceAccountName").(string)
			findOne(t, objs, "ServiceAccount kube-system/"+sa)
			var clusterRules, nsRules []rule
			for _, b := range append(ofKind(objs, "ClusterRoleBinding"), ofKind(objs, "RoleBinding")...) {
				subjects, _ := b.get("subjects").([]any)
				bound := false
				for _, s := range subjects {
					m := stringMap(s)
					bound = bound || m["kind"] == "ServiceAccount" && m["name"] == sa && m["namespace"] == "kube-system"
				}
				if !bound {
					continue
				}
				ref := stringMap(b.get("roleRef"))
				if b.kind() == "ClusterRoleBinding" {
					clusterRules = append(clusterRules, rulesOf(t, findOne(t, objs, "ClusterRole "+ref["name"]))...)
				} else {
					nsRules = append(nsRules, rulesOf(t, findOne(t, objs, ref["kind"]+" kube-system/"+ref["name"]))...)
				}
			}
			for _, verb := range []string{"list", "watch"} {
				if !grants(clusterRules, "", "nodes", "", verb) {
					t.Errorf("the autoscaler may not %s nodes", verb)
				}
			}
			for _, verb := range []string{"get", "update"} {
				if !grants(nsRules, "apps", "deployments/scale", "coredns", verb) {
					t.Errorf("the autoscaler may not %s the scale of coredns", verb)
				}
				if grants(nsRules, "apps", "deployments/scale", "other", verb) || grants(clusterRules, "apps", "deployments/scale", "other", verb) {
					t.Errorf("the autoscaler may %s the scale of any Deployment", verb)
				}
			}
			if !grants(nsRules, "", "configmaps", cmName, "get") {
				t.Errorf("the autoscaler may not get its ConfigMap %s", cmName)
			}
			for _, r := range append(clusterRules, nsRules...) {
				for _, v := range r.Verbs {
					if !slices.Contains([]string{"get", "list", "watch", "update"}, v) {
						t.Errorf("the autoscaler is granted %q on %v: more than it uses", v, r.Resources)
					}
				}
			}
		})
	}
}

// corefilePrometheusPorts: the ports of the Corefile's `prometheus` directives.
func corefilePrometheusPorts(corefile string) []int {
	var out []int
	for _, m := range regexp.MustCompile(`(?m)^\s*prometheus\s+\S*:(\d+)\s*$`).FindAllStringSubmatch(corefile, -1) {
		p, _ := strconv.Atoi(m[1])
		out = append(out, p)
	}
	return out
}

// TestServiceMonitors: each role's ServiceMonitor selects one rendered Service in the namespace it
// watches, by a port name that Service has; the Service selects that role's pods, and its target
// port reaches the `prometheus` port of the Corefile those pods mount.
func TestServiceMonitors(t *testing.T) {
	objs := helmTemplate(t, sets("prometheus.monitor.enabled=true")...)
	monitors := ofKind(objs, "ServiceMonitor")
	names := map[string]bool{}
	for _, m := range monitors {
		names[m.metadata("name")] = true
	}
	if len(monitors) != 2 || !names["coredns"] || !names["clusterdns-node"] {
		t.Fatalf("ServiceMonitors %v: want coredns (central role) and clusterdns-node (node role)", sortedKeys(names))
	}
	for _, m := range monitors {
		selector := stringMap(m.get("spec", "selector", "matchLabels"))
		var watched []string
		for _, ns := range m.get("spec", "namespaceSelector", "matchNames").([]any) {
			watched = append(watched, ns.(string))
		}
		var svcs []object
		for _, s := range ofKind(objs, "Service") {
			if slices.Contains(watched, s.metadata("namespace")) && selects(selector, stringMap(s.get("metadata", "labels"))) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) != 1 {
			t.Errorf("ServiceMonitor %s selects %d Services, want 1", m.metadata("name"), len(svcs))
			continue
		}
		svc := svcs[0]
		portName, _ := m.get("spec", "endpoints", 0, "port").(string)
		var targetPort any
		for _, p := range svc.get("spec", "ports").([]any) {
			if pm, _ := p.(map[string]any); pm["name"] == portName {
				targetPort = pm["targetPort"]
			}
		}
		if targetPort == nil {
			t.Errorf("ServiceMonitor %s scrapes port %q, which %s does not have", m.metadata("name"), portName, svc.id())
			continue
		}
		var pods []object
		for _, w := range append(ofKind(objs, "Deployment"), ofKind(objs, "DaemonSet")...) {
			if selects(stringMap(svc.get("spec", "selector")), stringMap(w.get("spec", "template", "metadata", "labels"))) {
				pods = append(pods, w)
			}
		}
		if len(pods) != 1 {
			t.Errorf("%s selects the pods of %d workloads, want 1", svc.id(), len(pods))
			continue
		}
		w := pods[0]
		container := w.get("spec", "template", "spec", "containers", 0).(map[string]any)
		port := -1
		switch tp := targetPort.(type) {
		case float64:
			port = int(tp)
		case string:
			for _, p := range container["ports"].([]any) {
				if pm := p.(map[string]any); pm["name"] == tp {
					port = int(pm["containerPort"].(float64))
				}
			}
		}
		cmName, _ := w.get("spec", "template", "spec", "volumes", 0, "configMap", "name").(string)
		corefile, _ := findOne(t, objs, "ConfigMap kube-system/"+cmName).get("data", "Corefile").(string)
		if want := corefilePrometheusPorts(corefile); len(want) == 0 || !slices.Contains(want, port) {
			t.Errorf("ServiceMonitor %s -> %s port %q -> %s port %d; the Corefile's prometheus listens on %v",
				m.metadata("name"), svc.id(), portName, w.id(), port, want)
		}
	}

	// The Service alone, for scrapers without the operator.
	only := helmTemplate(t, sets("prometheus.service.enabled=true")...)
	if len(ofKind(only, "ServiceMonitor")) != 0 {
		t.Error("prometheus.service.enabled alone renders a ServiceMonitor")
	}
	findOne(t, only, "Service kube-system/coredns-metrics")
}

// TestValues: values that change what is rendered reach the objects; a central Corefile of one's
// own goes into the ConfigMap coredns, a node Corefile into a ConfigMap named as kustomize would
// name it (so a change rolls the DaemonSet); a central Corefile without reload is refused.
func TestValues(t *testing.T) {
	noReload := ". {\n    errors\n    health {\n        lameduck 5s\n    }\n    ready\n    prometheus :9153\n    forward . /etc/resolv.conf\n}\n"
	noReloadPath := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(noReloadPath, []byte(noReload), 0o644); err != nil {
		t.Fatal(err)
	}
	refused := []string{"template", "clusterdns", chartDir, "--namespace", "kube-system", "--set-file", "corefile=" + noReloadPath}
	if out, errOut, err := helm(t, refused...); err == nil || !strings.Contains(errOut, "no `reload`") {
		t.Errorf("a central Corefile without reload: want a refusal naming reload, got err %v\n%s%s", err, out, errOut)
	}

	corefile := strings.Replace(noReload, "    forward", "    reload\n    forward", 1)
	path := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	args := sets("replicaCount=5", "image.repository=registry.example/clusterdns/coredns", "image.tag=v9",
		"node.maxSurge=10%", "podDisruptionBudget=null")
	objs := helmTemplate(t, append(args, "--set-file", "corefile="+path, "--set-file", "node.corefile="+path)...)

	dns := findOne(t, objs, "Deployment kube-system/coredns")
	if r, _ := dns.get("spec", "replicas").(float64); r != 5 {
		t.Errorf("replicas %v, want 5", dns.get("spec", "replicas"))
	}
	for _, w := range []object{dns, findOne(t, objs, "DaemonSet kube-system/clusterdns-node")} {
		if img := w.get("spec", "template", "spec", "containers", 0, "image"); img != "registry.example/clusterdns/coredns:v9" {
			t.Errorf("%s image %v", w.id(), img)
		}
	}
	if s := findOne(t, objs, "DaemonSet kube-system/clusterdns-node").get("spec", "updateStrategy", "rollingUpdate", "maxSurge"); s != "10%" {
		t.Errorf("DaemonSet maxSurge %v, want 10%%", s)
	}
	if pdbs := ofKind(objs, "PodDisruptionBudget"); len(pdbs) != 0 {
		t.Errorf("podDisruptionBudget null still renders %s", pdbs[0].id())
	}

	// The central role's Corefile goes into the installer's `coredns` ConfigMap (what kubeadm's
	// documentation and the DNS e2e tests edit); the node role's into kustomize's hashed name.
	cmName, _ := dns.get("spec", "template", "spec", "volumes", 0, "configMap", "name").(string)
	if cmName != "coredns" {
		t.Errorf("the Deployment mounts ConfigMap %s, want coredns", cmName)
	}
	if cm := findOne(t, objs, "ConfigMap kube-system/"+cmName); cm.get("data", "Corefile") != corefile {
		t.Errorf("ConfigMap %s holds %q, want the Corefile given", cmName, cm.get("data", "Corefile"))
	}
	var nodeCM string
	node := findOne(t, objs, "DaemonSet kube-system/clusterdns-node")
	for i := range 10 {
		if name, ok := node.get("spec", "template", "spec", "volumes", i, "configMap", "name").(string); ok {
			nodeCM = name
		}
	}
	if cm := findOne(t, objs, "ConfigMap kube-system/"+nodeCM); cm.get("data", "Corefile") != corefile {
		t.Errorf("ConfigMap %s holds %q, want the Corefile given", nodeCM, cm.get("data", "Corefile"))
	}
	generated, err := kyaml.Parse("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: clusterdns-node\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := generated.LoadMapIntoConfigMapData(map[string]string{"Corefile": corefile}); err != nil {
		t.Fatal(err)
	}
	hash, err := (&hasher.Hasher{}).Hash(generated)
	if err != nil {
		t.Fatal(err)
	}
	if nodeCM != "clusterdns-node-"+hash {
		t.Errorf("node ConfigMap %s, want clusterdns-node-%s (kustomize's name for this Corefile)", nodeCM, hash)
	}
}

// TestMonitorJobsMatchRules: the job names the ServiceMonitors give their targets (the Service's
// jobLabel label, else the Service's name, as Prometheus Operator names them) are exactly the jobs
// monitoring/rules.yaml matches, so that the alerts and recording rules see the chart's targets.
func TestMonitorJobsMatchRules(t *testing.T) {
	objs := helmTemplate(t, sets("prometheus.monitor.enabled=true")...)
	jobs := map[string]bool{}
	for _, m := range ofKind(objs, "ServiceMonitor") {
		selector := stringMap(m.get("spec", "selector", "matchLabels"))
		jobLabel, _ := m.get("spec", "jobLabel").(string)
		for _, s := range ofKind(objs, "Service") {
			labels := stringMap(s.get("metadata", "labels"))
			if !selects(selector, labels) {
				continue
			}
			job := s.metadata("name")
			if jobLabel != "" {
				if labels[jobLabel] == "" {
					t.Errorf("ServiceMonitor %s: jobLabel %q, which Service %s does not carry", m.metadata("name"), jobLabel, job)
				}
				job = labels[jobLabel]
			}
			jobs[job] = true
		}
	}
	rules, err := os.ReadFile("../monitoring/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	matched := map[string]bool{}
	for _, m := range regexp.MustCompile(`job="([^"]+)"`).FindAllStringSubmatch(string(rules), -1) {
		matched[m[1]] = true
	}
	if len(matched) == 0 {
		t.Fatal("monitoring/rules.yaml matches no job")
	}
	for job := range matched {
		if !jobs[job] {
			t.Errorf("monitoring/rules.yaml matches job=%q, which no ServiceMonitor of the chart produces (it produces %v)", job, sortedKeys(jobs))
		}
	}
	for job := range jobs {
		if !matched[job] {
			t.Errorf("the chart's ServiceMonitors produce job %q, which monitoring/rules.yaml does not match", job)
		}
	}
}
