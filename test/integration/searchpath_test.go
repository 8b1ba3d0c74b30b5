package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"
)

// TestSearchPathCentral: searchpath with k8sdiscovery's pod index, in one server. The client is
// a pod whose IP is 127.0.0.1, in namespace ns1; candidates go back through the whole server,
// the bare name to another server block.
func TestSearchPathCentral(t *testing.T) {
	dir := t.TempDir()
	world := `apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: Namespace
metadata: {name: com}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10]}
---
apiVersion: v1
kind: Service
metadata: {name: example, namespace: com}
spec: {clusterIP: 10.96.0.99, clusterIPs: [10.96.0.99]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ns1}
spec:
  dnsPolicy: ClusterFirst
  containers: [{name: c, image: busybox}]
status: {phase: Running, podIP: 127.0.0.1, podIPs: [{ip: 127.0.0.1}]}
`
	if err := os.WriteFile(filepath.Join(dir, "world.yaml"), []byte(world), 0o644); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("search corp.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	corefile := fmt.Sprintf(`cluster.local:0 {
    bind 127.0.0.1
    searchpath {
        source k8sdiscovery
        resolv_conf %[2]s
    }
    k8sdiscovery cluster.local {
        manifests %[1]s
    }
}
.:0 {
    bind 127.0.0.1
    template IN ANY corp.example {
        rcode NXDOMAIN
    }
    hosts {
        192.0.2.10 example.org
    }
}`, dir, resolv)
	udp, _ := startServer(t, corefile)
	// both blocks share one server: the same address and port 0 become one listener

	tests := []struct {
		qname string
		rcode int
		want  []string
	}{
		{"web.ns1.svc.cluster.local.", dns.RcodeSuccess, []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{"web.ns1.ns1.svc.cluster.local.", dns.RcodeSuccess, []string{
			"web.ns1.ns1.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.", "web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{"example.com.ns1.svc.cluster.local.", dns.RcodeSuccess, []string{
			"example.com.ns1.svc.cluster.local. 5 IN CNAME example.com.svc.cluster.local.", "example.com.svc.cluster.local. 5 IN A 10.96.0.99"}},
		{"nothing.ns1.svc.cluster.local.", dns.RcodeNameError, nil},
		{"example.org.ns1.svc.cluster.local.", dns.RcodeSuccess, []string{
			"example.org.ns1.svc.cluster.local. 3600 IN CNAME example.org.", "example.org. 3600 IN A 192.0.2.10"}},
	}
	for _, tc := range tests {
		t.Run(tc.qname, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, dns.TypeA)
			resp := exchange(t, "udp", udp, m)
			if resp.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if resp.Question[0].Name != tc.qname {
				t.Errorf("question %s, want %s", resp.Question[0].Name, tc.qname)
			}
			var got []string
			for _, rr := range resp.Answer {
				got = append(got, normalizeRR(rr))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("answer %v, want %v", got, tc.want)
			}
		})
	}
}
