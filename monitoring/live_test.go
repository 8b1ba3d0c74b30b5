package monitoring

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/netnsrun"
	"github.com/miekg/dns"
)

// notUnderLoad are the metrics the dashboard or the rules read that the live test cannot make
// appear, each with the reason. They are checked to be registered by the plugins (declared in
// code) instead; every other queried metric must be in the binary's /metrics.
var notUnderLoad = map[string]string{
	"up":                                     "written by Prometheus for every scrape, never exported",
	"coredns_nodecache_setup_failures_total": "counts failures to take the node's lock, set up the link or the packet filter, or tear down; a fresh network namespace gives none",
	"coredns_nodecache_upstream_local_errors_total": "counts queries not sent because every TCP connection stayed busy until the deadline (pool_full) or a reload closed the pool; neither happens at this load",
}

// Addresses inside the test's network namespace.
const (
	nodeListen  = "169.254.20.10" // the node role's listen address, as in Corefile.nodelocal
	centralAddr = "127.0.0.1:5300"
	stubAddr    = "127.0.0.1:5399" // the resolver both roles forward names outside the cluster to
	metricsURL  = "http://127.0.0.1:9153/metrics"
	podIP       = "10.244.1.20" // pod busybox in namespace dev of examples/manifests
)

// TestQueriedMetricsLive runs the built ./coredns with both roles in one network namespace (the
// central role on examples/manifests with searchpath, cache and forward; the node role's two
// blocks of Corefile.nodelocal in front of it), sends the queries and failures that make each
// metric appear (hits, misses, NXDOMAIN, SERVFAIL, an expansion, a dead upstream served stale, a
// removed address repaired, an endpoint change), scrapes /metrics and checks that every metric a
// panel or a rule reads is there.
func TestQueriedMetricsLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the node role, which needs root for its network namespace, interface and nftables table (CI runs as root)")
	}
	bin, err := filepath.Abs("../coredns")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: build it with ./build.sh build (./build.sh test does)", bin)
	}
	queries := append(dashboardQueries(t), ruleQueries(t)...)

	ns := newNamespace(t)
	stub := startStub(t, ns)
	dir := t.TempDir()
	world := filepath.Join(dir, "manifests")
	copyDir(t, "../examples/manifests", world)
	resolvConf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolvConf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	startCoreDNS(t, ns, bin, fmt.Sprintf(liveCorefile, resolvConf, world, stubAddr, centralAddr, stubAddr))

	sendLoad(t, ns, stub, world)

	families := waitForFamilies(t, ns, queries)
	queried := map[string]bool{}
	for _, q := range queries {
		for _, m := range q.metrics {
			queried[m] = true
			if reason, ok := notUnderLoad[m]; ok {
				if !madeByPrometheus[m] && !registeredFamily(t, m) {
					t.Errorf("%s reads %s (not made under load: %s), which nothing we build registers", q.source, m, reason)
				}
				continue
			}
			if !exported(families, m) {
				t.Errorf("%s reads %s, which the binary did not export under load", q.source, m)
			}
		}
	}
	t.Logf("%d queries read %d metrics; %d families in /metrics; checked only as registered: %d", len(queries), len(queried), len(families), len(notUnderLoad))
	for m := range notUnderLoad {
		if !queried[m] {
			t.Errorf("notUnderLoad lists %s, which no panel or rule reads: remove it", m)
		}
		if exported(families, m) {
			t.Logf("%s, listed in notUnderLoad, was exported under load this time", m)
		}
	}
}

// liveCorefile: %s resolv.conf, manifests folder, forward target, node cluster upstream, node
// `.` upstream.
const liveCorefile = `.:5300 {
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:9153
    searchpath cluster.local {
        source k8sdiscovery
        resolv_conf %s
    }
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests %s
        pods verified
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . %s {
        health_check 100ms
    }
    cache 30
}
cluster.local in-addr.arpa ip6.arpa {
    errors
    prometheus 127.0.0.1:9153
    nodecache {
        listen ` + nodeListen + `
        interface clusterdns0
        upstream tcp %s
        repair 500ms
    }
}
. {
    errors
    prometheus 127.0.0.1:9153
    nodecache {
        listen ` + nodeListen + `
        interface clusterdns0
        upstream udp %s
        success 9984 1
        serve_stale 1h
        timeout 300ms
    }
}
`

// sendLoad asks both roles what makes every series appear, and checks the answers that show the
// setup works (so a missing metric is not a broken test world).
func sendLoad(t *testing.T, ns string, stub *stubResolver, world string) {
	t.Helper()
	node := net.JoinHostPort(nodeListen, "53")
	type ask struct {
		server, from, network, name string
		qtype                       uint16
		times                       int
		want                        int // rcode
	}
	asks := []ask{
		// The node role: cluster names over pooled TCP to the central role, misses then hits.
		{node, "", "udp", "myweb-svc.default.svc.cluster.local", dns.TypeA, 3, dns.RcodeSuccess},
		{node, "", "udp", "myweb-svc.default.svc.cluster.local", dns.TypeAAAA, 2, dns.RcodeSuccess},
		{node, "", "udp", "_http._tcp.myweb-svc.default.svc.cluster.local", dns.TypeSRV, 2, dns.RcodeSuccess},
		{node, "", "udp", "nope.default.svc.cluster.local", dns.TypeA, 2, dns.RcodeNameError},
		{node, "", "udp", "10.100.96.10.in-addr.arpa", dns.TypePTR, 2, dns.RcodeSuccess},
		{node, "", "tcp", "db.default.svc.cluster.local", dns.TypeA, 1, dns.RcodeSuccess},
		// The node role's `.` block: other names over UDP to the stub resolver.
		{node, "", "udp", "www.stub.test", dns.TypeA, 2, dns.RcodeSuccess},
		{node, "", "udp", "nx.stub.test", dns.TypeA, 2, dns.RcodeNameError},
		{node, "", "udp", "servfail.stub.test", dns.TypeA, 2, dns.RcodeServerFailure},
		// The central role asked directly: k8sdiscovery, cache and forward.
		{centralAddr, "", "udp", "myweb-svc.default.svc.cluster.local", dns.TypeA, 2, dns.RcodeSuccess},
		{centralAddr, "", "udp", "dns-version.cluster.local", dns.TypeTXT, 1, dns.RcodeSuccess},
		{centralAddr, "", "udp", "example.stub.test", dns.TypeA, 3, dns.RcodeSuccess},
		{centralAddr, "", "udp", "servfail.stub.test", dns.TypeA, 2, dns.RcodeServerFailure},
		// A pod's first query of its ndots:5 walk, expanded by searchpath through its search list.
		{centralAddr, podIP, "udp", "myweb-svc.default.dev.svc.cluster.local", dns.TypeA, 2, dns.RcodeSuccess},
	}
	for _, a := range asks {
		for i := 0; i < a.times; i++ {
			r, err := exchange(ns, a.network, a.from, a.server, a.name, a.qtype, 3*time.Second)
			if err != nil {
				t.Fatalf("%s %s to %s: %v", a.name, dns.TypeToString[a.qtype], a.server, err)
			}
			if r.Rcode != a.want {
				t.Fatalf("%s %s to %s: %s, want %s", a.name, dns.TypeToString[a.qtype], a.server, dns.RcodeToString[r.Rcode], dns.RcodeToString[a.want])
			}
		}
	}

	// The stub resolver stops answering: the node cache serves www.stub.test stale (its entry
	// lived 1 s), its upstream exchanges time out, and forward's health checks fail.
	stub.up.Store(false)
	time.Sleep(1500 * time.Millisecond)
	if r, err := exchange(ns, "udp", "", node, "www.stub.test", dns.TypeA, 3*time.Second); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("stale www.stub.test from the node cache: %v %v", r, err)
	}
	exchange(ns, "udp", "", centralAddr, "down.stub.test", dns.TypeA, 6*time.Second)
	time.Sleep(time.Second)
	stub.up.Store(true)

	// Someone flushes the node's addresses: the node cache puts them back (repair 500ms).
	run(t, "ip", "netns", "exec", ns, "ip", "addr", "flush", "dev", "clusterdns0")

	// An endpoint changes: the programming latency histogram gets its first observation.
	change := fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: myweb-svc-changed
  namespace: default
  labels:
    kubernetes.io/service-name: myweb-svc
  annotations:
    endpoints.kubernetes.io/last-change-trigger-time: %q
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
endpoints:
- addresses: [10.244.9.9]
  conditions: {ready: true}
`, time.Now().UTC().Format(time.RFC3339Nano))
	if err := os.WriteFile(filepath.Join(world, "50-changed.yaml"), []byte(change), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitForFamilies scrapes /metrics until every metric the queries read (but those of
// notUnderLoad) is there and the events above have been counted, or 30 s have passed (the store
// gauges are refreshed every 10 s), and returns the last scrape's families: name → type.
func waitForFamilies(t *testing.T, ns string, queries []query) map[string]string {
	t.Helper()
	events := []string{
		"coredns_nodecache_stale_served_total",
		`coredns_nodecache_repairs_total{what="address"}`,
		"coredns_k8sdiscovery_dns_programming_duration_seconds_count",
		`coredns_searchpath_answered_total{position="1"}`,
	}
	var families map[string]string
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		body = scrape(t, ns)
		families = metricFamilies(body)
		missing := missingFamilies(families, queries)
		for _, e := range events {
			if sampleSum(body, e) <= 0 {
				missing = append(missing, e+" > 0")
			}
		}
		if len(missing) == 0 {
			return families
		}
		if time.Now().After(deadline) {
			t.Errorf("after 30 s of scraping, still missing: %s", strings.Join(missing, ", "))
			return families
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func missingFamilies(families map[string]string, queries []query) []string {
	seen := map[string]bool{}
	var missing []string
	for _, q := range queries {
		for _, m := range q.metrics {
			if _, skip := notUnderLoad[m]; skip || seen[m] || exported(families, m) {
				continue
			}
			seen[m] = true
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	return missing
}

// exported reports whether a queried series name is in the scraped families: the family itself,
// or a part (_bucket, _sum, _count) of a histogram family.
func exported(families map[string]string, series string) bool {
	if _, ok := families[series]; ok {
		return true
	}
	for _, s := range histogramSuffixes {
		if base, ok := strings.CutSuffix(series, s); ok && families[base] == "histogram" {
			return true
		}
	}
	return false
}

// metricFamilies reads the `# TYPE name type` lines of the text exposition format, which the
// prometheus plugin writes for every family it has samples of.
func metricFamilies(body string) map[string]string {
	families := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	return families
}

// sampleSum adds the values of the samples of a series name whose labels include those given,
// as in `name{a="b"}`.
func sampleSum(body, selector string) float64 {
	name, labels, _ := strings.Cut(selector, "{")
	var want []string
	if labels = strings.TrimSuffix(labels, "}"); labels != "" {
		want = strings.Split(labels, ",")
	}
	var sum float64
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		match := true
		for _, l := range want {
			match = match && strings.Contains(series, l)
		}
		if v, err := strconv.ParseFloat(strings.Fields(value)[0], 64); match && err == nil {
			sum += v
		}
	}
	return sum
}

func scrape(t *testing.T, ns string) string {
	t.Helper()
	resp, err := netnsrun.HTTPClient(ns, 3*time.Second).Get(metricsURL)
	if err != nil {
		t.Fatalf("scrape %s: %v", metricsURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatalf("scrape %s: %v", metricsURL, err)
	}
	return string(b)
}

// newNamespace makes a network namespace with lo up, the pod address on lo (searchpath's client),
// and the bridge clusterdns0 the node role adopts (this kernel has no dummy driver).
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("clusterdns-mon-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, step := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", podIP + "/32", "dev", "lo"},
		{"ip", "link", "add", "clusterdns0", "type", "bridge"},
	} {
		run(t, "ip", append([]string{"netns", "exec", ns}, step...)...)
	}
	return ns
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// inNamespace runs fn inside the network namespace (internal/netnsrun).
func inNamespace(ns string, fn func() error) error { return netnsrun.In(ns, fn) }

// exchange asks server from ns over a fresh socket, from address from when it is not empty.
func exchange(ns, network, from, server, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	d := &net.Dialer{Timeout: timeout}
	if from != "" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
	}
	var conn net.Conn
	if err := inNamespace(ns, func() (err error) {
		conn, err = d.Dial(network, server)
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Conn{Conn: conn}
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	return c.ReadMsg()
}

// stubResolver stands for the node's resolvers: names under servfail. and nx. fail, others have
// an A record with a 1 s TTL; while up is false it answers nothing.
type stubResolver struct {
	up atomic.Bool
}

func startStub(t *testing.T, ns string) *stubResolver {
	t.Helper()
	s := &stubResolver{}
	s.up.Store(true)
	var pc net.PacketConn
	if err := inNamespace(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", stubAddr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveDNS)}
	var done sync.WaitGroup
	done.Add(1)
	go func() { defer done.Done(); srv.ActivateAndServe() }()
	t.Cleanup(func() { srv.Shutdown(); done.Wait() })
	return s
}

func (s *stubResolver) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	if !s.up.Load() || len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	switch {
	case strings.HasPrefix(q.Name, "servfail."):
		m.Rcode = dns.RcodeServerFailure
	case strings.HasPrefix(q.Name, "nx."):
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 1)})
	}
	w.WriteMsg(m)
}

// startCoreDNS runs the binary inside ns and waits for its banner (printed once it listens).
func startCoreDNS(t *testing.T, ns, bin, corefile string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "-conf", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("coredns output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "CoreDNS-") {
		select {
		case <-exited:
			t.Fatalf("coredns exited before serving:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("coredns not serving after 20 s:\n%s", out.String())
		}
	}
	// k8sdiscovery answers SERVFAIL until it has read the manifests.
	for {
		r, err := exchange(ns, "udp", "", centralAddr, "myweb-svc.default.svc.cluster.local", dns.TypeA, time.Second)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the central role has not synced the manifests after 20 s: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
}
