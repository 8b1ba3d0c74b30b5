package main

// The central role's scenarios: cluster names from the index (1) and CPU per query at fixed
// rates (7), whose node-role half is the hit scenario's servers.

import (
	"fmt"
	"time"
)

// ---- scenario 1: cluster names from the index

func (b *bench) indexCorefile(plugin string) string {
	return fmt.Sprintf(`cluster.local in-addr.arpa ip6.arpa {
    bind %s
%s
    %s cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        ttl 30
    }
}
`, b.cfg.addrServer(), b.pprofLine(), plugin, b.kubeconfigFor(plugin))
}

// kubeconfigFor is the kubeconfig line's argument: upstream's kubernetes names the context.
func (b *bench) kubeconfigFor(plugin string) string {
	if plugin == "kubernetes" {
		return b.kubeconfig + " bench"
	}
	return b.kubeconfig
}

func (b *bench) indexServers(probes []probe) []contender {
	one := func(name, label, plugin string) contender {
		return contender{name, label, func(logName string) (started, error) {
			p, err := b.serve(logName, b.cfg.ServerCPU, "index."+name, b.indexCorefile(plugin), b.cfg.addrServer()+":53", probes)
			return started{server: p}, err
		}}
	}
	return []contender{one("ours", "k8sdiscovery", "k8sdiscovery"), one("upstream", "upstream kubernetes", "kubernetes")}
}

func (b *bench) scenarioIndex() error {
	logf("scenario index: %d services in a local kube-apiserver", b.cfg.IndexServices)
	if err := b.startControlPlane("cp-index"); err != nil {
		return err
	}
	defer b.stopControlPlane()
	queries := b.path("index.queries")
	loaded, probes, err := loadWorld(b.kubeconfig, world{services: b.cfg.IndexServices, endpointsPerService: 5}, 48, queries)
	if err != nil {
		return err
	}
	servers := b.indexServers(probes)
	sc, err := b.abRounds("index", "1. cluster names", servers, func(string, string) (string, error) { return queries, nil }, false)
	if err != nil {
		return err
	}
	sc.Loaded = &loaded
	sc.QueryLines, err = lineCount(queries)
	if err != nil {
		return err
	}
	b.res.Scenarios = append(b.res.Scenarios, sc)
	for _, c := range servers {
		if err := b.profileCPU("index."+c.name, c, queries); err != nil {
			return err
		}
	}
	return nil
}

// ---- scenario 7: CPU per query at fixed rates

func (b *bench) scenarioLowrate() error {
	logf("scenario lowrate: CPU per query at %v q/s", b.cfg.LowRates)
	if err := b.startControlPlane("cp-lowrate"); err != nil {
		return err
	}
	queries := b.path("index.queries")
	_, probes, err := loadWorld(b.kubeconfig, world{services: b.cfg.IndexServices, endpointsPerService: 5}, 48, queries)
	if err != nil {
		b.stopControlPlane()
		return err
	}
	for _, rate := range b.cfg.LowRates {
		rows, err := b.fixedRounds("index", "central", rate, b.indexServers(probes), func(string, string) (string, error) { return queries, nil }, false)
		b.res.FixedRate = append(b.res.FixedRate, rows...)
		if err != nil {
			b.stopControlPlane()
			return err
		}
	}
	b.stopControlPlane()
	stub, err := b.startStub()
	if err != nil {
		return err
	}
	defer stub.Stop(10 * time.Second)
	node := b.hitServers()[:2]
	for _, rate := range b.cfg.LowRates {
		rows, err := b.fixedRounds("hit", "node", rate, node, b.hitQueries, true)
		b.res.FixedRate = append(b.res.FixedRate, rows...)
		if err != nil {
			return err
		}
	}
	return nil
}
