package integration

import (
	"bytes"
	golog "log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	// the upstream plugins these tests put beside k8sdiscovery
	_ "github.com/coredns/coredns/plugin/autopath"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/transfer"
)

// worldWithClient copies the conformance world and adds a running pod at 127.0.0.3 in ns1: a
// client whose queries come from an address the test can bind.
func worldWithClient(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, _ := filepath.Glob("../testdata/world/*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "91-external.yaml"), []byte(`apiVersion: v1
kind: Service
metadata: {name: shop, namespace: ns1}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.70
  clusterIPs: [10.96.0.70]
  externalIPs: [192.0.2.70]
  ports: [{name: https, protocol: TCP, port: 443}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.70}]
`), 0o644)
	os.WriteFile(filepath.Join(dir, "90-client.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: ns1}
spec:
  containers: [{name: c, image: busybox}]
status:
  phase: Running
  podIP: 127.0.0.3
  podIPs: [{ip: 127.0.0.3}]
`), 0o644)
	return dir
}

// exchangeFrom asks from a given local address (a loopback address other than 127.0.0.1).
func exchangeFrom(t *testing.T, network, from, addr string, m *dns.Msg) (*dns.Msg, error) {
	t.Helper()
	var local net.Addr = &net.UDPAddr{IP: net.ParseIP(from)}
	if network == "tcp" {
		local = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c := &dns.Client{Net: network, Dialer: &net.Dialer{LocalAddr: local, Timeout: 2 * time.Second}}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// The upstream plugins that lean on kubernetes work with k8sdiscovery in a real server: transfer
// (AXFR to the allowed address, REFUSED to another), autopath @k8sdiscovery (the pod's search
// path walked on the server), and metadata read by log.
func TestUpstreamPluginsBesideK8sDiscovery(t *testing.T) {
	var logged bytes.Buffer
	golog.SetOutput(&logged)
	t.Cleanup(func() { golog.SetOutput(os.Stderr) })
	udp, tcp := startServer(t, `.:0 {
    bind 127.0.0.1
    metadata
    log . "{remote} {name} ns={/kubernetes/namespace} svc={/kubernetes/service} client={/kubernetes/client-namespace}/{/kubernetes/client-pod-name}"
    autopath @k8sdiscovery
    k8sdiscovery_external example.com
    transfer cluster.local {
        to 127.0.0.2
    }
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests `+worldWithClient(t)+`
        pods verified
    }
}`)

	axfr := new(dns.Msg)
	axfr.SetAxfr("cluster.local.")
	r, err := exchangeFrom(t, "tcp", "127.0.0.4", tcp, axfr)
	if err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR from an address transfer does not name: %v %v, want REFUSED", r, err)
	}
	tr := &dns.Transfer{}
	conn, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, mustTCPAddr(t, tcp))
	if err != nil {
		t.Fatal(err)
	}
	tr.Conn = &dns.Conn{Conn: conn}
	envs, err := tr.In(axfr, tcp)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for e := range envs {
		if e.Error != nil {
			t.Fatalf("AXFR from the allowed address: %v", e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	var zone strings.Builder
	for _, rr := range rrs {
		zone.WriteString(normalizeRR(rr) + "\n")
	}
	if len(rrs) < 10 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA ||
		!strings.Contains(zone.String(), "web.ns1.svc.cluster.local. 5 IN A 10.96.0.10") {
		t.Errorf("AXFR from the allowed address: %d records:\n%s", len(rrs), zone.String())
	}

	// autopath: the client pod (127.0.0.3, ns1) asks web2.ns2 at its first search domain; the
	// server walks the pod's search path and answers with a CNAME to web2.ns2.svc.cluster.local.
	q := new(dns.Msg)
	q.SetQuestion("web2.ns2.ns1.svc.cluster.local.", dns.TypeA)
	r, err = exchangeFrom(t, "udp", "127.0.0.3", udp, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || r.Answer[0].(*dns.CNAME).Target != "web2.ns2.svc.cluster.local." {
		t.Errorf("autopath @k8sdiscovery from the pod: %v", r.Answer)
	}
	// From an address no pod has, nothing is expanded: NXDOMAIN.
	r, err = exchangeFrom(t, "udp", "127.0.0.4", udp, q)
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("autopath from an unknown client: %v %v, want NXDOMAIN", r, err)
	}

	// k8sdiscovery_external: the Service's external IP and load-balancer ingress under example.com.
	q.SetQuestion("shop.ns1.example.com.", dns.TypeA)
	r, err = exchangeFrom(t, "udp", "127.0.0.4", udp, q)
	if err != nil || len(r.Answer) != 2 || normalizeRR(r.Answer[0]) != "shop.ns1.example.com. 5 IN A 192.0.2.70" ||
		normalizeRR(r.Answer[1]) != "shop.ns1.example.com. 5 IN A 198.51.100.70" {
		t.Errorf("k8sdiscovery_external: %v %v", r, err)
	}

	q.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
	if _, err := exchangeFrom(t, "udp", "127.0.0.3", udp, q); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logged.String(), "web.ns1.svc.cluster.local. ns=ns1 svc=web client=ns1/client-1") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logged.String(), "web.ns1.svc.cluster.local. ns=ns1 svc=web client=ns1/client-1") {
		t.Errorf("log with k8sdiscovery's metadata; logged:\n%s", logged.String())
	}
}

func mustTCPAddr(t *testing.T, s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
