package monitoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	// The packages whose metrics the dashboard and the rules read: importing them registers
	// their collectors with the default registry, as the binary does.
	_ "github.com/clusterdns/clusterdns/plugin/k8sdiscovery"
	_ "github.com/clusterdns/clusterdns/plugin/nodecache"
	_ "github.com/clusterdns/clusterdns/plugin/searchpath"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/metrics"
)

// query is one PromQL expression of the dashboard or the rules, and the metrics it selects.
type query struct {
	source  string // where it is: "panel 3 (Latency) target A", "rule clusterdns.coredns/CoreDNSDown"
	expr    string
	metrics []string
}

// madeByPrometheus are series Prometheus writes itself for every target; no exporter has them.
var madeByPrometheus = map[string]bool{"up": true}

// tool returns the path of a tool built by tools/build.sh, failing the test when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("tools/build.sh", "dir").Output()
	if err != nil {
		t.Fatalf("tools/build.sh dir: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: build it with monitoring/tools/build.sh (./build.sh test does)", path)
	}
	return path
}

// promqlcheck runs tools/promqlcheck with args and input and decodes its answer, failing the test
// for every expression that does not parse. sources name the input expressions, in order; without
// them (a rules file) the tool names them.
func promqlcheck(t *testing.T, input []byte, sources []string, args ...string) []query {
	t.Helper()
	cmd := exec.Command(tool(t, "promqlcheck"), args...)
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promqlcheck %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var results []struct {
		Source, Expr, Error string
		Metrics             []string
	}
	if err := json.Unmarshal(out, &results); err != nil {
		t.Fatalf("promqlcheck output: %v", err)
	}
	if sources != nil && len(sources) != len(results) {
		t.Fatalf("promqlcheck answered %d results for %d expressions", len(results), len(sources))
	}
	queries := make([]query, 0, len(results))
	for i, r := range results {
		if sources != nil {
			r.Source = sources[i]
		}
		if r.Error != "" {
			t.Errorf("%s: %q does not parse: %s", r.Source, r.Expr, r.Error)
		}
		queries = append(queries, query{source: r.Source, expr: r.Expr, metrics: r.Metrics})
	}
	return queries
}

// ruleQueries are the expressions of rules.yaml, loaded as Prometheus loads a rules file.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	return promqlcheck(t, nil, nil, "-rules", "rules.yaml")
}

// dashboardQueries are the PromQL expressions of dashboard.json's panels and template variables,
// with Grafana's variables replaced by values of the right kind so that Prometheus's parser reads
// them as Grafana would send them.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	d := readDashboard(t)
	var sources, exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			sources = append(sources, "panel "+strconv.Itoa(p.ID)+" ("+p.Title+") target "+tg.RefID)
			exprs = append(exprs, substituteVariables(tg.Expr))
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Query.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, v.Query.Query)
			continue
		}
		sources = append(sources, "variable "+v.Name)
		exprs = append(exprs, substituteVariables(m[1]))
	}
	input, err := json.Marshal(exprs)
	if err != nil {
		t.Fatal(err)
	}
	return promqlcheck(t, input, sources)
}

var (
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	// Grafana's interval variables become a duration, every other variable a label value.
	intervalVariable = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	otherVariable    = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
)

func substituteVariables(expr string) string {
	expr = intervalVariable.ReplaceAllString(expr, "5m")
	return otherVariable.ReplaceAllString(expr, "x")
}

// histogramSuffixes are the series names Prometheus gives a histogram family's parts.
var histogramSuffixes = []string{"_bucket", "_sum", "_count"}

// familyNames are the metric families a queried series name can come from: the name itself, or
// a histogram's name without its suffix.
func familyNames(series string) []string {
	names := []string{series}
	for _, s := range histogramSuffixes {
		if base, ok := strings.CutSuffix(series, s); ok {
			names = append(names, base)
		}
	}
	return names
}

// registered reports whether a collector of this process (the plugins imported above) describes
// a metric family of that name. The registry has no listing, so it tries to register a probe
// under the name: the registry refuses a second descriptor with a name already taken.
func registered(t *testing.T, name string) bool {
	t.Helper()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe of the monitoring tests"})
	err := prometheus.DefaultRegisterer.Register(probe)
	if err == nil {
		prometheus.DefaultRegisterer.Unregister(probe)
		return false
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) || strings.Contains(err.Error(), "previously registered descriptor with the same fully-qualified name") {
		return true
	}
	t.Fatalf("probe %s: %v", name, err)
	return false
}

// registeredFamily reports whether a queried series name belongs to a registered family.
func registeredFamily(t *testing.T, series string) bool {
	t.Helper()
	for _, f := range familyNames(series) {
		if registered(t, f) {
			return true
		}
	}
	return false
}
