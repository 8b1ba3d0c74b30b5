package main

// The node cache's scenarios: hits (2), misses to the real central role (3) and the whole
// chain as deployed (8).

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ---- scenarios 2 and 3: the node cache

var cacheProbes = []probe{{"ready.default.svc.cluster.local.", "A", "10.96.0.42"}}

// startStub is the stub behind the caches in the hit scenario: bench/goceiling over UDP and TCP
// on LOAD_CPU (a hit never reaches it but for the warm-up).
func (b *bench) startStub() (*proc, error) {
	return b.startAnswering("stub", b.cfg.LoadCPU, b.cfg.addrStub()+":53", cacheProbes, b.cfg.Goceiling, "-listen", b.cfg.addrStub()+":53", "-tcp")
}

// startNodecache is nodecache in front of upstream (default: tcp to the stub's port 53).
func (b *bench) startNodecache(logName string, probes []probe, upstream string) (*proc, error) {
	if upstream == "" {
		upstream = "tcp " + b.cfg.addrStub() + ":53"
	}
	return b.serve(logName, b.cfg.ServerCPU, "nodecache", fmt.Sprintf(`cluster.local:53 {
%s
    nodecache {
        listen %s
        interface %s
        packet_filter none
        upstream %s
    }
}
`, b.pprofLine(), b.cfg.addrServer(), b.cfg.Link, upstream), b.cfg.addrServer()+":53", probes)
}

// startCache is CoreDNS's cache + forward { force_tcp } in front of the stub address.
func (b *bench) startCache(logName string, probes []probe) (*proc, error) {
	return b.serve(logName, b.cfg.ServerCPU, "cache", fmt.Sprintf(`cluster.local:53 {
    bind %s
%s
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . %s:53 {
        force_tcp
    }
}
`, b.cfg.addrServer(), b.pprofLine(), b.cfg.addrStub()), b.cfg.addrServer()+":53", probes)
}

// startUnbound: Unbound as NodeLocal DNSCache's fastest rival: one thread, a cache in front of
// the same stub, no validation.
func (b *bench) startUnbound(logName string) (*proc, error) {
	conf, err := b.writeFile("unbound.conf", fmt.Sprintf(`server:
    interface: %s
    port: 53
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "%s"
    pidfile: "%s/unbound.pid"
    use-syslog: no
    verbosity: 0
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    msg-cache-size: 64m
    rrset-cache-size: 128m
stub-zone:
    name: "cluster.local"
    stub-addr: %s@53
`, b.cfg.addrServer(), b.cfg.Out, b.cfg.Out, b.cfg.addrStub()))
	if err != nil {
		return nil, err
	}
	return b.startAnswering(logName, b.cfg.ServerCPU, b.cfg.addrServer()+":53", cacheProbes, "unbound", "-d", "-c", conf)
}

func serverOnly(start func(logName string) (*proc, error)) func(string) (started, error) {
	return func(logName string) (started, error) {
		p, err := start(logName)
		return started{server: p}, err
	}
}

func (b *bench) hitServers() []contender {
	return []contender{
		{"ours", "nodecache", serverOnly(func(n string) (*proc, error) { return b.startNodecache(n, cacheProbes, "") })},
		{"cache", "CoreDNS cache + forward", serverOnly(func(n string) (*proc, error) { return b.startCache(n, cacheProbes) })},
		{"unbound", strings.TrimSpace("Unbound " + b.res.Run.Machine.UnboundVersion), serverOnly(b.startUnbound)},
		{"goceiling", "Go ceiling (miekg/dns)", serverOnly(func(n string) (*proc, error) {
			return b.startAnswering(n, b.cfg.ServerCPU, b.cfg.addrServer()+":53", cacheProbes, b.cfg.Goceiling, "-listen", b.cfg.addrServer()+":53")
		})},
	}
}

// hitQueries: 100 names of the cluster zone.
func (b *bench) hitQueries(string, string) (string, error) {
	p := b.path("hit.txt")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	var sb strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&sb, "web-%d.default.svc.cluster.local A\n", i)
	}
	return b.writeFile("hit.txt", sb.String())
}

func (b *bench) scenarioHit() error {
	logf("scenario hit: node-cache hits")
	stub, err := b.startStub()
	if err != nil {
		return err
	}
	defer stub.Stop(10 * time.Second)
	servers := b.hitServers()
	sc, err := b.abRounds("hit", "2. node-cache hits", servers, b.hitQueries, true)
	if err != nil {
		return err
	}
	b.res.Scenarios = append(b.res.Scenarios, sc)
	file, err := b.hitQueries("", "")
	if err != nil {
		return err
	}
	return b.profileCPU("hit.ours", servers[0], file)
}

// startCentral is the central role behind the caches, as the caches meet it in a cluster:
// ./coredns with k8sdiscovery (no cache) on the scenario's apiserver, on LOAD_CPU with dnsperf,
// and its pipelining address on port 5353.
func (b *bench) startCentral(probes []probe) (*proc, error) {
	return b.serve("central", b.cfg.LoadCPU, "central", fmt.Sprintf(`.:53 {
    bind %s
    pipelining %s:5353
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        ttl 30
    }
}
`, b.cfg.addrStub(), b.cfg.addrStub(), b.kubeconfig), b.cfg.addrStub()+":53", probes)
}

// missQueries: every run gets names never asked before (more than a run can send), each
// NXDOMAIN in k8sdiscovery, alternately an unknown Service of a namespace that exists and an
// unknown endpoint of a headless Service, over the MISS_SERVICES Services loaded.
func (b *bench) missQueries(server, run string) (string, error) {
	name := fmt.Sprintf("miss.%s.%s.txt", server, run)
	f, err := os.Create(b.path(name))
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	p := server + "-" + run
	n := b.cfg.MissServices
	for i := 1; i <= 2000000; i++ {
		s := i % n
		if s%2 == 1 {
			fmt.Fprintf(w, "m%d-%s.svc-%d.bench-%d.svc.cluster.local A\n", i, p, s, s/100)
		} else {
			fmt.Fprintf(w, "m%d-%s.bench-%d.svc.cluster.local A\n", i, p, s/100)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}

func (b *bench) removeMissQueries() {
	files, _ := filepath.Glob(b.path("miss.*.txt"))
	for _, f := range files {
		os.Remove(f)
	}
}

func (b *bench) scenarioMiss() error {
	logf("scenario miss: cluster-zone misses over TCP to k8sdiscovery (%d services in a local kube-apiserver)", b.cfg.MissServices)
	if err := b.startControlPlane("cp-miss"); err != nil {
		return err
	}
	defer b.stopControlPlane()
	defer b.removeMissQueries()
	loaded, probes, err := loadWorld(b.kubeconfig, world{services: b.cfg.MissServices, endpointsPerService: 5}, 48, "")
	if err != nil {
		return err
	}
	central, err := b.startCentral(probes)
	if err != nil {
		return err
	}
	defer central.Stop(10 * time.Second)
	servers := []contender{
		{"ours", "nodecache", serverOnly(func(n string) (*proc, error) { return b.startNodecache(n, probes, "") })},
		// The node cache pipelining its misses to the central role's pipelining address.
		{"pipelined", "nodecache, upstream pipelined", serverOnly(func(n string) (*proc, error) {
			return b.startNodecache(n, probes, "pipelined "+b.cfg.addrStub()+":5353")
		})},
		{"forward", "CoreDNS cache + forward force_tcp", serverOnly(func(n string) (*proc, error) { return b.startCache(n, probes) })},
	}
	sc, err := b.abRounds("miss", "3. cluster misses, TCP", servers, b.missQueries, false)
	if err != nil {
		return err
	}
	sc.Loaded = &loaded
	b.res.Scenarios = append(b.res.Scenarios, sc)
	file, err := b.missQueries("profile", "1")
	if err != nil {
		return err
	}
	return b.profileCPU("miss.ours", servers[0], file)
}

// ---- scenario 8: the whole chain as deployed

// deployedUpstream is the node cache's upstream lines in deploy/node/Corefile (without the
// word upstream), to the central role of startCentral: pipelined to its pipelining port, one
// query per connection to port 53 when that gives no answer.
func (b *bench) deployedUpstream() []string {
	return []string{"pipelined " + b.cfg.addrStub() + ":5353", "tcp " + b.cfg.addrStub() + ":53"}
}

// startCentralUpstream is the central role of the upstream chain: CoreDNS's kubernetes on the
// same address and objects.
func (b *bench) startCentralUpstream(probes []probe) (*proc, error) {
	return b.serve("central-upstream", b.cfg.LoadCPU, "central-upstream", fmt.Sprintf(`.:53 {
    bind %s
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s bench
        ttl 30
    }
}
`, b.cfg.addrStub(), b.kubeconfig), b.cfg.addrStub()+":53", probes)
}

func (b *bench) scenarioChain() error {
	logf("scenario chain: node role in front of the central role, ours vs upstream's (%d services in a local kube-apiserver)", b.cfg.MissServices)
	if err := b.startControlPlane("cp-chain"); err != nil {
		return err
	}
	defer b.stopControlPlane()
	defer b.removeMissQueries()
	queries := b.path("chain.queries")
	_, probes, err := loadWorld(b.kubeconfig, world{services: b.cfg.MissServices, endpointsPerService: 5}, 48, queries)
	if err != nil {
		return err
	}
	// Ours: nodecache with deploy/'s upstream lines (pipelined to the central role's pipelining
	// port, its port 53 when that gives no answer) in front of k8sdiscovery; upstream's: CoreDNS
	// as NodeLocal DNSCache (cache + forward force_tcp) in front of CoreDNS kubernetes.
	chain := func(central func([]probe) (*proc, error), node func(string, []probe) (*proc, error)) func(string) (started, error) {
		return func(logName string) (started, error) {
			c, err := central(probes)
			if err != nil {
				return started{}, err
			}
			n, err := node(logName, probes)
			if err != nil {
				c.Stop(10 * time.Second)
				return started{}, err
			}
			return started{server: n, extra: c}, nil
		}
	}
	servers := []contender{
		{"ours", "nodecache → k8sdiscovery", chain(b.startCentral, func(n string, p []probe) (*proc, error) {
			return b.startNodecache(n, p, strings.Join(b.deployedUpstream(), "\n        upstream "))
		})},
		{"upstream", "cache + forward → kubernetes", chain(b.startCentralUpstream, b.startCache)},
	}
	// The loaded names of the cluster zone (the node roles serve only cluster.local: the PTRs of
	// the query mix would be REFUSED at the node).
	hits := func(string, string) (string, error) {
		p := b.path("chainhit.txt")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		data, err := os.ReadFile(queries)
		if err != nil {
			return "", err
		}
		var sb strings.Builder
		for _, l := range strings.SplitAfter(string(data), "\n") {
			if l != "" && !strings.Contains(l, "in-addr.arpa") && !strings.Contains(l, "ip6.arpa") {
				sb.WriteString(l)
			}
		}
		return b.writeFile("chainhit.txt", sb.String())
	}
	sc, err := b.abRounds("chainhit", "8. whole chain, hits", servers, hits, true)
	if err != nil {
		return err
	}
	sc.NodeUpstream = b.deployedUpstream()
	b.res.Scenarios = append(b.res.Scenarios, sc)
	sc, err = b.abRounds("chainmiss", "8. whole chain, misses", servers, b.missQueries, false)
	if err != nil {
		return err
	}
	sc.NodeUpstream = b.deployedUpstream()
	b.res.Scenarios = append(b.res.Scenarios, sc)
	return nil
}
