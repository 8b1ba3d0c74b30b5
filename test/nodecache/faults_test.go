package nodecache

import (
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// loadLoop asks the node cache at a fixed rate from the client namespace and counts, per phase,
// what was sent, answered right, answered wrong and lost (error, timeout or an error rcode).
type loadLoop struct {
	mu     sync.Mutex
	counts map[string]*[4]int // phase → sent, answered, wrong, lost
	phase  atomic.Value
	wg     sync.WaitGroup
}

func (l *loadLoop) setPhase(p string) { l.phase.Store(p) }

func (l *loadLoop) run(tp *topology, names []string, rate int, stop <-chan struct{}) {
	l.counts = map[string]*[4]int{}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			l.wg.Wait()
			return
		case <-tick.C:
		}
		phase := l.phase.Load().(string)
		name := names[i%len(names)]
		l.wg.Go(func() {
			r, err := query(tp.client, "udp", tp.v4(), name, dns.TypeA, time.Second)
			outcome := 3
			switch {
			case err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "10.96.0.42":
				outcome = 1
			case err == nil && r.Rcode == dns.RcodeSuccess:
				outcome = 2
			}
			l.mu.Lock()
			c := l.counts[phase]
			if c == nil {
				c = &[4]int{}
				l.counts[phase] = c
			}
			c[0]++
			c[outcome]++
			l.mu.Unlock()
		})
	}
}

// start runs the loop in the background; the returned stop ends it and waits for its queries.
func (l *loadLoop) start(tp *topology, names []string, rate int) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() { l.run(tp, names, rate, quit); close(done) }()
	return func() { close(quit); <-done }
}

func (l *loadLoop) report(t *testing.T, phase string) [4]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := [4]int{}
	if p := l.counts[phase]; p != nil {
		c = *p
	}
	t.Logf("%-28s sent %4d, answered %4d, wrong %d, lost %d", phase+":", c[0], c[1], c[2], c[3])
	return c
}

// goroutines reads the node cache's goroutine count from its pprof endpoint in the node namespace.
func goroutines(t *testing.T, ns, addr string) int {
	t.Helper()
	var conn net.Conn
	if err := inNetns(ns, func() (err error) { conn, err = net.DialTimeout("tcp", addr, 2*time.Second); return err }); err != nil {
		t.Fatalf("goroutine count: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	// a plain HTTP/1.0 request on a socket made in the namespace (an http.Client dials elsewhere)
	fmt.Fprintf(conn, "GET /debug/pprof/goroutine?debug=1 HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	b, _ := io.ReadAll(conn)
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	first, _, _ := strings.Cut(body, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("goroutine count: %v", err)
	}
	return n
}

// upstreamConns counts the node cache's TCP connections to the upstream.
func upstreamConns(t *testing.T, tp *topology) int {
	out := nsRun(t, tp.node, "ss", "-Htn", "state", "established", "dst", tp.upstreamIP+":53")
	return len(strings.Fields(strings.TrimSpace(out))) / 4
}

// TestUpstreamRestartUnderLoad: under a steady query loop the cluster DNS behind the node cache
// is killed and restarted. Cached names keep answering (stale, RFC 8767) while it is gone,
// nothing is answered wrong, fresh names resolve again after the restart, and connections and
// goroutines come back to where they were.
func TestUpstreamRestartUnderLoad(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	up := start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	const pprofAddr = "127.0.0.1:6060"
	node := start(t, tp.node, "nodecache", nodeCorefile(tp, "        success 9984 1\n        serve_stale 1h", "    pprof "+pprofAddr), nil)
	_ = node
	names := []string{"a.default.svc.cluster.local.", "b.default.svc.cluster.local.", "c.default.svc.cluster.local."}
	for _, n := range names {
		expect(t, "warm "+n, answerOf(query(tp.client, "udp", tp.v4(), n, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	}
	time.Sleep(500 * time.Millisecond)
	goBefore, connsBefore := goroutines(t, tp.node, pprofAddr), upstreamConns(t, tp)

	l := &loadLoop{}
	l.setPhase("upstream up")
	stopLoad := l.start(tp, names, 100)

	time.Sleep(2 * time.Second)
	l.setPhase("upstream killed")
	up.signal(t, syscall.SIGKILL)
	up.wait(t, 5*time.Second)
	time.Sleep(4 * time.Second) // entries expire after 1 s: the answers now are stale
	fresh := answerOf(query(tp.client, "udp", tp.v4(), "never-seen.default.svc.cluster.local.", dns.TypeA, 2*time.Second))

	l.setPhase("upstream restarted")
	start(t, tp.upstream, "upstream-again", tp.upstreamCorefile(), nil)
	var recovered time.Duration
	restartedAt := time.Now()
	for {
		r, err := query(tp.client, "udp", tp.v4(), fmt.Sprintf("fresh-%d.default.svc.cluster.local.", time.Now().UnixNano()), dns.TypeA, time.Second)
		if answerOf(r, err) == "NOERROR 10.96.0.42" {
			recovered = time.Since(restartedAt)
			break
		}
		if time.Since(restartedAt) > 15*time.Second {
			t.Fatalf("no fresh answer 15s after the upstream restarted: %s", answerOf(r, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	stopLoad()

	upC, killedC, restartedC := l.report(t, "upstream up"), l.report(t, "upstream killed"), l.report(t, "upstream restarted")
	t.Logf("fresh name while the upstream was down: %s; fresh names answered again %v after the restart", fresh, recovered.Round(time.Millisecond))
	expect(t, "wrong answers", upC[2]+killedC[2]+restartedC[2], 0)
	expect(t, "cached names lost while the upstream was down (served stale)", killedC[3], 0)
	expect(t, "lost before and after the outage", upC[3]+restartedC[3], 0)
	expect(t, "never-cached name while the upstream was down", fresh, "SERVFAIL")

	time.Sleep(time.Second)
	goAfter, connsAfter := goroutines(t, tp.node, pprofAddr), upstreamConns(t, tp)
	t.Logf("goroutines %d → %d, upstream TCP connections %d → %d", goBefore, goAfter, connsBefore, connsAfter)
	expect(t, "goroutines back near the start (within 20)", goAfter <= goBefore+20, true)
	expect(t, "upstream connections not piling up", connsAfter <= connsBefore+1 && connsAfter >= 1, true)
}

// TestSigkillWithSecondInstance: with two instances serving, SIGKILL of one removes its table
// (the kernel does) and the other keeps answering.
func TestSigkillWithSecondInstance(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	corefile := nodeCorefile(tp, "", "")
	a := start(t, tp.node, "nodecache-A", corefile, nil)
	b := start(t, tp.node, "nodecache-B", corefile, nil)
	tableA, tableB := a.table(t), b.table(t)

	l := &loadLoop{}
	l.setPhase("both serving")
	stopLoad := l.start(tp, []string{"web.default.svc.cluster.local."}, 100)
	time.Sleep(2 * time.Second)
	l.setPhase("A killed (first second)")
	a.signal(t, syscall.SIGKILL)
	a.wait(t, 5*time.Second)
	time.Sleep(time.Second)
	l.setPhase("A killed (after)")
	time.Sleep(3 * time.Second)
	stopLoad()

	l.report(t, "both serving")
	first := l.report(t, "A killed (first second)")
	after := l.report(t, "A killed (after)")
	t.Logf("queries lost in the first second after SIGKILL (in A's socket when it died): %d", first[3])
	expect(t, "wrong answers", first[2]+after[2], 0)
	expect(t, "lost once the kernel stopped steering to A", after[3], 0)
	tables := nsRun(t, tp.node, "nft", "list", "tables")
	expect(t, "A's table gone after SIGKILL", strings.Contains(tables, "inet "+tableA+"\n"), false)
	expect(t, "B's table still there", strings.Contains(tables, "inet "+tableB+"\n"), true)
	expect(t, "B answers", answerOf(query(tp.client, "udp", tp.v4(), "web.default.svc.cluster.local.", dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
}

// TestAnswersOnlyOnListenAddresses: the node cache serves its link-local addresses and nothing
// else of the node (not the node's own addresses on the pod or upstream side).
func TestAnswersOnlyOnListenAddresses(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	start(t, tp.node, "nodecache", nodeCorefile(tp, "", ""), nil)
	expect(t, "answer on the listen address", answerOf(query(tp.client, "udp", tp.v4(), "web.default.svc.cluster.local.", dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	for _, addr := range []string{"10.231.0.1:53", "[fd31::1]:53"} {
		for _, network := range []string{"udp", "tcp"} {
			_, err := query(tp.client, network, addr, "web.default.svc.cluster.local.", dns.TypeA, time.Second)
			expect(t, "no answer on the node's own address "+addr+" over "+network, err != nil, true)
		}
	}
}

// TestMigrationFromNodeLocalDNSCache: a NodeLocal DNSCache-like cache serves the listen addresses
// on its interface `nodelocaldns` (here: our binary with that interface, a bridge that already
// carries the addresses, as node-cache leaves it). The node role starts beside it on its own
// interface, and must put the addresses there too. Then the old cache exits and its interface is
// deleted, addresses and all, as node-cache does: the node role keeps answering.
func TestMigrationFromNodeLocalDNSCache(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	for _, step := range [][]string{
		{"ip", "link", "add", "nodelocaldns", "type", "bridge"},
		{"ip", "link", "set", "nodelocaldns", "up"},
		{"ip", "addr", "add", tp.listen4 + "/32", "dev", "nodelocaldns"},
		{"ip", "addr", "add", tp.listen6 + "/128", "dev", "nodelocaldns", "nodad"},
	} {
		nsRun(t, tp.node, step...)
	}
	old := start(t, tp.node, "node-local-dns", strings.Replace(nodeCorefile(tp, "        keep_on_exit", ""), "interface clusterdns0", "interface nodelocaldns", 1), nil)
	ours := start(t, tp.node, "clusterdns-node", nodeCorefile(tp, "", ""), nil)
	_ = ours
	addrs := nsRun(t, tp.node, "ip", "addr", "show", "dev", "clusterdns0")
	expect(t, "listen addresses on clusterdns0 too", strings.Contains(addrs, tp.listen4) && strings.Contains(addrs, tp.listen6), true)

	l := &loadLoop{}
	l.setPhase("both serving")
	stopLoad := l.start(tp, []string{"web.default.svc.cluster.local."}, 100)
	time.Sleep(2 * time.Second)
	l.setPhase("old cache gone")
	old.signal(t, syscall.SIGTERM)
	old.wait(t, 10*time.Second)
	nsRun(t, tp.node, "ip", "link", "del", "nodelocaldns") // what node-cache's teardown does
	time.Sleep(3 * time.Second)
	stopLoad()

	both := l.report(t, "both serving")
	after := l.report(t, "old cache gone")
	expect(t, "wrong answers", both[2]+after[2], 0)
	expect(t, "lost while both served", both[3], 0)
	expect(t, "lost after the old cache and its interface went", after[3], 0)
	expect(t, "answered after the old cache went", after[1] > 0, true)
}

// slowServer answers every A query with ip after delay, over TCP (and UDP too when withUDP) on
// addr in namespace ns: a slow central role (misses stay in flight long enough for a reload to
// meet them), or a slow resolver behind the central role.
func slowServer(t *testing.T, ns, addr, ip string, delay time.Duration, withUDP bool) {
	t.Helper()
	var l net.Listener
	var pc net.PacketConn
	if err := inNetns(ns, func() (err error) {
		if l, err = net.Listen("tcp", addr); err != nil || !withUDP {
			return err
		}
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			time.Sleep(delay)
			rr, _ := dns.NewRR(q.Name + " 60 IN A " + ip)
			m.Answer = []dns.RR{rr}
		}
		w.WriteMsg(m)
	})
	servers := []*dns.Server{{Listener: l, Net: "tcp", Handler: h}}
	if withUDP {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: h})
	}
	for _, srv := range servers {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
}

// TestReloadUnderLoad: SIGUSR1 (a Corefile reload) while misses are in flight upstream. The old
// instance's queries are answered before its connections close, and new queries never join its
// flights: nothing is lost, nothing fails.
func TestReloadUnderLoad(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	slowServer(t, tp.upstream, tp.upstreamIP+":53", "10.96.0.42", 300*time.Millisecond, false)
	node := start(t, tp.node, "nodecache", nodeCorefile(tp, "        timeout 2s", ""), nil)
	expect(t, "warm", answerOf(query(tp.client, "udp", tp.v4(), "web.default.svc.cluster.local.", dns.TypeA, 3*time.Second)), "NOERROR 10.96.0.42")

	const rate = 200
	var sent, answered atomic.Int64
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			name := "web.default.svc.cluster.local." // a hit
			if i%2 == 1 {
				name = fmt.Sprintf("reload-%d.default.svc.cluster.local.", i) // a miss, 300 ms upstream
			}
			sent.Add(1)
			wg.Go(func() {
				r, err := query(tp.client, "udp", tp.v4(), name, dns.TypeA, 3*time.Second)
				if got := answerOf(r, err); got != "NOERROR 10.96.0.42" {
					mu.Lock()
					failed = append(failed, name+": "+got)
					mu.Unlock()
					return
				}
				answered.Add(1)
			})
		}
	}()
	for range 3 {
		time.Sleep(time.Second)
		node.signal(t, syscall.SIGUSR1)
	}
	time.Sleep(time.Second)
	close(stop)
	<-loopDone
	wg.Wait()
	t.Logf("200 q/s (half misses held 300 ms upstream), 3 reloads: sent %d, answered %d, failed %d", sent.Load(), answered.Load(), len(failed))
	for i, f := range failed {
		if i == 10 {
			break
		}
		t.Logf("failed: %s", f)
	}
	expect(t, "reloads seen", strings.Count(node.output(), "Reloading complete") >= 1 || strings.Count(node.output(), "Reloading") >= 1, true)
	expect(t, "queries failed across reloads", len(failed), 0)
}

// TestRepairsAddresses: someone takes the listen addresses off the interface (a network manager
// flushing a dummy interface it does not know); the node cache puts them back within its repair
// interval, counts it, and answers again.
func TestRepairsAddresses(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	start(t, tp.node, "nodecache", nodeCorefile(tp, "        repair 500ms", "    prometheus 127.0.0.1:9253"), nil)
	name := "web.default.svc.cluster.local."
	expect(t, "answers", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	nsRun(t, tp.node, "ip", "addr", "flush", "dev", "clusterdns0")
	waitUntil(5*time.Second, func() bool {
		return strings.Contains(nsRun(t, tp.node, "ip", "addr", "show", "dev", "clusterdns0"), tp.listen4)
	})
	addrs := nsRun(t, tp.node, "ip", "addr", "show", "dev", "clusterdns0")
	expect(t, "addresses back", strings.Contains(addrs, tp.listen4) && strings.Contains(addrs, tp.listen6), true)
	expect(t, "answers after the repair", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	expect(t, "repairs counted", metricSum(t, tp.node, "http://127.0.0.1:9253/metrics", `coredns_nodecache_repairs_total{what="address"}`), 2)
}

// waitUntil polls cond every 100 ms for up to within.
func waitUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// Rules someone removed are put back and counted: iptables rules deleted from the raw and filter
// tables (kube-proxy or a firewall reload flushing chains), and the shared nftables table of
// keep_on_exit deleted. An owned nftables table cannot be touched by anyone else at all.
func TestRepairsRules(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	name := "web.default.svc.cluster.local."
	count := func(args ...string) int { return strings.Count(nsRun(t, tp.node, args...), "nodecache") }

	t.Run("iptables", func(t *testing.T) {
		nc := start(t, tp.node, "nodecache", nodeCorefile(tp, "        packet_filter iptables\n        repair 500ms", "    prometheus 127.0.0.1:9253"), nil)
		expect(t, "answers", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
		nsRun(t, tp.node, "iptables", "-t", "raw", "-F", "PREROUTING")                                                       // 2 notrack rules
		nsRun(t, tp.node, "ip6tables", "-t", "filter", "-D", "INPUT", "-d", tp.listen6+"/128", "-p", "udp", "--dport", "53", // 1 accept rule
			"-m", "comment", "--comment", "nodecache", "-j", "ACCEPT")
		back := waitUntil(5*time.Second, func() bool {
			return count("iptables", "-t", "raw", "-S") == 6 && count("ip6tables", "-t", "filter", "-S") == 4
		})
		expect(t, "rules back", back, true)
		repaired := func() float64 {
			return metricSum(t, tp.node, "http://127.0.0.1:9253/metrics", `coredns_nodecache_repairs_total{what="rule"}`)
		}
		waitUntil(2*time.Second, func() bool { return repaired() >= 3 }) // counted once the pass ends
		expect(t, "repairs counted", repaired(), 3)
		expect(t, "answers after the repair", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
		nc.signal(t, syscall.SIGTERM)
		nc.wait(t, 10*time.Second)
		expect(t, "iptables rules left", count("iptables-save")+count("ip6tables-save"), 0)
	})

	t.Run("nftables keep_on_exit", func(t *testing.T) {
		nc := start(t, tp.node, "nodecache", nodeCorefile(tp, "        keep_on_exit\n        repair 500ms", "    prometheus 127.0.0.1:9253"), nil)
		t.Cleanup(func() {
			exec.Command("ip", "netns", "exec", tp.node, "nft", "delete", "table", "inet", "nodecache").Run()
		})
		nsRun(t, tp.node, "nft", "delete", "table", "inet", "nodecache")
		back := waitUntil(5*time.Second, func() bool {
			out, _ := exec.Command("ip", "netns", "exec", tp.node, "nft", "list", "table", "inet", "nodecache").CombinedOutput()
			return strings.Count(string(out), "notrack") == 12
		})
		expect(t, "table and its 12 rules back", back, true)
		expect(t, "repairs counted", metricSum(t, tp.node, "http://127.0.0.1:9253/metrics", `coredns_nodecache_repairs_total{what="rule"}`), 12)
		expect(t, "answers after the repair", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
		nc.signal(t, syscall.SIGTERM)
		nc.wait(t, 10*time.Second)
	})

	t.Run("nftables owned", func(t *testing.T) {
		nc := start(t, tp.node, "nodecache", nodeCorefile(tp, "        repair 500ms", ""), nil)
		table := nc.table(t)
		out, err := exec.Command("ip", "netns", "exec", tp.node, "nft", "delete", "table", "inet", table).CombinedOutput()
		t.Logf("nft delete table inet %s: %v: %s", table, err, strings.TrimSpace(string(out)))
		expect(t, "another process cannot delete the owned table", err != nil, true)
		nc.signal(t, syscall.SIGTERM)
		nc.wait(t, 10*time.Second)
	})
}

// A host firewall that drops by default and accepts only established flows (iptables policy
// DROP with a conntrack rule) would drop the node cache's packets, which skip conntrack:
// packet_filter iptables inserts accept rules for them at the top of INPUT and OUTPUT.
func TestHostFirewallDropsByDefault(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	start(t, tp.node, "nodecache", nodeCorefile(tp, "        packet_filter iptables", ""), nil)
	name := "web.default.svc.cluster.local."
	expect(t, "answers before the firewall", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			nsRun(t, tp.node, bin, "-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
			if bin == "ip6tables" {
				nsRun(t, tp.node, bin, "-A", chain, "-p", "ipv6-icmp", "-j", "ACCEPT") // neighbour discovery
			}
			nsRun(t, tp.node, bin, "-P", chain, "DROP")
		}
	}
	t.Logf("node's filter table:\n%s", nsRun(t, tp.node, "iptables", "-S"))
	for _, server := range []string{tp.v4(), tp.v6()} {
		for _, network := range []string{"udp", "tcp"} {
			expect(t, "cached answer through the default-drop firewall over "+network+" to "+server,
				answerOf(query(tp.client, network, server, name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
		}
	}
}

// blackhole is a resolver in namespace ns that reads UDP queries and never answers: every miss
// sent there holds its flight for the whole upstream timeout.
func blackhole(t *testing.T, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := inNetns(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
}

// processFigures reads a process's resident memory (MiB) and open file descriptors.
func processFigures(t *testing.T, pid int) (rssMiB int, fds int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rest)[0])
			rssMiB = kb / 1024
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return rssMiB, len(ents)
}

// TestRandomSubdomainFlood: names nobody asked before (a random-subdomain attack) as fast as a
// few senders can write them, with a resolver behind the `.` block that never answers. The node
// cache holds at most its bound of questions upstream (4096 per block; past it SERVFAIL at once),
// so goroutines, file descriptors and memory stay bounded, and a pod asking a cached cluster
// name meanwhile loses nothing.
func TestRandomSubdomainFlood(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	blackhole(t, tp.upstream, tp.upstreamIP+":5353")
	const pprofAddr = "127.0.0.1:6061"
	corefile := nodeCorefile(tp, "", "    pprof "+pprofAddr+"\n    prometheus 127.0.0.1:9253") + fmt.Sprintf(`. {
    nodecache {
        listen %s %s
        interface clusterdns0
        upstream udp %s:5353
        timeout 2s
    }
}
`, tp.listen4, tp.listen6, tp.upstreamIP)
	node := start(t, tp.node, "nodecache", corefile, nil)
	name := "web.default.svc.cluster.local."
	expect(t, "warm", answerOf(query(tp.client, "udp", tp.v4(), name, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	goBefore := goroutines(t, tp.node, pprofAddr)
	rssBefore, fdsBefore := processFigures(t, node.pid)

	// The flood: 4 senders, each on one socket, writing queries for fresh names without waiting
	// for answers, 20,000 q/s in all (NODECACHE_FLOOD_RATE changes it; the rate that took the
	// old node cache to 1.36 GiB and 20,000 file descriptors).
	rate := 20000
	if r, err := strconv.Atoi(os.Getenv("NODECACHE_FLOOD_RATE")); err == nil && r > 0 {
		rate = r
	}
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	for s := range 4 {
		var conn net.Conn
		if err := inNetns(tp.client, func() (err error) { conn, err = net.Dial("udp", tp.v4()); return err }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Go(func() {
			go func() { // drain the SERVFAILs so the socket's buffer never fills
				buf := make([]byte, 512)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			}()
			m := new(dns.Msg)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			perTick := max(1, rate/4/1000)
			for i := 0; ; {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for range perTick {
					m.SetQuestion(fmt.Sprintf("r%d-%d.flood.example.", s, i), dns.TypeA)
					b, _ := m.Pack()
					if _, err := conn.Write(b); err == nil {
						sent.Add(1)
					}
					i++
				}
			}
		})
	}
	// Meanwhile a pod asks a cached name at 100 q/s.
	l := &loadLoop{}
	l.setPhase("cached name during the flood")
	stopLoad := l.start(tp, []string{name}, 100)
	var peakGo, peakRSS, peakFDs int
	begin := time.Now()
	for time.Since(begin) < 8*time.Second {
		time.Sleep(time.Second)
		peakGo = max(peakGo, goroutines(t, tp.node, pprofAddr))
		rss, fds := processFigures(t, node.pid)
		peakRSS, peakFDs = max(peakRSS, rss), max(peakFDs, fds)
	}
	stopLoad()
	close(stop)
	wg.Wait()
	seconds := time.Since(begin).Seconds()
	shed := metricSum(t, tp.node, "http://127.0.0.1:9253/metrics", "coredns_nodecache_shed_total{")
	c := l.report(t, "cached name during the flood")
	t.Logf("flood: %d queries in %.1f s (%.0f q/s), %v shed at once; goroutines %d → peak %d, fds %d → peak %d, RSS %d → peak %d MiB",
		sent.Load(), seconds, float64(sent.Load())/seconds, shed, goBefore, peakGo, fdsBefore, peakFDs, rssBefore, peakRSS)
	expect(t, "flood queries answered at once past the bound (shed)", shed > 0, true)
	expect(t, "goroutines within the bound (4096 flights + 1000)", peakGo < goBefore+4096+1000, true)
	expect(t, "file descriptors within 100 of the start (shared UDP sockets, no socket per miss)", peakFDs < fdsBefore+100, true)
	expect(t, "RSS below 400 MiB", peakRSS < 400, true)
	expect(t, "cached name lost during the flood", c[3], 0)
	expect(t, "cached name answered wrong", c[2], 0)
}

// TestLogSeesEveryAnswer: with `log` in the block, every answer is logged, hits included (the
// block's queries go through the plugin chain instead of the packet door).
func TestLogSeesEveryAnswer(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	node := start(t, tp.node, "nodecache", nodeCorefile(tp, "", "    log"), nil)
	const asked = 5
	for range asked {
		expect(t, "answer", answerOf(query(tp.client, "udp", tp.v4(), "logged.default.svc.cluster.local.", dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	}
	time.Sleep(200 * time.Millisecond) // log writes asynchronously to stdout
	expect(t, "answers logged (1 miss, 4 hits)", strings.Count(node.output(), `"A IN logged.default.svc.cluster.local. udp`), asked)
	expect(t, "the startup log says why the door leaves the zone", strings.Contains(node.output(), "plugins above nodecache: log"), true)
}

// histogramQuantile is PromQL's histogram_quantile over the cumulative buckets of one series
// (le → count), as a dashboard computes it: linear within the bucket.
func histogramQuantile(q float64, buckets map[float64]float64) float64 {
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	slices.Sort(les)
	total := buckets[les[len(les)-1]]
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for _, le := range les {
		if c := buckets[le]; c >= rank {
			if math.IsInf(le, 1) {
				return prevLE
			}
			return prevLE + (le-prevLE)*(rank-prevCount)/(c-prevCount)
		}
		prevLE, prevCount = le, buckets[le]
	}
	return prevLE
}

// TestDashboardAgreesWithClients: what a CoreDNS dashboard reads of the node role under load
// (requests and responses by rcode, the request-duration p99) agrees with what the clients saw:
// every answer counted once, the door's included, and the server's p99 within the clients'.
func TestDashboardAgreesWithClients(t *testing.T) {
	needRoot(t)
	tp := newTopology(t)
	start(t, tp.upstream, "upstream", tp.upstreamCorefile(), nil)
	start(t, tp.node, "nodecache", nodeCorefile(tp, "", "    prometheus 127.0.0.1:9253"), nil)
	const url = "http://127.0.0.1:9253/metrics"
	names := []string{"d1.default.svc.cluster.local.", "d2.default.svc.cluster.local.", "d3.default.svc.cluster.local."}
	for _, n := range names {
		expect(t, "warm "+n, answerOf(query(tp.client, "udp", tp.v4(), n, dns.TypeA, 2*time.Second)), "NOERROR 10.96.0.42")
	}
	requestsBefore := metricSum(t, tp.node, url, `coredns_dns_requests_total{`)
	noerrorBefore := metricSum(t, tp.node, url, `coredns_dns_responses_total{plugin="nodecache",rcode="NOERROR"`)

	const rate, seconds = 500, 4
	var mu sync.Mutex
	var latencies []time.Duration
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	for i := range rate * seconds {
		<-tick.C
		wg.Go(func() {
			begin := time.Now()
			r, err := query(tp.client, "udp", tp.v4(), names[i%len(names)], dns.TypeA, 2*time.Second)
			if answerOf(r, err) == "NOERROR 10.96.0.42" {
				mu.Lock()
				latencies = append(latencies, time.Since(begin))
				mu.Unlock()
			}
		})
	}
	tick.Stop()
	wg.Wait()
	slices.Sort(latencies)
	clientP99 := latencies[len(latencies)*99/100].Seconds()

	body := metricLines(t, tp.node, url)
	buckets := map[float64]float64{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, `coredns_dns_request_duration_seconds_bucket{`) || !strings.Contains(line, `zone="cluster.local."`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		leText, _, _ := strings.Cut(rest, `"`)
		le, _ := strconv.ParseFloat(leText, 64)
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		buckets[le] += v
	}
	serverP99 := histogramQuantile(0.99, buckets)
	requests := metricSum(t, tp.node, url, `coredns_dns_requests_total{`) - requestsBefore
	noerror := metricSum(t, tp.node, url, `coredns_dns_responses_total{plugin="nodecache",rcode="NOERROR"`) - noerrorBefore
	t.Logf("%d q/s for %d s: clients got %d answers, p99 %.3f ms; dashboard: %v requests, %v NOERROR, p99 %.3f ms",
		rate, seconds, len(latencies), clientP99*1000, requests, noerror, serverP99*1000)
	expect(t, "every answer a client got is a request on the dashboard", requests, float64(len(latencies)))
	expect(t, "and a NOERROR response", noerror, float64(len(latencies)))
	expect(t, "the dashboard's p99 within the clients' (server time is part of the round trip)", serverP99 <= clientP99, true)
}
