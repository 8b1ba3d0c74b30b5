package main

// Scenario 4: an external lookup from a pod with ndots:5, with and without searchpath.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// ---- scenario 4: searchpath

func (b *bench) scenarioSearch() error {
	logf("scenario search: an external lookup with ndots:5")
	manifests := b.path("search-manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		return err
	}
	pod := b.cfg.addrPod()
	world := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ns1}
spec:
  dnsPolicy: ClusterFirst
  containers: [{name: c, image: busybox}]
status: {phase: Running, podIP: %s, podIPs: [{ip: %s}]}
`, pod, pod)
	if err := os.WriteFile(filepath.Join(manifests, "world.yaml"), []byte(world), 0o644); err != nil {
		return err
	}
	resolv, err := b.writeFile("search.resolv.conf", "")
	if err != nil {
		return err
	}
	up := b.cfg.addrUpstream()
	upstream, err := b.serve("search-upstream", b.cfg.LoadCPU, "search-upstream", fmt.Sprintf(`.:53 {
    bind %s
    prometheus %s:9153
    template IN A example.com {
        answer "{{ .Name }} 60 IN A 192.0.2.10"
    }
    template IN AAAA example.com {
        answer "{{ .Name }} 60 IN AAAA 2001:db8::10"
    }
}
`, up, up), up+":53", []probe{{"x.example.com.", "A", "192.0.2.10"}})
	if err != nil {
		return err
	}
	defer upstream.Stop(10 * time.Second)
	srv := b.cfg.addrServer()
	centralMetrics, upMetrics := "http://"+srv+":9153/metrics", "http://"+up+":9153/metrics"
	for _, mode := range []string{"without", "with"} {
		sp := ""
		if mode == "with" {
			sp = fmt.Sprintf(`    searchpath cluster.local {
        source k8sdiscovery
        resolv_conf %s
    }`, resolv)
		}
		// The central role as in Corefile.cluster, asked directly by the pod.
		p, err := b.serve("search-"+mode, b.cfg.ServerCPU, "search-"+mode, fmt.Sprintf(`.:53 {
    bind %s
    prometheus %s:9153
%s
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests %s
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . %s:53
    cache 30
}
`, srv, srv, sp, manifests, up), srv+":53", []probe{{"web.ns1.svc.cluster.local.", "A", "10.96.0.10"}})
		if err != nil {
			return err
		}
		row, err := b.searchRow(mode, centralMetrics, upMetrics)
		p.Stop(10 * time.Second)
		if err != nil {
			return err
		}
		b.res.Search = append(b.res.Search, row)
	}
	return nil
}

// searchRow: one lookup (A and AAAA of one name) counted by both servers, then 1000 lookups of
// new names for the timing, the walk pinned to LOAD_CPU.
func (b *bench) searchRow(mode, centralMetrics, upMetrics string) (Search, error) {
	row := Search{Mode: mode}
	if mode == "with" {
		time.Sleep(time.Second) // searchpath's client index
	}
	counts := func() (int, int, error) {
		c, err := metricCount(centralMetrics, "coredns_dns_requests_total")
		if err != nil {
			return 0, 0, err
		}
		u, err := metricCount(upMetrics, "coredns_dns_requests_total")
		return c, u, err
	}
	c0, u0, err := counts()
	if err != nil {
		return row, err
	}
	one, err := b.walk(-1, 1, "one-"+mode+"-")
	if err != nil {
		return row, err
	}
	time.Sleep(500 * time.Millisecond)
	c1, u1, err := counts()
	if err != nil {
		return row, err
	}
	many, err := b.walk(b.cfg.LoadCPU, 1000, "many-"+mode+"-")
	if err != nil {
		return row, err
	}
	ex, err := metricCount(centralMetrics, "coredns_searchpath_expanded_total")
	if err != nil {
		return row, err
	}
	row.QueriesPerLookup, row.CentralRequests, row.UpstreamRequests = one.QueriesPerLookup, c1-c0, u1-u0
	row.OneAnswered, row.OneLookups = one.Answered, one.Lookups
	row.ManyQueries, row.P50ms, row.P99ms, row.ManyAnswered, row.ManyLookups = many.QueriesPerLookup, many.P50ms, many.P99ms, many.Answered, many.Lookups
	row.Expansions = ex
	return row, nil
}

// walk runs `benchctl walk` as the pod (pinned to cpu unless it is -1).
func (b *bench) walk(cpu, names int, prefix string) (walkResult, error) {
	self, err := os.Executable()
	if err != nil {
		return walkResult{}, err
	}
	argv := []string{self, "walk", "-server", b.cfg.addrServer() + ":53", "-source", b.cfg.addrPod(),
		"-search", "ns1.svc.cluster.local svc.cluster.local cluster.local", "-ndots", "5", "-names", strconv.Itoa(names), "-prefix", prefix}
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return walkResult{}, fmt.Errorf("walk: %w", err)
	}
	var w walkResult
	return w, json.Unmarshal(out, &w)
}
