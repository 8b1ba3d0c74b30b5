package main

// The scenarios of `benchctl run`: their servers, Corefiles, queries and rounds.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// started is a server under test and, for a chain, the central role started with it.
type started struct {
	server, extra *proc
}

// contender is one server of an A/B comparison.
type contender struct {
	name, label string
	start       func(logName string) (started, error)
}

// queryFile gives the dnsperf input of a server's run ("tp1", "lat2", "q2000.1").
type queryFile func(server, run string) (string, error)

func (b *bench) path(name string) string { return filepath.Join(b.cfg.Out, name) }

// writeFile writes OUT/name and returns its path.
func (b *bench) writeFile(name, body string) (string, error) {
	p := b.path(name)
	return p, os.WriteFile(p, []byte(body), 0o644)
}

// serve starts ./coredns with the Corefile OUT/Corefile.<corefile> on cpu and waits until it
// answers the probes at addr.
func (b *bench) serve(logName string, cpu int, corefile, body, addr string, probes []probe) (*proc, error) {
	conf, err := b.writeFile("Corefile."+corefile, body)
	if err != nil {
		return nil, err
	}
	return b.startAnswering(logName, cpu, addr, probes, b.cfg.Coredns, "-conf", conf)
}

// startAnswering starts argv on cpu and waits until it answers the probes at addr.
func (b *bench) startAnswering(logName string, cpu int, addr string, probes []probe, argv ...string) (*proc, error) {
	p, err := b.start(logName, cpu, argv...)
	if err != nil {
		return nil, err
	}
	if _, err := waitAnswer(addr, probes, time.Now(), 60*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("%w; last lines of %s.log:\n%s", err, logName, b.logTail(logName, 20))
	}
	return p, nil
}

func (b *bench) pprofLine() string {
	if b.pprof {
		return "    pprof " + b.cfg.addrServer() + ":6060"
	}
	return ""
}

// abRounds runs ROUNDS rounds, every server in order (A/B/A/B...): start, a warm-up (warm),
// a throughput run (RUN_SECONDS, -c 8 -q OUTSTANDING), stop. Then, at half the slowest server's
// mean QPS, a latency run per server and round with dnsperf -v.
func (b *bench) abRounds(id, title string, servers []contender, queries queryFile, warm bool) (Scenario, error) {
	sc := Scenario{ID: id, Title: title}
	for _, c := range servers {
		sc.Servers = append(sc.Servers, Server{Name: c.name, Label: c.label, Ours: len(sc.Servers) == 0})
	}
	runOne := func(i, round int, run string, measure func(s started, file string) error) error {
		c := servers[i]
		s, err := c.start(id + "." + c.name)
		if err != nil {
			return err
		}
		defer s.extra.stop(10 * time.Second)
		defer s.server.stop(10 * time.Second)
		file, err := queries(c.name, run+strconv.Itoa(round))
		if err != nil {
			return err
		}
		if warm {
			b.dnsperf(file, 1, "-c", "4", "-q", "100") //nolint:errcheck // a warm-up; the run after it reports
		}
		return measure(s, file)
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for i := range servers {
			srv := &sc.Servers[i]
			err := runOne(i, round, "tp", func(s started, file string) error {
				t, err := b.measure(s.server, s.extra, file, b.cfg.RunSeconds, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding))
				if err != nil {
					return err
				}
				rss, err := statusMiB(s.server.pid(), "VmHWM")
				if err != nil {
					return err
				}
				srv.Runs = append(srv.Runs, t)
				srv.PeakRSS = append(srv.PeakRSS, int(rss+0.5))
				logf("%s round %d %s: %.0f q/s, %d lost, CPU %.0f%%, %.2f µs/query, %s (load %s)", id, round, srv.Name, t.QPS, t.Lost, t.CPUPercent, t.CPUPerQuery, t.Rcodes, loadAvg(1))
				return nil
			})
			if err != nil {
				return sc, err
			}
			srv.summarize()
		}
	}
	slowest := slices.MinFunc(sc.Servers, func(a, c Server) int { return cmp.Compare(a.MeanQPS, c.MeanQPS) })
	sc.LatencyRate = int(slowest.MeanQPS+0.5) / 2
	lat := make([][]float64, len(servers))
	for round := 1; round <= b.cfg.Rounds; round++ {
		for i := range servers {
			err := runOne(i, round, "lat", func(s started, file string) error {
				_, out, err := b.dnsperf(file, b.cfg.LatencySecs, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding), "-Q", strconv.Itoa(sc.LatencyRate), "-v")
				if err != nil {
					return err
				}
				l, err := latenciesOf(bytes.NewReader(out))
				lat[i] = append(lat[i], l...)
				return err
			})
			if err != nil {
				return sc, err
			}
		}
	}
	for i := range sc.Servers {
		p := percentiles(lat[i])
		sc.Servers[i].P50ms, sc.Servers[i].P99ms, sc.Servers[i].MaxMs, sc.Servers[i].Answered = round(p.P50, 3), round(p.P99, 3), round(p.Max, 3), p.N
	}
	return sc, nil
}

// fixedRounds is the lowrate scenario's: ROUNDS rounds, every server in order, a fresh process,
// a warm-up (warm) and a run of RUN_SECONDS at rate q/s.
func (b *bench) fixedRounds(id, role string, rate int, servers []contender, queries queryFile, warm bool) ([]FixedRate, error) {
	rows := make([]FixedRate, len(servers))
	for i, c := range servers {
		rows[i] = FixedRate{Role: role, Server: c.name, Label: c.label, Ours: i == 0, Rate: rate}
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for i, c := range servers {
			s, err := c.start(id + "." + c.name)
			if err != nil {
				return rows, err
			}
			file, err := queries(c.name, fmt.Sprintf("q%d.%d", rate, round))
			if err == nil && warm {
				b.dnsperf(file, 1, "-c", "4", "-q", "100") //nolint:errcheck // a warm-up
			}
			var t Throughput
			if err == nil {
				t, err = b.measure(s.server, nil, file, b.cfg.RunSeconds, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding), "-Q", strconv.Itoa(rate))
			}
			s.server.stop(10 * time.Second)
			s.extra.stop(10 * time.Second)
			if err != nil {
				return rows, err
			}
			rows[i].Runs = append(rows[i].Runs, t)
			rows[i].summarize()
			logf("lowrate %s %d q/s round %d %s: %.0f q/s, CPU %.0f%%, %.2f µs/query (load %s)", id, rate, round, c.name, t.QPS, t.CPUPercent, t.CPUPerQuery, loadAvg(1))
		}
	}
	return rows, nil
}

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

func lineCount(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// profileCPU is a 10 s dnsperf run against a server started with pprof, a CPU profile of 8 s of
// it, and its top entries.
func (b *bench) profileCPU(name string, c contender, file string) error {
	b.pprof = true
	s, err := c.start(strings.Replace(name, ".", ".profile.", 1))
	b.pprof = false
	if err != nil {
		return err
	}
	defer s.server.stop(10 * time.Second)
	type result struct {
		rep DnsperfReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, _, err := b.dnsperf(file, 10, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding))
		done <- result{rep, err}
	}()
	time.Sleep(time.Second)
	pb := b.path("profile." + name + ".cpu.pb.gz")
	ferr := fetchTo("http://"+b.cfg.addrServer()+":6060/debug/pprof/profile?seconds=8", pb)
	r := <-done
	if ferr != nil || r.err != nil {
		logf("profile %s not taken: %v %v", name, ferr, r.err)
		return nil
	}
	p := pprofTop(name, pb, "-nodecount=25")
	p.Summary = append([]string{fmt.Sprintf("Under dnsperf at %.0f QPS (load average %s).", r.rep.QPS, loadAvg(1))}, p.Summary...)
	b.res.Profiles = append(b.res.Profiles, p)
	return nil
}

// pprofTop is the top of a profile (go tool pprof -top): its summary lines and the first 15
// rows of its table.
func pprofTop(name, path string, args ...string) Profile {
	out, err := exec.Command("go", append(append([]string{"tool", "pprof", "-top"}, args...), path)...).Output()
	p := Profile{Name: name}
	if err != nil {
		logf("pprof %s: %v", path, err)
		return p
	}
	table := false
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		switch {
		case strings.Contains(l, "flat%"):
			table = true
		case strings.HasPrefix(l, "Duration:") || strings.HasPrefix(l, "Showing nodes"):
			p.Summary = append(p.Summary, l)
		}
		if table && len(p.Top) < 16 {
			p.Top = append(p.Top, l)
		}
	}
	return p
}

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
	defer stub.stop(10 * time.Second)
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
	defer central.stop(10 * time.Second)
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
	defer upstream.stop(10 * time.Second)
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
		p.stop(10 * time.Second)
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

// ---- scenario 8: the whole chain as deployed

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
	// Ours: nodecache (upstream tcp, as deploy/ has it) in front of k8sdiscovery; upstream's:
	// CoreDNS as NodeLocal DNSCache (cache + forward force_tcp) in front of CoreDNS kubernetes.
	chain := func(central func([]probe) (*proc, error), node func(string, []probe) (*proc, error)) func(string) (started, error) {
		return func(logName string) (started, error) {
			c, err := central(probes)
			if err != nil {
				return started{}, err
			}
			n, err := node(logName, probes)
			if err != nil {
				c.stop(10 * time.Second)
				return started{}, err
			}
			return started{server: n, extra: c}, nil
		}
	}
	servers := []contender{
		{"ours", "nodecache → k8sdiscovery", chain(b.startCentral, func(n string, p []probe) (*proc, error) { return b.startNodecache(n, p, "") })},
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
	b.res.Scenarios = append(b.res.Scenarios, sc)
	sc, err = b.abRounds("chainmiss", "8. whole chain, misses", servers, b.missQueries, false)
	if err != nil {
		return err
	}
	b.res.Scenarios = append(b.res.Scenarios, sc)
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
	defer stub.stop(10 * time.Second)
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
