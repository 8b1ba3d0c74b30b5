package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAPIServerRestart: with the apiserver stopped the DNS keeps answering from its index; once
// it is back (same etcd data), changes made after the restart are picked up, within about 2 s of
// the API server being ready after outages of 5, 15 and 25 s.
func TestAPIServerRestart(t *testing.T) {
	s := shared(t)
	createNamespace(t, "fault")
	createService(t, clusterIPService("fault", "before", []string{"10.96.0.50"}, port("http", 80, corev1.ProtocolTCP)))
	const before, after = "before.fault.svc.cluster.local.", "after.fault.svc.cluster.local."
	beforeOK := dnsCase{name: "service from before the outage", q: before + " A", answer: []string{a(before, "10.96.0.50")}}
	eventually(t, s, beforeOK, changeTimeout)

	stopped := time.Now()
	how := "SIGTERM"
	if harness.cp.stopAPIServer() {
		how = "SIGTERM, then SIGKILL after the grace period"
	}
	t.Logf("kube-apiserver (pid %d) stopped in %s (%s)", harness.cp.apiserverPID(), time.Since(stopped).Round(time.Millisecond), how)
	restarted := false
	t.Cleanup(func() {
		if !restarted { // leave a working control plane to the tests that follow
			if err := harness.cp.restartAPIServer(); err != nil {
				t.Errorf("restart kube-apiserver: %v", err)
			}
		}
	})

	// Keep asking for a while: client-go retries in the background meanwhile.
	during := []dnsCase{
		beforeOK,
		{name: "PTR during the outage", q: reverse("10.96.0.50") + " PTR", answer: []string{ptr(reverse("10.96.0.50"), before)}},
		{name: "NXDOMAIN during the outage", q: "nope.fault.svc.cluster.local. A", rcode: nxdomain},
		{name: "dns-version during the outage", q: "dns-version.cluster.local. TXT", answer: []string{`dns-version.cluster.local. TXT "1.1.0"`}},
	}
	queries, failures := 0, 0
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
		for _, c := range during {
			name, qtype := c.question()
			for _, network := range []string{"udp", "tcp"} {
				queries++
				r, err := s.ask(network, name, qtype)
				if err == nil {
					err = c.verify(r)
				}
				if err != nil {
					failures++
					if failures <= 5 {
						t.Errorf("during the outage, over %s: %v", network, err)
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("during the outage: %d queries, %d wrong; /ready says %d", queries, failures, s.readyStatus())

	start := time.Now()
	if err := harness.cp.restartAPIServer(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	restarted = true
	restartedAt := time.Now()
	t.Logf("kube-apiserver restarted (pid %d) and ready in %s", harness.cp.apiserverPID(), time.Since(start).Round(time.Millisecond))

	createService(t, clusterIPService("fault", "after", []string{"10.96.0.51"}, port("http", 80, corev1.ProtocolTCP)))
	deleteService(t, "fault", "before")
	took := eventually(t, s, dnsCase{name: "service created after the restart", q: after + " A", answer: []string{a(after, "10.96.0.51")}}, 30*time.Second)
	eventually(t, s, dnsCase{name: "service deleted after the restart", q: before + " A", rcode: nxdomain}, 30*time.Second)
	t.Logf("first change after the restart visible in DNS after %s", took.Round(time.Millisecond))

	// Outages of several lengths (a backoff schedule can pass one length by luck): after each, a
	// Service created as soon as the API server is ready answers within about 2 s of that moment.
	for i, outage := range []time.Duration{5 * time.Second, 15 * time.Second, 25 * time.Second} {
		harness.cp.stopAPIServer()
		restarted = false
		down := time.Now()
		time.Sleep(outage)
		if err := harness.cp.restartAPIServer(); err != nil {
			t.Fatalf("restart kube-apiserver: %v", err)
		}
		restarted = true
		ready := time.Now()
		name := fmt.Sprintf("after%d", i)
		ip := fmt.Sprintf("10.96.0.%d", 60+i)
		createService(t, clusterIPService("fault", name, []string{ip}, port("http", 80, corev1.ProtocolTCP)))
		fqdn := name + ".fault.svc.cluster.local."
		eventually(t, s, dnsCase{name: fmt.Sprintf("service created after a %s outage", outage), q: fqdn + " A", answer: []string{a(fqdn, ip)}}, 30*time.Second)
		programmed := time.Since(ready)
		logf("API server outage of %s (down %s in all): a Service created when it was ready answered %s after ready",
			outage, ready.Sub(down).Round(100*time.Millisecond), programmed.Round(time.Millisecond))
		if programmed > 2500*time.Millisecond {
			t.Errorf("after a %s outage a new Service answered %s after the API server was ready, want within about 2 s", outage, programmed.Round(time.Millisecond))
		}
	}

	// Leave a healthy control plane to the tests that follow: the controller manager also
	// reconnects with a backoff; wait until it writes the probe's endpoint again. Twice in CI
	// (2026-12-02) it had not within 45 s after the third restart, with nothing in its log: that is
	// kube-controller-manager's recovery, not the DNS's. So: if the DNS does not answer within
	// 45 s, look at the API. The probe's ready endpoint in a slice there that the DNS does not
	// answer is the DNS's failure; no such endpoint (the Service's empty slice alone does not
	// count: the controller writes it before it sees the pod) means the controller manager is
	// stuck, and it is restarted (logged) and waited for.
	sel := map[string]string{"app": "probe"}
	createService(t, headlessService("fault", "probe", sel, port("http", 80, corev1.ProtocolTCP)))
	createRunningPod(t, podSpec("fault", "probe-1", sel), true, "10.2.5.1")
	probe := dnsCase{name: "controller-manager writes slices again", q: "probe.fault.svc.cluster.local. A",
		answer: []string{a("probe.fault.svc.cluster.local.", "10.2.5.1")}}
	if err := answersWithin(s, probe, 45*time.Second); err != nil {
		list, lerr := harness.client.DiscoveryV1().EndpointSlices("fault").List(ctx(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=probe"})
		if lerr != nil {
			t.Fatalf("%v; and listing the probe's EndpointSlices: %v", err, lerr)
		}
		if desc, ok := readyEndpoint(list.Items, "10.2.5.1"); ok {
			// It may have been written just now: the DNS gets the few seconds it needs.
			if err := answersWithin(s, probe, 5*time.Second); err != nil {
				t.Fatalf("the API server has the probe's ready endpoint (%s) but the DNS does not answer it: %v\nDNS log:\n%s",
					desc, err, s.proc.LogTail(30))
			}
		} else {
			logf("kube-controller-manager wrote no ready endpoint for fault/probe in 45 s after the API server restarts (slices: %s): restarting it",
				describeSlices(list.Items))
			if err := harness.cp.RestartControllerManager(); err != nil {
				t.Fatalf("restart kube-controller-manager: %v", err)
			}
			eventually(t, s, probe, 60*time.Second)
		}
	}
	t.Logf("kube-controller-manager writing slices again, seen %s after the restart", time.Since(restartedAt).Round(time.Millisecond))
}

// TestBeforeFirstSync: pointed at an apiserver it cannot reach, the DNS answers SERVFAIL for the
// zone (and still serves other names) and /ready says 503; once the apiserver is reachable it
// syncs and answers.
func TestBeforeFirstSync(t *testing.T) {
	proxyPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(harness.dir, "kubeconfig-unreachable")
	server := fmt.Sprintf("https://127.0.0.1:%d", proxyPort)
	if err := writeKubeconfig(kubeconfig, server, filepath.Join(harness.dir, "certs", "apiserver.crt"), harness.cp.token); err != nil {
		t.Fatal(err)
	}
	s := startCoreDNS(t, "coredns-unsynced", kubeconfig)
	t.Cleanup(s.stop)

	// It listens once its startup wait for the first sync gives up (a few seconds).
	if err := s.proc.WaitFor(30*time.Second, func() error {
		_, err := s.query("udp", "dns-version.cluster.local.", dns.TypeTXT, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	expectDNS(t, s, []dnsCase{
		{name: "SERVFAIL before sync: dns-version", q: "dns-version.cluster.local. TXT", rcode: servfail},
		{name: "SERVFAIL before sync: apex SOA", q: "cluster.local. SOA", rcode: servfail},
		{name: "SERVFAIL before sync: service", q: "kubernetes.default.svc.cluster.local. A", rcode: servfail},
		{name: "SERVFAIL before sync: unknown name", q: "nope.cluster.local. A", rcode: servfail},
		{name: "names outside the zone still answer", q: "www.example.com. A", answer: []string{a("www.example.com.", "192.0.2.10")}},
	})
	if st := s.readyStatus(); st != http.StatusServiceUnavailable {
		t.Errorf("/ready before the first sync: %d, want 503", st)
	}

	// The apiserver becomes reachable at the address in the kubeconfig.
	stop := startProxy(t, proxyPort, harness.cp.apiPort)
	defer stop()
	start := time.Now()
	eventually(t, s, dnsCase{name: "synced: kubernetes service", q: "kubernetes.default.svc.cluster.local. A",
		answer: []string{a("kubernetes.default.svc.cluster.local.", "10.96.0.1")}}, 90*time.Second)
	if err := s.waitReady(10 * time.Second); err != nil {
		t.Errorf("/ready after the first sync: %v", err)
	}
	t.Logf("first sync %s after the apiserver became reachable", time.Since(start).Round(time.Millisecond))
}

// startProxy forwards TCP from 127.0.0.1:from to 127.0.0.1:to until the returned func is called.
func startProxy(t *testing.T, from, to int) func() {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", from))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", to))
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
}

// readyEndpoint finds a ready endpoint with address ip in the slices and describes its slice.
func readyEndpoint(items []discoveryv1.EndpointSlice, ip string) (string, bool) {
	for _, sl := range items {
		for _, ep := range sl.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if ready && slices.Contains(ep.Addresses, ip) {
				return sl.Name + " generation " + fmt.Sprint(sl.Generation), true
			}
		}
	}
	return "", false
}

// describeSlices is a slice per item: its name and its endpoints' addresses and readiness.
func describeSlices(items []discoveryv1.EndpointSlice) string {
	if len(items) == 0 {
		return "none"
	}
	var parts []string
	for _, sl := range items {
		var eps []string
		for _, ep := range sl.Endpoints {
			eps = append(eps, fmt.Sprintf("%v ready=%v", ep.Addresses, ep.Conditions.Ready == nil || *ep.Conditions.Ready))
		}
		parts = append(parts, fmt.Sprintf("%s [%s]", sl.Name, strings.Join(eps, ", ")))
	}
	return strings.Join(parts, "; ")
}
