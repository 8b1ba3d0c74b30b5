package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestResolverLibraries asks the same names with the real resolver libraries a pod runs on —
// glibc (getent ahosts), musl (a static getaddrinfo program built with musl-gcc) and Go's pure
// resolver (a CGO_ENABLED=0 program) — from a pod (a network namespace with the pod's IP and
// the resolv.conf kubelet writes for a ClusterFirst pod), once through the node role
// (searchpath + nodecache, the central role behind it over TCP) and once asking the central role
// directly (no searchpath, no node cache), and requires every library to get the same result
// both ways. It also counts the DNS packets each lookup sends (nftables counters in the pod's
// namespace), with and without searchpath.
//
// The names cover every branch of searchpath's rule: found as asked (web), found at a later
// search domain (api.rl2: CNAME for A, and NODATA for AAAA, so that query goes on unexpanded),
// a later candidate with NODATA (vault: vault.svc.cluster.local is an empty non-terminal, the
// namespace; glibc and Go walk on to vault.corp.test, musl stops there), found only at the host
// search domain (intranet), only as the bare name (www.example.com), nowhere (nothing-here), and
// an answer larger than 512 bytes (big: 40 endpoints; glibc retries over TCP, musl 1.2.3 keeps
// what fits, Go asks with EDNS0).
//
// Had searchpath answered vault's first query with a CNAME to the NODATA candidate
// vault.svc.cluster.local, glibc would take that answer (it has a record), find no address in it
// and fail the lookup, where its own walk finds vault.corp.test: the glibc row of vault then
// differs from the control and from the expected address, and the test fails.
//
// Last, slow candidates: far.example.net is found only as the bare name, behind two host search
// domains that take 2.5 s each; every library must get its address with searchpath within the
// time of its own walk (the pod annotated clusterdns.io/searchpath=off) plus the 2 s budget.
// Without the budget, the first query waits 5 s for both candidates and glibc gives up.
func TestResolverLibraries(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the client pod is a network namespace and the node cache adds an address")
	}
	start := time.Now()
	const (
		podNS, otherNS, nsName = "rl1", "rl2", "vault"
		podIP, nodeIP          = "10.234.0.5", "10.234.0.1" // the pod, and the node's end of its veth
		podIP6, nodeIP6        = "fd00:234::5", "fd00:234::1"
		listen, iface          = "169.254.98.10", "cdnsrl0"
		vaultIP, intranetIP    = "192.0.2.61", "192.0.2.62"
		wwwIP, wwwIP6          = "192.0.2.44", "2001:db8::44"
		farIP                  = "192.0.2.63"
		slowDelay              = 2500 * time.Millisecond
	)
	id := fmt.Sprint(os.Getpid() % 100000)

	// The clients first: they may need a package installed and programs built.
	clients := resolverClients(t)

	// API objects: the client pod in rl1; web (rl1) and api (rl2) ClusterIP Services; big, a
	// headless Service of rl1 with 40 ready IPv4 endpoints; and the namespace vault, so that
	// vault.svc.cluster.local exists without records (NODATA).
	createNamespace(t, podNS)
	createNamespace(t, otherNS)
	createNamespace(t, nsName)
	web := createService(t, clusterIPService(podNS, "web", nil, port("http", 80, corev1.ProtocolTCP)))
	api := createService(t, clusterIPService(otherNS, "api", nil, port("http", 80, corev1.ProtocolTCP)))
	createService(t, headlessService(podNS, "big", nil, port("http", 80, corev1.ProtocolTCP)))
	var bigIPs []string
	var eps []discoveryv1.Endpoint
	for i := 1; i <= 40; i++ {
		ip := fmt.Sprintf("10.235.1.%d", i)
		bigIPs = append(bigIPs, ip)
		eps = append(eps, ep(ip))
	}
	createSlice(t, endpointSlice(podNS, "big", "big-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePort("http", 80)}, eps...))
	client := podSpec(podNS, "client", nil)
	client.Spec.DNSPolicy = corev1.DNSClusterFirst
	createRunningPod(t, client, true, podIP)

	// The pod: a network namespace with the pod's addresses behind a veth (IPv6 too, so that every
	// library asks A and AAAA, as in a dual-stack pod); the node: this namespace.
	podNetns := "cdnsrl" + id
	veth, peer := "rlv"+id, "rlp"+id
	mustRun(t, "ip", "netns", "add", podNetns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", podNetns).Run() })
	mustRun(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", podNetns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", veth).Run() })
	mustRun(t, "ip", "addr", "add", nodeIP+"/24", "dev", veth)
	mustRun(t, "ip", "-6", "addr", "add", nodeIP6+"/64", "dev", veth, "nodad")
	mustRun(t, "ip", "link", "set", veth, "up")
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", podIP + "/24", "dev", peer},
		{"ip", "-6", "addr", "add", podIP6 + "/64", "dev", peer, "nodad"},
		{"ip", "link", "set", peer, "up"},
		{"ip", "route", "add", listen + "/32", "via", nodeIP},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec", podNetns}, c...)...)
	}
	// No dummy driver on this kernel: the node cache adopts a bridge of the configured name.
	mustRun(t, "ip", "link", "add", iface, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", iface).Run() })
	// Packet counters in the pod's namespace: every UDP datagram to port 53 and every TCP
	// connection to port 53 a lookup makes (the node cache answers cache hits before any plugin
	// runs, so a log plugin at the node would not see them all).
	counters := filepath.Join(harness.dir, "rl-counters.nft")
	if err := os.WriteFile(counters, []byte(`table inet rlcount {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 53 counter
		tcp dport 53 tcp flags & (syn | ack) == syn counter
	}
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ip", "netns", "exec", podNetns, "nft", "-f", counters)

	// ip netns exec mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf for the command.
	etcDir := filepath.Join("/etc/netns", podNetns)
	if _, err := os.Stat("/etc/netns"); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove("/etc/netns") }) // only if empty: made here, after etcDir is gone
	}
	if err := os.MkdirAll(etcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etcDir) })
	// The host's search domains: corp.test, then slow1.test and slow2.test, whose server takes
	// slowDelay to answer for far.example.net (see the slow-candidates phase at the end).
	const hostSearch = "corp.test slow1.test slow2.test"
	setNameserver := func(server string) {
		t.Helper()
		conf := fmt.Sprintf("search %s.svc.cluster.local svc.cluster.local cluster.local %s\nnameserver %s\noptions ndots:5\n", podNS, hostSearch, server)
		if err := os.WriteFile(filepath.Join(etcDir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The node's resolver: corp.test's vault and intranet (A; AAAA NODATA), www.example.com,
	// NXDOMAIN with a SOA for everything else.
	resolverPort := mustFreePort()
	resolver := startLogged(t, "rl-resolver", fmt.Sprintf(`.:%[1]d {
    bind 127.0.0.1
    log
    template IN A corp.test {
        match "^vault[.]corp[.]test[.]$"
        answer "{{ .Name }} 60 IN A %[2]s"
        fallthrough
    }
    template IN A corp.test {
        match "^intranet[.]corp[.]test[.]$"
        answer "{{ .Name }} 60 IN A %[3]s"
        fallthrough
    }
    template IN AAAA corp.test {
        match "^(vault|intranet)[.]corp[.]test[.]$"
        authority "corp.test. 60 IN SOA ns.corp.test. hostmaster.corp.test. 1 7200 1800 86400 60"
        fallthrough
    }
    template IN A example.net {
        match "^far[.]example[.]net[.]$"
        answer "{{ .Name }} 60 IN A %[6]s"
        fallthrough
    }
    template IN AAAA example.net {
        match "^far[.]example[.]net[.]$"
        authority "example.net. 60 IN SOA ns.example.net. hostmaster.example.net. 1 7200 1800 86400 60"
        fallthrough
    }
    template IN A example.com {
        match "^www[.]example[.]com[.]$"
        answer "{{ .Name }} 60 IN A %[4]s"
        fallthrough
    }
    template IN AAAA example.com {
        match "^www[.]example[.]com[.]$"
        answer "{{ .Name }} 60 IN AAAA %[5]s"
        fallthrough
    }
    template ANY ANY {
        rcode NXDOMAIN
        authority "{{ .Zone }} 60 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60"
    }
}`, resolverPort, vaultIP, intranetIP, wwwIP, wwwIP6, farIP))

	// The host domains slow1.test and slow2.test: NXDOMAIN for every name, after slowDelay for
	// far.example.net.slow{1,2}.test (a negative TTL of 0, so that no cache hides the delay).
	slowPort := startSlowZones(t, slowDelay, "far.example.net.")

	// The central role, on the node's end of the pod's veth, port 53: the node role's TCP
	// upstream, and the server the pod asks directly in the control.
	central := nodeIP + ":53"
	readyPort := mustFreePort()
	pipelined := nodeIP + ":5353"
	centralProc := startLogged(t, "rl-central", fmt.Sprintf(`.:53 {
    bind %s
    log
    errors
    ready 127.0.0.1:%d
    pipelining %s
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . 127.0.0.1:%d
}`, nodeIP, readyPort, pipelined, harness.cp.kubeconfig, resolverPort))

	// The node role: searchpath + nodecache, as Corefile.nodelocal, with log in both blocks.
	hostResolvConf := filepath.Join(harness.dir, "rl-host-resolv.conf")
	if err := os.WriteFile(hostResolvConf, []byte("search "+hostSearch+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sp := fmt.Sprintf("node_name %s\n        kubeconfig %s\n        resolv_conf %s", nodeName, harness.cp.kubeconfig, hostResolvConf)
	node := startLogged(t, "rl-node", fmt.Sprintf(`cluster.local in-addr.arpa ip6.arpa:53 {
    log
    errors
    searchpath cluster.local {
        %[1]s
    }
    nodecache {
        listen %[2]s
        interface %[3]s
        upstream pipelined %[7]s
        upstream tcp %[4]s
    }
}
.:53 {
    log
    errors
    searchpath {
        %[1]s
    }
    nodecache {
        listen %[2]s
        interface %[3]s
        upstream pipelined %[7]s
        upstream tcp %[4]s
        upstream udp 127.0.0.1:%[5]d
        health_zone cluster.local
    }
}
slow1.test slow2.test:53 {
    log
    errors
    nodecache {
        listen %[2]s
        interface %[3]s
        upstream udp 127.0.0.1:%[6]d
        timeout 3s
    }
}`, sp, listen, iface, central, resolverPort, slowPort, pipelined))

	// Wait for the central role to hold every object, then for the node role to know the pod.
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)
	if err := centralProc.WaitFor(60*time.Second, func() error {
		resp, err := httpClient.Get(readyURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/ready: %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := waitAnswers(centralProc.process, central, "web.rl1.svc.cluster.local.", web.Spec.ClusterIP, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitAnswers(centralProc.process, central, "api.rl2.svc.cluster.local.", api.Spec.ClusterIP, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitAnswers(centralProc.process, central, "www.example.com.", wwwIP, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := centralProc.WaitFor(10*time.Second, func() error {
		m := new(dns.Msg)
		m.SetQuestion("big.rl1.svc.cluster.local.", dns.TypeA)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, central)
		if err != nil {
			return err
		}
		if len(r.Answer) != len(bigIPs) {
			return fmt.Errorf("big: %d records, want %d", len(r.Answer), len(bigIPs))
		}
		r, _, err = askUDP(central, "vault.svc.cluster.local.", dns.TypeA, time.Second)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			return fmt.Errorf("vault.svc.cluster.local. A: %s with %d records, want NODATA", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := node.WaitFor(60*time.Second, func() error {
		// searchpath knows the pod once api.rl2 asked at the pod's first search domain gets the
		// CNAME to api.rl2.svc.cluster.local.
		r, err := askFromNetns(podNetns, net.JoinHostPort(listen, "53"), "api.rl2.rl1.svc.cluster.local.", dns.TypeA)
		if err != nil {
			return err
		}
		if len(r.Answer) != 2 {
			return fmt.Errorf("api.rl2.rl1.svc.cluster.local. A from the pod: %s %v", dns.RcodeToString[r.Rcode], answerTexts(r))
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nnode log:\n%s", err, node.LogTail(30))
	}
	logf("resolver libraries: servers up and synced after %s", time.Since(start).Round(time.Millisecond))

	// What the lookups should find (asserted on both paths; each path must also equal the other).
	names := []string{"web", "api.rl2", "vault", "intranet", "www.example.com", "nothing-here", "big"}
	want := map[string]func(lib string, l lookup) error{
		"web":             wantAddrs(web.Spec.ClusterIP),
		"api.rl2":         wantAddrs(api.Spec.ClusterIP),
		"intranet":        wantAddrs(intranetIP),
		"www.example.com": wantAddrs(wwwIP, wwwIP6),
		"nothing-here":    wantNotFound,
		"vault": func(lib string, l lookup) error {
			if lib == "musl" { // musl's walk ends at the NODATA of vault.svc.cluster.local
				return wantNotFound(lib, l)
			}
			return wantAddrs(vaultIP)(lib, l)
		},
		"big": func(lib string, l lookup) error {
			if lib == "musl" { // no TCP retry in musl 1.2.3: what fits in 512 bytes
				if l.fail != "" || len(l.addrs) == 0 || len(l.addrs) >= len(bigIPs) || !subset(l.addrs, bigIPs) {
					return fmt.Errorf("want some but not all of the %d endpoints (a truncated answer), got %s", len(bigIPs), l)
				}
				return nil
			}
			return wantAddrs(bigIPs...)(lib, l)
		},
	}

	type row struct {
		res        lookup
		udp, tcp   int
		stderrTail string
	}
	paths := []struct{ name, server string }{{"node role", listen}, {"control", nodeIP}}
	results := map[string]map[string]map[string]row{} // path → library → name
	for _, p := range paths {
		setNameserver(p.server)
		results[p.name] = map[string]map[string]row{}
		for _, c := range clients {
			results[p.name][c.name] = map[string]row{}
			for _, name := range names {
				u0, t0 := dnsPackets(t, podNetns)
				res, stderr := c.lookup(podNetns, name)
				u1, t1 := dnsPackets(t, podNetns)
				results[p.name][c.name][name] = row{res: res, udp: u1 - u0, tcp: t1 - t0, stderrTail: stderr}
			}
		}
	}

	// What each server sends a client for big's A over UDP, without EDNS (musl, glibc) and with
	// EDNS0 1232 (Go): the records and bytes behind the musl and Go rows of big.
	var sizes []string
	for _, p := range paths {
		for _, edns := range []uint16{0, 1232} {
			r, n, err := exchangeFromNetns(podNetns, net.JoinHostPort(p.server, "53"), "big.rl1.svc.cluster.local.", dns.TypeA, edns)
			if err != nil {
				sizes = append(sizes, fmt.Sprintf("%s, EDNS %d: %v", p.name, edns, err))
				continue
			}
			sizes = append(sizes, fmt.Sprintf("%s, EDNS %d: %s TC=%v, %d A records in %d bytes", p.name, edns, dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer), n))
		}
	}
	logf("resolver libraries: big.rl1.svc.cluster.local. A over UDP from the pod: %s", strings.Join(sizes, "; "))

	// The table, then the assertions.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "library\tname\tnode role (searchpath + nodecache)\tcontrol (central directly)\tpackets node\tpackets control\t")
	totals := map[string][2]int{}
	for _, c := range clients {
		for _, name := range names {
			n, k := results["node role"][c.name][name], results["control"][c.name][name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, name, n.res.short(), k.res.short(), packets(n.udp, n.tcp), packets(k.udp, k.tcp))
			tot := totals[c.name]
			totals[c.name] = [2]int{tot[0] + n.udp + n.tcp, tot[1] + k.udp + k.tcp}
		}
	}
	tw.Flush()
	t.Logf("resolver libraries, pod %s/%s (%s), ndots:5, search %s.svc.cluster.local svc.cluster.local cluster.local %s;\n"+
		"packets = UDP queries + TCP connections the lookup sent to port 53:\n%s", podNS, "client", podIP, podNS, hostSearch, buf.String())
	for _, c := range clients {
		logf("resolver libraries: %s sent %d packets for the %d lookups through the node role, %d asking the central role directly",
			c.name, totals[c.name][0], len(names), totals[c.name][1])
	}

	for _, c := range clients {
		for _, name := range names {
			n, k := results["node role"][c.name][name], results["control"][c.name][name]
			if err := sameResult(c.name, name, n.res, k.res, bigIPs); err != nil {
				t.Errorf("%s %s: node role and control differ: %v\nnode role: %s\ncontrol:   %s\nstderr (node role): %s\nstderr (control): %s",
					c.name, name, err, n.res, k.res, n.stderrTail, k.stderrTail)
			}
			for _, pr := range []struct {
				path string
				r    row
			}{{"node role", n}, {"control", k}} {
				if err := want[name](c.name, pr.r.res); err != nil {
					t.Errorf("%s %s through the %s: %v (stderr: %s)", c.name, name, pr.path, err, pr.r.stderrTail)
				}
			}
			// The node role never makes a lookup send more than the client's own walk of the
			// central role: searchpath answers a query of that walk or passes it on.
			if n.udp+n.tcp > k.udp+k.tcp {
				t.Errorf("%s %s: %s through the node role, more than the %s asking the central role directly",
					c.name, name, packets(n.udp, n.tcp), packets(k.udp, k.tcp))
			}
		}
		// The point of searchpath: an external name is one query per type, not the whole walk.
		if n, k := results["node role"][c.name]["www.example.com"], results["control"][c.name]["www.example.com"]; n.udp+n.tcp >= k.udp+k.tcp {
			t.Errorf("%s www.example.com: %s through the node role, not fewer than the %s of its own walk",
				c.name, packets(n.udp, n.tcp), packets(k.udp, k.tcp))
		}
	}
	if t.Failed() {
		t.Logf("node log:\n%s\ncentral log:\n%s\nresolver log:\n%s", node.LogTail(60), centralProc.LogTail(40), resolver.LogTail(30))
	}

	// Slow candidates: far.example.net is found only as the bare name, after two host search
	// domains that each take slowDelay (2.5 s) to say NXDOMAIN. Resolved one after another in the
	// client's first query, they would keep it 5 s and more, past glibc's and musl's 5 s timeout;
	// with searchpath's budget (2 s) the query goes on unexpanded and the client walks on. The
	// control is the same node role with expansion turned off by the pod's annotation
	// (clusterdns.io/searchpath: off), which also shows the annotation at work.
	setNameserver(listen)
	slowLookups := func(phase string) map[string]time.Duration {
		took := map[string]time.Duration{}
		for _, c := range clients {
			begin := time.Now()
			res, stderr := c.lookup(podNetns, "far.example.net")
			took[c.name] = time.Since(begin)
			if err := wantAddrs(farIP)(c.name, res); err != nil {
				t.Errorf("slow candidates, %s: %s far.example.net after %s: %v (stderr: %s)", phase, c.name, took[c.name].Round(time.Millisecond), err, stderr)
			}
		}
		return took
	}
	expandedTook := slowLookups("searchpath on")
	annotated, err := harness.client.CoreV1().Pods(podNS).Get(ctx(), "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	annotated.Annotations = map[string]string{"clusterdns.io/searchpath": "off"}
	if _, err := harness.client.CoreV1().Pods(podNS).Update(ctx(), annotated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := node.WaitFor(30*time.Second, func() error {
		// Not expanded any more: api.rl2 asked at the first search domain is NXDOMAIN.
		r, err := askFromNetns(podNetns, net.JoinHostPort(listen, "53"), "api.rl2.rl1.svc.cluster.local.", dns.TypeA)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeNameError {
			return fmt.Errorf("api.rl2.rl1.svc.cluster.local. A with the annotation: %s %v, want NXDOMAIN", dns.RcodeToString[r.Rcode], answerTexts(r))
		}
		return nil
	}); err != nil {
		t.Fatalf("the pod's clusterdns.io/searchpath=off annotation did not stop expansion: %v", err)
	}
	ownTook := slowLookups("annotation off, the client's own walk")
	for _, c := range clients {
		logf("resolver libraries: far.example.net behind two %s search domains, %s: %s with searchpath, %s walking itself",
			slowDelay, c.name, expandedTook[c.name].Round(time.Millisecond), ownTook[c.name].Round(time.Millisecond))
		// The budget may add its own length once (the first query waits for it); more than
		// that means the client waited on candidates it would have walked itself.
		if limit := ownTook[c.name] + 2*time.Second + time.Second; expandedTook[c.name] > limit {
			t.Errorf("%s far.example.net took %s with searchpath, over the %s of its own walk plus the 2 s budget and 1 s slack",
				c.name, expandedTook[c.name].Round(time.Millisecond), ownTook[c.name].Round(time.Millisecond))
		}
	}
	logf("resolver libraries: done in %s", time.Since(start).Round(time.Millisecond))
}

// startSlowZones serves every name with NXDOMAIN (SOA with TTL 0), after delay for names that
// start with slowPrefix, over UDP and TCP on a free loopback port, until the test ends.
func startSlowZones(t *testing.T, delay time.Duration, slowPrefix string) int {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if len(r.Question) != 1 {
			return
		}
		if strings.HasPrefix(strings.ToLower(r.Question[0].Name), slowPrefix) {
			time.Sleep(delay)
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		zone := "slow.test."
		if labels := dns.SplitDomainName(r.Question[0].Name); len(labels) >= 2 {
			zone = dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
		}
		soa, _ := dns.NewRR(zone + " 0 IN SOA ns." + zone + " hostmaster." + zone + " 1 7200 1800 86400 0")
		m.Ns = []dns.RR{soa}
		_ = w.WriteMsg(m)
	})
	port := mustFreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	udp, tcp := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: l, Handler: h}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return port
}

// lookup is what a resolver library made of a name: its addresses (sorted), or why it failed.
type lookup struct {
	addrs []string
	fail  string // "not found..." or "error..."; empty when there are addresses
}

func (l lookup) String() string {
	if l.fail != "" {
		return l.fail
	}
	return strings.Join(l.addrs, " ")
}

// short is the table's cell: the addresses, or their count when there are many.
func (l lookup) short() string {
	if l.fail == "" && len(l.addrs) > 3 {
		return fmt.Sprintf("%d addresses", len(l.addrs))
	}
	return l.String()
}

func packets(udp, tcp int) string {
	if tcp == 0 {
		return fmt.Sprintf("%d udp", udp)
	}
	return fmt.Sprintf("%d udp + %d tcp", udp, tcp)
}

func wantAddrs(addrs ...string) func(string, lookup) error {
	return func(_ string, l lookup) error {
		want := sortedCopy(addrs)
		if l.fail != "" || strings.Join(l.addrs, " ") != strings.Join(want, " ") {
			return fmt.Errorf("got %s, want %s", l.short(), lookup{addrs: want}.short())
		}
		return nil
	}
}

func wantNotFound(_ string, l lookup) error {
	if !strings.HasPrefix(l.fail, "not found") {
		return fmt.Errorf("got %s, want not found", l)
	}
	return nil
}

func subset(a, of []string) bool {
	in := map[string]bool{}
	for _, s := range of {
		in[s] = true
	}
	for _, s := range a {
		if !in[s] {
			return false
		}
	}
	return true
}

// sameResult is the comparison of one library's result through the node role and through the
// control: equal addresses, or equal failures. One exception, for musl and a truncated answer
// (big): musl keeps the records of a 512-byte answer with TC set and does not ask over TCP, and
// which whole records fit is up to each server's truncation (the node cache drops trailing answer
// records; CoreDNS's does the same, but neither promises an order of a headless Service's
// addresses). There the rule is the same number of addresses, all of them the Service's.
func sameResult(lib, name string, node, control lookup, bigIPs []string) error {
	if node.String() == control.String() {
		return nil
	}
	if lib == "musl" && name == "big" && node.fail == "" && control.fail == "" &&
		len(node.addrs) == len(control.addrs) && subset(node.addrs, bigIPs) && subset(control.addrs, bigIPs) {
		logf("resolver libraries: musl big: the same count (%d) of the truncated answer's addresses, another subset", len(node.addrs))
		return nil
	}
	if lib == "musl" && name == "big" && node.fail == "" && control.fail == "" {
		return fmt.Errorf("musl keeps %d addresses of the truncated answer through the node role, %d asking directly", len(node.addrs), len(control.addrs))
	}
	return errors.New("different results")
}

// dnsPackets reads the pod namespace's counters: UDP datagrams and TCP connections to port 53.
func dnsPackets(t *testing.T, ns string) (udp, tcp int) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "rlcount").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "packets" {
				continue
			}
			n, err := strconv.Atoi(f[i+1])
			if err != nil {
				t.Fatalf("nft counter %q: %v", line, err)
			}
			switch f[0] {
			case "udp":
				udp = n
			case "tcp":
				tcp = n
			}
		}
	}
	return udp, tcp
}

// exchangeFromNetns asks one question over UDP from a socket made inside network namespace ns,
// with EDNS0 of that size unless it is 0, and returns the answer and its size in bytes.
func exchangeFromNetns(ns, server, name string, qtype, edns uint16) (*dns.Msg, int, error) {
	type result struct {
		m   *dns.Msg
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded, it stays in ns
		h, err := netns.GetFromName(ns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			done <- result{err: err}
			return
		}
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		if edns > 0 {
			q.SetEdns0(edns, false)
		}
		wire, err := q.Pack()
		if err != nil {
			done <- result{err: err}
			return
		}
		c, err := net.Dial("udp", server)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(wire); err != nil {
			done <- result{err: err}
			return
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			done <- result{err: err}
			return
		}
		r := new(dns.Msg)
		err = r.Unpack(buf[:n])
		done <- result{r, n, err}
	}()
	res := <-done
	return res.m, res.n, res.err
}

// resolverClient runs one resolver library's lookup of a name inside a network namespace.
type resolverClient struct {
	name  string
	argv  func(name string) []string
	parse func(stdout []byte, exit int) lookup
}

func (c resolverClient) lookup(ns, name string) (lookup, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, c.argv(name)...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exit := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	case err != nil:
		return lookup{fail: "error: " + err.Error()}, stderr.String()
	}
	return c.parse(stdout.Bytes(), exit), strings.TrimSpace(stderr.String())
}

// parseProgram reads the output of the musl and Go programs: one address a line with exit 0,
// "not found: ..." with exit 2, "error: ..." otherwise.
func parseProgram(stdout []byte, exit int) lookup {
	text := strings.TrimSpace(string(stdout))
	if exit != 0 {
		if text == "" {
			text = fmt.Sprintf("error: exit %d", exit)
		}
		return lookup{fail: text}
	}
	return lookup{addrs: uniqueSorted(strings.Fields(text))}
}

// parseGetent reads `getent ahosts`: an address in the first column of each line (three lines an
// address, one a socket type); exit 2 when getaddrinfo failed.
func parseGetent(stdout []byte, exit int) lookup {
	switch exit {
	case 0:
	case 2:
		return lookup{fail: "not found (getent exit 2)"}
	default:
		return lookup{fail: fmt.Sprintf("error: getent exit %d: %s", exit, strings.TrimSpace(string(stdout)))}
	}
	var addrs []string
	for _, line := range strings.Split(string(stdout), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			addrs = append(addrs, f[0])
		}
	}
	return lookup{addrs: uniqueSorted(addrs)}
}

func uniqueSorted(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

const muslLookupC = `#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

/* getaddrinfo(NAME, AF_UNSPEC): one address a line (exit 0), "not found: ..." (exit 2) or
   "error: ..." (exit 3). */
int main(int argc, char **argv) {
	struct addrinfo hints = {0}, *res, *p;
	char buf[INET6_ADDRSTRLEN];
	int rc;
	if (argc != 2) return 1;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM; /* one entry an address */
	rc = getaddrinfo(argv[1], NULL, &hints, &res);
	if (rc == EAI_NONAME
#ifdef EAI_NODATA
	    || rc == EAI_NODATA
#endif
	) {
		printf("not found: %s\n", gai_strerror(rc));
		return 2;
	}
	if (rc != 0) {
		printf("error: %s\n", gai_strerror(rc));
		return 3;
	}
	for (p = res; p; p = p->ai_next) {
		const void *a = p->ai_family == AF_INET6
			? (const void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr
			: (const void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr;
		if (inet_ntop(p->ai_family, a, buf, sizeof buf)) printf("%s\n", buf);
	}
	freeaddrinfo(res);
	return 0;
}
`

const goLookupMain = `package main

// net.DefaultResolver.LookupIPAddr(NAME): one address a line (exit 0), "not found" (exit 2) or
// "error: ..." (exit 3). Built with CGO_ENABLED=0: Go's own resolver.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, os.Args[1])
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) {
			if de.IsNotFound {
				fmt.Println("not found")
				os.Exit(2)
			}
			fmt.Printf("error: %s (timeout %v, temporary %v)\n", de.Err, de.IsTimeout, de.IsTemporary)
			os.Exit(3)
		}
		fmt.Println("error:", err)
		os.Exit(3)
	}
	for _, a := range addrs {
		fmt.Println(a.IP.String())
	}
}
`

// resolverClients builds the musl and Go programs (installing musl-tools when it is missing) and
// returns the libraries to compare; musl is left out, with a skipped subtest saying why, only
// when musl-gcc cannot be had.
func resolverClients(t *testing.T) []resolverClient {
	t.Helper()
	dir := t.TempDir()
	var clients []resolverClient
	if _, err := exec.LookPath("getent"); err != nil {
		t.Fatalf("getent (Debian's libc-bin) not found: %v", err)
	}
	clients = append(clients, resolverClient{name: "glibc", parse: parseGetent,
		argv: func(name string) []string { return []string{"getent", "ahosts", name} }})

	if err := ensureMuslGCC(); err != nil {
		t.Run("musl", func(t *testing.T) {
			t.Skipf("musl left out: musl-gcc (Debian musl-tools) cannot be installed: %v", err)
		})
	} else {
		src, bin := filepath.Join(dir, "lookup.c"), filepath.Join(dir, "lookup-musl")
		if err := os.WriteFile(src, []byte(muslLookupC), 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "musl-gcc", "-static", "-O1", "-o", bin, src)
		clients = append(clients, resolverClient{name: "musl", parse: parseProgram,
			argv: func(name string) []string { return []string{bin, name} }})
	}

	goDir, goBin := filepath.Join(dir, "golookup"), filepath.Join(dir, "lookup-go")
	if err := os.MkdirAll(goDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goDir, "go.mod"), []byte("module golookup\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goDir, "main.go"), []byte(goLookupMain), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-o", goBin, ".")
	build.Dir = goDir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the Go lookup program: %v\n%s", err, out)
	}
	clients = append(clients, resolverClient{name: "Go", parse: parseProgram,
		argv: func(name string) []string { return []string{goBin, name} }})
	return clients
}

// ensureMuslGCC installs Debian's musl-tools when musl-gcc is missing and we are root.
func ensureMuslGCC() error {
	if _, err := exec.LookPath("musl-gcc"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("musl-gcc missing and not root")
	}
	logf("resolver libraries: installing musl-tools")
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "musl-tools")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get update: %v\n%s", err, out)
		}
		if out, err := install(); err != nil {
			return fmt.Errorf("apt-get install musl-tools: %v\n%s", err, out)
		}
	}
	_, err := exec.LookPath("musl-gcc")
	return err
}
