package monitoring

import (
	"os/exec"
	"strings"
	"testing"
)

// promtool runs the built promtool in this folder and returns its combined output.
func promtool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(tool(t, "promtool"), args...).CombinedOutput()
	return string(out), err
}

func TestRulesCheck(t *testing.T) {
	out, err := promtool(t, "check", "rules", "rules.yaml")
	if err != nil {
		t.Fatalf("promtool check rules rules.yaml: %v\n%s", err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules rules.yaml said no SUCCESS:\n%s", out)
	}
	t.Log(strings.TrimSpace(out))
}

// TestRulesUnit runs rules_test.yaml, the alerts' and recording rules' unit tests.
func TestRulesUnit(t *testing.T) {
	out, err := promtool(t, "test", "rules", "rules_test.yaml")
	if err != nil {
		t.Fatalf("promtool test rules rules_test.yaml: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
}

// TestRulesQueries checks that every metric a rule reads is registered by the plugins the binary
// is built from, and that the rules cover the alerts this project promises operators.
func TestRulesQueries(t *testing.T) {
	queries := ruleQueries(t)
	if len(queries) == 0 {
		t.Fatal("no rules in rules.yaml")
	}
	checkRegistered(t, queries)
	have := map[string]bool{}
	for _, q := range queries {
		have[strings.TrimPrefix(q.source, "rule ")] = true
	}
	for _, want := range []string{
		// coredns-mixin's, under their names.
		"clusterdns.coredns/CoreDNSDown", "clusterdns.coredns/CoreDNSLatencyHigh", "clusterdns.coredns/CoreDNSErrorsHigh",
		"clusterdns.coredns/CoreDNSForwardLatencyHigh", "clusterdns.coredns/CoreDNSForwardErrorsHigh",
		"clusterdns.coredns/CoreDNSForwardHealthcheckFailureCount", "clusterdns.coredns/CoreDNSForwardHealthcheckBrokenCount",
		// ours.
		"clusterdns.k8sdiscovery/ClusterDNSProgrammingLatencyHigh", "clusterdns.k8sdiscovery/ClusterDNSStoreNotSynced",
		"clusterdns.nodecache/ClusterDNSNodeCacheServingStale", "clusterdns.nodecache/ClusterDNSNodeCacheRepairs",
	} {
		if !have[want] {
			t.Errorf("rules.yaml has no rule %s", want)
		}
	}
}
