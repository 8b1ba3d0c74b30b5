package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/miekg/dns"
)

// TestCentralCorefileFreshness runs the repository's Corefile.cluster as deploy/cluster ships it
// (cache, forward and all, only the DNS port moved) on the real apiserver and asks for a pod's
// record before the pod exists, then right after it appears. On a real node (test/realnode,
// finding 6) a pod asking for its own record at start got NXDOMAIN for up to 30 s more: the
// central role's `cache 30` kept the first denial for the SOA minimum (`ttl 30`), and every
// node cache that asked that replica got it again. The central role now caches nothing of
// cluster.local (cache stands below k8sdiscovery in plugin.cfg): the record must answer as soon
// as the store has the pod, and a removed Service's name must go NXDOMAIN as soon as the store
// drops it. It also checks that k8sdiscovery's packet door answers for the shipped Corefile.
func TestCentralCorefileFreshness(t *testing.T) {
	corefile, err := os.ReadFile(filepath.Join(harness.root, "Corefile.cluster"))
	if err != nil {
		t.Fatal(err)
	}
	// Fixed ports of the file that another server of this suite might hold: health, ready,
	// metrics and pipelining go to free loopback ports; everything else stays as shipped.
	text := string(corefile)
	for _, fixed := range []struct{ from, to string }{
		{"    health {\n", fmt.Sprintf("    health 127.0.0.1:%d {\n", mustFreePort())},
		{"    ready\n", fmt.Sprintf("    ready 127.0.0.1:%d\n", mustFreePort())},
		{"    prometheus :9153\n", fmt.Sprintf("    prometheus 127.0.0.1:%d\n", mustFreePort())},
		{"    pipelining 0.0.0.0:5353\n", fmt.Sprintf("    pipelining 127.0.0.1:%d\n", mustFreePort())},
	} {
		if !strings.Contains(text, fixed.from) {
			t.Fatalf("Corefile.cluster has no %q any more: update this test", strings.TrimSpace(fixed.from))
		}
		text = strings.Replace(text, fixed.from, fixed.to, 1)
	}
	conf := filepath.Join(harness.dir, "freshness.Corefile")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	dnsPort := mustFreePort()
	t.Setenv("KUBECONFIG", harness.cp.kubeconfig) // Corefile.cluster reads {$KUBECONFIG}
	p, err := startProcess(harness.dir, "freshness", harness.coredns, "-conf", conf, "-dns.port", fmt.Sprint(dnsPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	addr := fmt.Sprintf("127.0.0.1:%d", dnsPort)

	createNamespace(t, "fresh")
	createService(t, clusterIPService("fresh", "gone", []string{"10.96.7.7"}, port("http", 80, corev1.ProtocolTCP)))
	const podIP = "10.244.77.7"
	podName := "10-244-77-7.fresh.pod.cluster.local."
	svcName := "gone.fresh.svc.cluster.local."

	// Up, synced, and the Service answered (this is also the answer a cache would keep).
	waitRcode(t, addr, svcName, dns.RcodeSuccess, 60*time.Second)
	// As shipped, k8sdiscovery's packet door answers the cluster's names (nothing above it in
	// Corefile.cluster sends them through the chain).
	if log := p.LogTail(200); !strings.Contains(log, "sockets (one per CPU)") || strings.Contains(log, "through the plugin chain") {
		t.Errorf("Corefile.cluster as shipped: k8sdiscovery's packet door should answer cluster.local; log:\n%s", log)
	}
	// The pod's record before the pod exists, a few times (as a pod asking at start does).
	for range 3 {
		if r, _, err := askUDP(addr, podName, dns.TypeA, 2*time.Second); err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s before the pod exists: %v %v, want NXDOMAIN", podName, r, err)
		}
	}
	createRunningPod(t, podSpec("fresh", "web", nil), true, podIP)
	d := waitRcode(t, addr, podName, dns.RcodeSuccess, 10*time.Second)
	t.Logf("pod record answered %v after the pod got its address (NXDOMAIN asked 3 times before)", d.Round(time.Millisecond))

	deleteService(t, "fresh", "gone")
	d = waitRcode(t, addr, svcName, dns.RcodeNameError, 10*time.Second)
	t.Logf("removed Service NXDOMAIN %v after the delete", d.Round(time.Millisecond))
}

// waitRcode asks name every 100 ms until the answer has rcode; it fails the test after limit
// (well under the 30 s a cached answer would last) and returns how long it took.
func waitRcode(t *testing.T, addr, name string, rcode int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < limit {
		r, _, err := askUDP(addr, name, dns.TypeA, time.Second)
		if err == nil && r.Rcode == rcode {
			return time.Since(start)
		}
		if err != nil {
			last = err.Error()
		} else {
			last = dns.RcodeToString[r.Rcode]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still %s after %v, want %s", name, last, limit, dns.RcodeToString[rcode])
	return 0
}

// TestDoorBesideMultisocket: with upstream's multisocket (several CoreDNS servers, each with its
// own socket, on one address) k8sdiscovery's packet door opens once and answers; every server
// routes to it as it starts.
func TestDoorBesideMultisocket(t *testing.T) {
	s := startCorefile(t, "multisocket", func(port, readyPort int) string {
		return fmt.Sprintf(".:%d {\n    bind 127.0.0.1\n    multisocket 3\n    ready 127.0.0.1:%d\n"+
			"    k8sdiscovery cluster.local {\n        kubeconfig %s\n    }\n}\n", port, readyPort, harness.cp.kubeconfig)
	})
	const name = "kubernetes.default.svc.cluster.local."
	eventually(t, s, dnsCase{name: "kubernetes Service through the door", q: name + " A", answer: []string{a(name, "10.96.0.1")}}, 30*time.Second)
	for range 50 {
		if r, _, err := askUDP(s.addr, name, dns.TypeA, 2*time.Second); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: %v %v", name, r, err)
		}
	}
	log := s.proc.LogTail(200)
	if n := strings.Count(log, "sockets (one per CPU)"); n != 1 {
		t.Errorf("doors opened: %d, want 1; log:\n%s", n, log)
	}
	if strings.Contains(log, "through the plugin chain") || strings.Contains(log, "answers alone") {
		t.Errorf("the door does not answer beside multisocket; log:\n%s", log)
	}
}
