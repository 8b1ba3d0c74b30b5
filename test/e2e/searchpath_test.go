package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSearchPathAtTheNode is the node role end to end: a pod (a network namespace holding the
// pod's IP) asks the node cache for the first name of its ndots:5 walk and gets the walk's answer
// in one query; searchpath knows the pod from a watch of this node's pods on the real API server,
// and the candidates go through nodecache to the central DNS (TCP) and the node's resolver (UDP).
// It needs root (network namespaces, an interface and nftables rules in the test's namespace).
func TestSearchPathAtTheNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the client pod is a network namespace and the node cache adds an address")
	}
	ctx := context.Background()
	const podIP, listen, iface = "10.233.0.5", "169.254.99.10", "cdnssp0"
	id := fmt.Sprint(os.Getpid() % 100000)

	// API objects: the client pod on this node, and namespace com with a service example.
	mustCreateNamespace(t, "spc")
	mustCreateNamespace(t, "com")
	svc, err := harness.client.CoreV1().Services("com").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "example"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := harness.client.CoreV1().Pods("spc").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{NodeName: nodeName, DNSPolicy: corev1.DNSClusterFirst,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}}}
	if _, err := harness.client.CoreV1().Pods("spc").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The central DNS and the node's resolver, both logging what reaches them.
	centralPort, upstreamPort := mustFreePort(), mustFreePort()
	central := startLogged(t, "sp-central", fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    log
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
    }
}`, centralPort, harness.cp.kubeconfig))
	resolver := startLogged(t, "sp-resolver", fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    log
    template IN A example.com example.net {
        match "^www[.]example[.](com|net)[.]$"
        answer "{{ .Name }} 60 IN A 192.0.2.44"
        fallthrough
    }
    template IN AAAA example.com example.net {
        match "^www[.]example[.](com|net)[.]$"
        answer "{{ .Name }} 60 IN AAAA 2001:db8::44"
        fallthrough
    }
    template ANY ANY {
        rcode NXDOMAIN
        authority "{{ .Zone }} 60 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60"
    }
}`, upstreamPort))

	// The pod: a namespace with the pod's IP behind a veth; the node: this namespace.
	clientNS := "spc" + id
	mustRun(t, "ip", "netns", "add", clientNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", clientNS).Run() })
	mustRun(t, "ip", "link", "add", "spv"+id, "type", "veth", "peer", "name", "spp"+id, "netns", clientNS)
	t.Cleanup(func() { exec.Command("ip", "link", "del", "spv"+id).Run() })
	mustRun(t, "ip", "addr", "add", "10.233.0.1/24", "dev", "spv"+id)
	mustRun(t, "ip", "link", "set", "spv"+id, "up")
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", podIP + "/24", "dev", "spp" + id},
		{"ip", "link", "set", "spp" + id, "up"},
		{"ip", "route", "add", listen + "/32", "via", "10.233.0.1"},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec", clientNS}, c...)...)
	}
	// No dummy driver on this kernel: the node cache adopts a bridge of the configured name.
	mustRun(t, "ip", "link", "add", iface, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", iface).Run() })

	resolvConf := filepath.Join(harness.dir, "sp-resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("search corp.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	searchpath := fmt.Sprintf("node_name %s\n        kubeconfig %s\n        resolv_conf %s", nodeName, harness.cp.kubeconfig, resolvConf)
	node := startLogged(t, "sp-node", fmt.Sprintf(`cluster.local in-addr.arpa ip6.arpa:53 {
    searchpath cluster.local {
        %[1]s
    }
    nodecache {
        listen %[2]s
        interface %[3]s
        upstream tcp 127.0.0.1:%[4]d
    }
}
.:53 {
    searchpath {
        %[1]s
    }
    nodecache {
        listen %[2]s
        interface %[3]s
        upstream udp 127.0.0.1:%[5]d
    }
}`, searchpath, listen, iface, centralPort, upstreamPort))
	_ = node

	server := net.JoinHostPort(listen, "53")
	fromPod := func(name string, qtype uint16) (*dns.Msg, error) { return askFromNetns(clientNS, server, name, qtype) }
	fromNode := func(name string, qtype uint16) (*dns.Msg, error) { return askFromNetns("", server, name, qtype) }

	// Wait until the node cache serves and searchpath knows the pod (its watch has synced).
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := fromPod("web.spc.spc.svc.cluster.local.", dns.TypeA) // NXDOMAIN either way; the CNAME test comes below
		if err == nil && r != nil {
			if r2, err := fromPod("example.com.spc.svc.cluster.local.", dns.TypeA); err == nil && len(r2.Answer) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node cache with searchpath not answering the pod within 60s: %v\nnode log:\n%s", err, node.LogTail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("in-cluster name wins as in the pod's own walk", func(t *testing.T) {
		r, err := fromPod("example.com.spc.svc.cluster.local.", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"example.com.spc.svc.cluster.local. CNAME example.com.svc.cluster.local.",
			"example.com.svc.cluster.local. A " + svc.Spec.ClusterIP,
		}
		if got := answerTexts(r); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("answer %v, want %v", got, want)
		}
	})

	centralBefore, resolverBefore := central.count("www.example.com"), resolver.count("www.example.com")
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		name := "www.example.com.spc.svc.cluster.local."
		r, err := fromPod(name, qtype)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{name + " CNAME www.example.com.", "www.example.com. A 192.0.2.44"}
		if qtype == dns.TypeAAAA {
			want[1] = "www.example.com. AAAA 2001:db8::44"
		}
		if got := answerTexts(r); r.Rcode != dns.RcodeSuccess || fmt.Sprint(got) != fmt.Sprint(want) || r.Question[0].Name != name {
			t.Fatalf("%s: %s %v, want NOERROR %v with the question kept", dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], got, want)
		}
	}
	withCentral := central.count("www.example.com") - centralBefore
	withResolver := resolver.count("www.example.com") - resolverBefore

	// Asked again (every candidate now cached at the node): still the walk's answer, not the
	// cached NXDOMAIN of the asked name, and nothing more upstream.
	r, err := fromPod("www.example.com.spc.svc.cluster.local.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got := answerTexts(r); len(got) != 2 || !strings.Contains(got[0], "CNAME www.example.com.") {
		t.Fatalf("second ask: %s %v, want the CNAME answer again", dns.RcodeToString[r.Rcode], got)
	}
	if c := central.count("www.example.com") - centralBefore; c != withCentral {
		t.Errorf("second ask reached the central DNS (%d queries, %d before): the node cache should answer the candidates", c, withCentral)
	}

	// The same lookup walked by the client itself (an address searchpath does not know): one query per candidate.
	walk := []string{"www.example.net.spc.svc.cluster.local.", "www.example.net.svc.cluster.local.",
		"www.example.net.cluster.local.", "www.example.net.corp.test.", "www.example.net."}
	centralBefore, resolverBefore = central.count("www.example.net"), resolver.count("www.example.net")
	walkQueries := 0
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		for _, name := range walk {
			r, err := fromNode(name, qtype)
			walkQueries++
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeNameError {
				break
			}
		}
	}
	walkCentral := central.count("www.example.net") - centralBefore
	walkResolver := resolver.count("www.example.net") - resolverBefore
	logf("one external lookup (A+AAAA) from a pod with ndots:5: with searchpath the pod sends 2 queries, the central DNS sees %d, the node's resolver %d; "+
		"walking itself the pod sends %d, the central DNS sees %d, the resolver %d", withCentral, withResolver, walkQueries, walkCentral, walkResolver)
	if withCentral > walkCentral || withResolver > walkResolver {
		t.Errorf("searchpath sent more upstream (central %d, resolver %d) than the walk (central %d, resolver %d)",
			withCentral, withResolver, walkCentral, walkResolver)
	}
	if withResolver < 1 || withCentral < 1 {
		t.Errorf("the expansion did not go through the node cache's upstreams: central %d, resolver %d", withCentral, withResolver)
	}
}

func mustCreateNamespace(t *testing.T, name string) {
	t.Helper()
	_, err := harness.client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// loggedServer is a ./coredns whose log plugin lines a test counts.
type loggedServer struct{ *process }

func startLogged(t *testing.T, name, corefile string) loggedServer {
	t.Helper()
	conf := filepath.Join(harness.dir, name+".Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := startProcess(harness.dir, name, harness.coredns, "-conf", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return loggedServer{p}
}

// count is how many queries for names containing substr the server has logged, once its log
// has settled (the log line follows the answer, so a count taken at once may miss the last).
func (s loggedServer) count(substr string) int {
	n := s.countNow(substr)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		m := s.countNow(substr)
		if m == n {
			return n
		}
		n = m
	}
	return n
}

func (s loggedServer) countNow(substr string) int {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "[INFO]") && strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// askFromNetns asks over UDP from a socket made inside network namespace ns ("" for this one).
func askFromNetns(ns, server, name string, qtype uint16) (*dns.Msg, error) {
	type result struct {
		m   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // the thread is discarded afterwards: it never returns to the host namespace
		if ns != "" {
			h, err := netns.GetFromName(ns)
			if err != nil {
				done <- result{nil, err}
				return
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				done <- result{nil, err}
				return
			}
		} else {
			defer runtime.UnlockOSThread()
		}
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Net: "udp", Timeout: 3 * time.Second}).Exchange(m, server)
		done <- result{r, err}
	}()
	res := <-done
	return res.m, res.err
}

// answerTexts writes answer records as "owner TYPE data", without TTLs.
func answerTexts(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		f := strings.Fields(rr.String())
		out = append(out, f[0]+" "+strings.Join(f[3:], " "))
	}
	return out
}
