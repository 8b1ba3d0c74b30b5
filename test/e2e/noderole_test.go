package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// The node role against a real central role, both the built ./coredns, with the central role on
// the real apiserver of the suite:
//
//   - TestNodeRoleBehindSlowResolver: cluster names must not wait behind slow names. CoreDNS's
//     server (miekg/dns serveTCPConn) answers the queries of one TCP connection one at a time, in
//     order, so a node cache that pipelines many queries onto a few connections makes every
//     cluster name wait behind a PTR the central role forwards to a slow resolver. The node role
//     is run beside the control (upstream CoreDNS as NodeLocal DNSCache runs it: cache +
//     forward force_tcp) under the same load; both are printed, the node role is asserted.
//   - TestNodeRoleSpreadsToNewCentral: a second central process on the same address and port
//     (SO_REUSEPORT, as a new pod behind kube-proxy gets new connections) must get a share of
//     the node role's queries: pooled connections are renewed (max_age).

// The central role's forward gives up on the slow resolver (2 s read timeout, 2 attempts) and
// answers the PTRs SERVFAIL after about 4 s: what matters is how long they hold it.
const (
	clusterNameTimeout = 2 * time.Second // a resolver's timeout (glibc "options timeout:2")
	ptrTimeout         = 5 * time.Second // glibc's default; the central role gives up after ~4 s
	slowDelay          = 3 * time.Second // the slow resolver's answer time
)

// TestNodeRoleBehindSlowResolver: 400 q/s of cluster names (existing Services, and fresh names
// that are NXDOMAIN so every other query is a miss at the node) beside 50 q/s of PTRs for public
// addresses that the central role forwards to a resolver answering in 3 s. Our node role must
// answer every cluster name right within 2 s: no loss, no SERVFAIL, nothing wrong.
func TestNodeRoleBehindSlowResolver(t *testing.T) {
	const (
		ns          = "noderole"
		services    = 20
		clusterRate = 400
		ptrRate     = 50
		loadFor     = 20 * time.Second
	)
	createNamespace(t, ns)
	var svcNames, svcIPs []string
	for i := range services {
		s := createService(t, clusterIPService(ns, fmt.Sprintf("svc-%02d", i), nil, port("http", 80, corev1.ProtocolTCP)))
		svcNames = append(svcNames, fmt.Sprintf("%s.%s.svc.cluster.local.", s.Name, ns))
		svcIPs = append(svcIPs, s.Spec.ClusterIP)
	}
	slow := startSlowResolver(t, slowDelay)

	type variant struct {
		name      string
		pipelined bool // the central role answers pipelined TCP on a port of its own, which the node asks
		corefile  func(nodePort, centralPort int) string
	}
	nodecache := func(transport string) func(nodePort, centralPort int) string {
		return func(nodePort, centralPort int) string {
			return fmt.Sprintf(`cluster.local:%[1]d in-addr.arpa:%[1]d ip6.arpa:%[1]d {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream %[3]s 127.0.0.1:%[2]d
    }
}
`, nodePort, centralPort, transport)
		}
	}
	// Every zone of a server block needs the port: "a b c:PORT" puts only c on PORT, a and b on 53.
	variants := []variant{
		{"nodecache", false, nodecache("tcp")},
		{"nodecache pipelined", true, nodecache("pipelined")},
		{"cache+forward", false, func(nodePort, centralPort int) string {
			return fmt.Sprintf(`cluster.local:%[1]d in-addr.arpa:%[1]d ip6.arpa:%[1]d {
    bind 127.0.0.1
    cache 30
    forward . 127.0.0.1:%[2]d {
        force_tcp
    }
}
`, nodePort, centralPort)
		}},
	}

	type result struct {
		cluster, ptr *outcomes
		slowAsked    int64 // delayed queries that reached the slow resolver
	}
	results := make([]result, len(variants))
	for vi, v := range variants {
		// A fresh central role per variant, so the first variant's leftovers (queries still
		// queued on its connections) do not weigh on the second.
		tag := strings.NewReplacer("+", "-", " ", "-").Replace(v.name)
		centralPort, askPort := mustFreePort(), 0
		var extra []string
		if v.pipelined {
			askPort = mustFreePort()
			extra = append(extra, fmt.Sprintf("pipelining 127.0.0.1:%d", askPort))
		}
		central := startCentral(t, "noderole-central-"+tag, centralPort, false, slow.addr, extra...)
		if err := central.waitAnswer(svcNames[services-1], svcIPs[services-1]); err != nil {
			t.Fatalf("central role for %s: %v", v.name, err)
		}
		if askPort == 0 {
			askPort = centralPort
		}
		nodePort := mustFreePort()
		nodeAddr := fmt.Sprintf("127.0.0.1:%d", nodePort)
		node := startLogged(t, "noderole-node-"+tag, v.corefile(nodePort, askPort))
		if err := waitAnswers(node.process, nodeAddr, svcNames[0], svcIPs[0], 30*time.Second); err != nil {
			if node.Exited() && os.Geteuid() != 0 {
				t.Skipf("the node role (%s) did not start without root; run as root (CI does): %v", v.name, err)
			}
			t.Fatalf("node role %s: %v", v.name, err)
		}

		res := result{cluster: newOutcomes(), ptr: newOutcomes()}
		asked := slow.asked.Load()
		start := time.Now()
		stop := make(chan struct{})
		time.AfterFunc(loadFor, func() { close(stop) })
		var wg sync.WaitGroup
		wg.Go(func() {
			pace(clusterRate, stop, func(i int) {
				name, wantIP := fmt.Sprintf("fresh-%s-%d.%s.svc.cluster.local.", tag, i, ns), ""
				if i%2 == 0 {
					k := (i / 2) % services
					name, wantIP = svcNames[k], svcIPs[k]
				}
				r, rtt, err := askUDP(nodeAddr, name, dns.TypeA, clusterNameTimeout)
				res.cluster.addCluster(name, wantIP, r, rtt, err)
			})
		})
		wg.Go(func() {
			pace(ptrRate, stop, func(i int) {
				// A public address, unique per query and per variant (nothing leaves the machine:
				// the slow resolver answers it), so neither cache can answer it.
				ip := net.IPv4(byte(44+vi), byte(i>>16), byte(i>>8), byte(i)).String()
				r, rtt, err := askUDP(nodeAddr, reverse(ip), dns.TypePTR, ptrTimeout)
				res.ptr.addPTR(r, rtt, err)
			})
		})
		wg.Wait()
		res.slowAsked = slow.asked.Load() - asked
		results[vi] = res
		t.Logf("%s: load of %s done after %s (last answers waited for)", v.name, loadFor, time.Since(start).Round(time.Millisecond))
		node.Stop(10 * time.Second)
		central.Stop(10 * time.Second)
	}

	row := func(label string, f func(r result) string) {
		t.Logf("  %-40s %20s %20s %20s", label, f(results[0]), f(results[1]), f(results[2]))
	}
	count := func(o func(r result) *outcomes, kind string) func(r result) string {
		return func(r result) string { return fmt.Sprint(o(r).get(kind)) }
	}
	cl := func(r result) *outcomes { return r.cluster }
	pt := func(r result) *outcomes { return r.ptr }
	t.Logf("node role under load, %d q/s cluster names + %d q/s PTRs to a %s resolver, %s each:", clusterRate, ptrRate, slowDelay, loadFor)
	t.Logf("  %-40s %20s %20s %20s", "", variants[0].name, variants[1].name, variants[2].name)
	row("cluster names sent", count(cl, "sent"))
	row("  answered right", count(cl, "ok"))
	row("  SERVFAIL", count(cl, "servfail"))
	row("  wrong (other rcode or answer)", count(cl, "wrong"))
	row(fmt.Sprintf("  lost (no answer in %s)", clusterNameTimeout), count(cl, "lost"))
	row("  right answers p50 / p99", func(r result) string { return r.cluster.rttPercentile(50) + "/" + r.cluster.rttPercentile(99) })
	row("PTRs sent", count(pt, "sent"))
	row("  answered (NOERROR/NXDOMAIN)", count(pt, "answered"))
	row("  SERVFAIL", count(pt, "servfail"))
	row("  other rcode", count(pt, "other"))
	row(fmt.Sprintf("  lost (no answer in %s)", ptrTimeout), count(pt, "lost"))
	row("queries at the slow resolver", func(r result) string { return fmt.Sprint(r.slowAsked) })

	if r := results[2]; r.cluster.get("ok") != r.cluster.get("sent") {
		t.Logf("%s (not asserted): %d cluster names not answered right; first failures:\n%s",
			variants[2].name, r.cluster.get("sent")-r.cluster.get("ok"), r.cluster.sampleText())
	}
	for i, ours := range results[:2] {
		sent := ours.cluster.get("sent")
		if ours.slowAsked < int64(ours.ptr.get("sent"))/4 {
			t.Errorf("%s: only %d of %d PTRs reached the slow resolver: the case this test is about did not happen", variants[i].name, ours.slowAsked, ours.ptr.get("sent"))
		}
		if lost, sf, wrong := ours.cluster.get("lost"), ours.cluster.get("servfail"), ours.cluster.get("wrong"); lost+sf+wrong > 0 || ours.cluster.get("ok") != sent {
			t.Errorf("%s: of %d cluster names %d lost, %d SERVFAIL, %d wrong (want all %d answered right); first failures:\n%s",
				variants[i].name, sent, lost, sf, wrong, sent, ours.cluster.sampleText())
		}
	}
}

// TestNodeRoleSpreadsToNewCentral: the node role asks central A under a steady stream of misses;
// central B starts on the same address and port (SO_REUSEPORT: the kernel gives it a share of
// the new TCP connections). With max_age 2s the node role renews its connections, so B must
// answer a real share of the queries asked after it is up, with nothing lost on the way.
func TestNodeRoleSpreadsToNewCentral(t *testing.T) {
	const (
		ns   = "noderole-spread"
		rate = 200
		// With max_age 2s the node role opens at least 10 new connections in 20 s, each landing
		// on A or B at random (the kernel hashes the 4-tuple): B gets less than 10% only when at
		// most one lands there, odds of about 1 in 100 with a single pooled connection and less
		// with more. With forward (force_tcp, max_age 2s) as the node, B answered 37% and 51%.
		before = 4 * time.Second
		after  = 20 * time.Second
	)
	createNamespace(t, ns)
	probe := createService(t, clusterIPService(ns, "probe", nil, port("http", 80, corev1.ProtocolTCP)))
	probeName := "probe." + ns + ".svc.cluster.local."

	centralPort := mustFreePort()
	a := startCentral(t, "spread-central-a", centralPort, true, fmt.Sprintf("127.0.0.1:%d", harness.upstreamPort))
	if err := a.waitAnswer(probeName, probe.Spec.ClusterIP); err != nil {
		t.Fatalf("central A: %v", err)
	}
	nodePort := mustFreePort()
	nodeAddr := fmt.Sprintf("127.0.0.1:%d", nodePort)
	node := startLogged(t, "spread-node", fmt.Sprintf(`cluster.local:%[1]d in-addr.arpa:%[1]d ip6.arpa:%[1]d {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.1:%[2]d
        max_age 2s
    }
}
`, nodePort, centralPort))
	if err := waitAnswers(node.process, nodeAddr, probeName, probe.Spec.ClusterIP, 30*time.Second); err != nil {
		if node.Exited() && os.Geteuid() != 0 {
			t.Skipf("the node role did not start without root; run as root (CI does): %v", err)
		}
		t.Fatalf("node role: %v", err)
	}

	// Every query is a fresh name (a miss at the node, NXDOMAIN at the central role) that says
	// in which phase it was asked, so each central's log tells how many of each it answered.
	phases := []string{"before", "starting", "after"}
	counts := map[string]*outcomes{}
	for _, p := range phases {
		counts[p] = newOutcomes()
	}
	var phase atomic.Value
	phase.Store(phases[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		pace(rate, stop, func(i int) {
			p := phase.Load().(string)
			name := fmt.Sprintf("%s-%d.%s.svc.cluster.local.", p, i, ns)
			r, rtt, err := askUDP(nodeAddr, name, dns.TypeA, clusterNameTimeout)
			counts[p].addCluster(name, "", r, rtt, err)
		})
	})
	defer func() { // on a t.Fatal below too
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	time.Sleep(before)
	phase.Store("starting")
	start := time.Now()
	b := startCentral(t, "spread-central-b", centralPort, true, fmt.Sprintf("127.0.0.1:%d", harness.upstreamPort))
	if err := b.waitReady(30 * time.Second); err != nil {
		t.Fatalf("central B: %v", err)
	}
	t.Logf("central B (pid %d) ready on the same address after %s", b.PID(), time.Since(start).Round(time.Millisecond))
	phase.Store("after")
	time.Sleep(after)
	close(stop)
	wg.Wait()

	total := 0
	for _, p := range phases {
		c := counts[p]
		atA, atB := a.count("IN "+p+"-"), b.count("IN "+p+"-")
		t.Logf("%-9s sent %5d: right %5d, SERVFAIL %d, wrong %d, lost %d; answered by central A %5d, by central B %5d",
			p+":", c.get("sent"), c.get("ok"), c.get("servfail"), c.get("wrong"), c.get("lost"), atA, atB)
		if bad := c.get("servfail") + c.get("wrong") + c.get("lost"); bad > 0 {
			t.Errorf("%s: %d of %d queries not answered right; first failures:\n%s", p, bad, c.get("sent"), c.sampleText())
		}
		total += c.get("sent")
		if p != "after" {
			continue
		}
		switch {
		case atA+atB < c.get("sent")/2:
			t.Errorf("the central logs show %d of the %d queries asked after B was up", atA+atB, c.get("sent"))
		case atB*10 < atA+atB:
			t.Errorf("central B answered %d of %d queries asked after it was up (%.1f%%), want at least 10%%: the node role keeps its connections to A",
				atB, atA+atB, 100*float64(atB)/float64(max(1, atA+atB)))
		}
	}
	t.Logf("%d queries in all", total)
}

// slowResolver is a DNS server that answers every query after a delay, except the root NS
// that health checks ask (a real resolver has it cached): PTRs NXDOMAIN with the SOA of
// in-addr.arpa, anything else NXDOMAIN. UDP packets are served each on a goroutine of its own
// (miekg/dns), so many slow queries are in progress at once; forward asks over UDP.
type slowResolver struct {
	addr     string
	udp, tcp *dns.Server
	asked    atomic.Int64 // delayed queries received
}

func startSlowResolver(t *testing.T, delay time.Duration) *slowResolver {
	t.Helper()
	s := &slowResolver{addr: fmt.Sprintf("127.0.0.1:%d", mustFreePort())}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			_ = w.WriteMsg(m)
			return
		}
		q := r.Question[0]
		if q.Name == "." && q.Qtype == dns.TypeNS {
			rr, _ := dns.NewRR(". 518400 IN NS a.root-servers.net.")
			m.Answer = []dns.RR{rr}
			_ = w.WriteMsg(m)
			return
		}
		s.asked.Add(1)
		time.Sleep(delay)
		zone := "."
		if dns.IsSubDomain("in-addr.arpa.", strings.ToLower(q.Name)) {
			zone = "in-addr.arpa."
		}
		soa, _ := dns.NewRR(zone + " 60 IN SOA ns.slow.test. hostmaster.slow.test. 1 7200 1800 86400 60")
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	s.udp, s.tcp = &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: l, Handler: h}
	go func() { _ = s.udp.ActivateAndServe() }()
	go func() { _ = s.tcp.ActivateAndServe() }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.udp.ShutdownContext(sctx)
		_ = s.tcp.ShutdownContext(sctx)
	})
	return s
}

// centralServer is a ./coredns in the central role: k8sdiscovery on the suite's apiserver,
// forward for everything else.
type centralServer struct {
	loggedServer
	addr, readyURL string
}

// startCentral starts the central role on 127.0.0.1:port (CoreDNS binds with SO_REUSEPORT, so
// two may share it), with the log plugin when withLog, forwarding other names to forwardTo; extra
// lines go into the server block.
func startCentral(t *testing.T, name string, port int, withLog bool, forwardTo string, extra ...string) *centralServer {
	t.Helper()
	readyPort := mustFreePort()
	logLine := ""
	if withLog {
		logLine = "    log\n"
	}
	for _, l := range extra {
		logLine += "    " + l + "\n"
	}
	s := &centralServer{addr: fmt.Sprintf("127.0.0.1:%d", port), readyURL: fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)}
	s.loggedServer = startLogged(t, name, fmt.Sprintf(`.:%d {
    bind 127.0.0.1
%s    ready 127.0.0.1:%d
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . %s
}
`, port, logLine, readyPort, harness.cp.kubeconfig, forwardTo))
	return s
}

func (s *centralServer) waitReady(timeout time.Duration) error {
	return s.WaitFor(timeout, func() error {
		resp, err := httpClient.Get(s.readyURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready: %d", resp.StatusCode)
		}
		return nil
	})
}

// waitAnswer waits for /ready and then for name to resolve to ip (the Service is in the index).
func (s *centralServer) waitAnswer(name, ip string) error {
	if err := s.waitReady(60 * time.Second); err != nil {
		return err
	}
	return waitAnswers(s.process, s.addr, name, ip, 10*time.Second)
}

// waitAnswers asks addr for name over UDP until the answer is NOERROR with exactly ip.
func waitAnswers(p *process, addr, name, ip string, timeout time.Duration) error {
	return p.WaitFor(timeout, func() error {
		r, _, err := askUDP(addr, name, dns.TypeA, time.Second)
		if kind, detail := clusterOutcome(name, ip, r, err); kind != "ok" {
			return fmt.Errorf("%s at %s: %s", name, addr, detail)
		}
		return nil
	})
}

// askUDP asks one question over UDP without EDNS, as a stub resolver does.
func askUDP(addr, name string, qtype uint16, timeout time.Duration) (*dns.Msg, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	return (&dns.Client{Net: "udp", Timeout: timeout}).Exchange(m, addr)
}

// pace calls f(i) rate times a second, each call on a goroutine of its own, until stop is
// closed; then it waits for the calls to return. A tick that comes late (a busy machine) sends
// every query due by then, so the number of queries is the rate times the time, as for the
// other variant.
func pace(rate int, stop <-chan struct{}, f func(i int)) {
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-stop:
			wg.Wait()
			return
		case <-tick.C:
		}
		for due := int(time.Since(start) * time.Duration(rate) / time.Second); i < due; i++ {
			n := i // i is one variable for every turn of this inner loop
			wg.Go(func() { f(n) })
		}
	}
}

// outcomes counts the queries of a load by kind ("sent" and one outcome each), keeps the
// round-trip times of the right answers and the first few failures.
type outcomes struct {
	mu        sync.Mutex
	start     time.Time
	n         map[string]int
	rtts      []time.Duration
	failures  []string
	perSecond []int // failed queries by the second (since start) they ended in
}

func newOutcomes() *outcomes { return &outcomes{start: time.Now(), n: map[string]int{}} }

func (o *outcomes) add(kind, detail string, rtt time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n["sent"]++
	o.n[kind]++
	if kind == "ok" || kind == "answered" {
		o.rtts = append(o.rtts, rtt)
		return
	}
	sec := int(time.Since(o.start) / time.Second)
	for len(o.perSecond) <= sec {
		o.perSecond = append(o.perSecond, 0)
	}
	o.perSecond[sec]++
	if len(o.failures) < 8 {
		o.failures = append(o.failures, time.Now().Format("15:04:05.000")+" "+detail)
	}
}

// addCluster counts a cluster-name query: ok is NOERROR with exactly wantIP, or NXDOMAIN when
// wantIP is "" (a fresh name).
func (o *outcomes) addCluster(name, wantIP string, r *dns.Msg, rtt time.Duration, err error) {
	kind, detail := clusterOutcome(name, wantIP, r, err)
	o.add(kind, detail, rtt)
}

func clusterOutcome(name, wantIP string, r *dns.Msg, err error) (kind, detail string) {
	switch {
	case err != nil:
		return "lost", fmt.Sprintf("%s: %v", name, err)
	case r.Rcode == dns.RcodeServerFailure:
		return "servfail", name + ": SERVFAIL"
	case wantIP == "" && r.Rcode == dns.RcodeNameError && len(r.Answer) == 0:
		return "ok", ""
	case wantIP != "" && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1:
		if a, ok := r.Answer[0].(*dns.A); ok && a.A.String() == wantIP {
			return "ok", ""
		}
	}
	want := "NXDOMAIN"
	if wantIP != "" {
		want = "NOERROR " + wantIP
	}
	return "wrong", fmt.Sprintf("%s: %s %v, want %s", name, dns.RcodeToString[r.Rcode], answerTexts(r), want)
}

// addPTR counts a PTR for a public address: any NOERROR or NXDOMAIN is an answer.
func (o *outcomes) addPTR(r *dns.Msg, rtt time.Duration, err error) {
	switch {
	case err != nil:
		o.add("lost", err.Error(), rtt)
	case r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError:
		o.add("answered", "", rtt)
	case r.Rcode == dns.RcodeServerFailure:
		o.add("servfail", r.Question[0].Name+": SERVFAIL", rtt)
	default:
		o.add("other", r.Question[0].Name+": "+dns.RcodeToString[r.Rcode], rtt)
	}
}

func (o *outcomes) get(kind string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[kind]
}

// rttPercentile is the p-th percentile round trip of the right answers, "-" without any.
func (o *outcomes) rttPercentile(p int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.rtts) == 0 {
		return "-"
	}
	sorted := slices.Clone(o.rtts)
	slices.Sort(sorted)
	return percentile(sorted, p).String()
}

// sampleText is the first failures and the failures per second.
func (o *outcomes) sampleText() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("  %s\n  failed per second: %v", strings.Join(o.failures, "\n  "), o.perSecond)
}
