package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/test/conformance"
	"github.com/miekg/dns"
)

// worldCorefile serves the conformance world from manifests, with www.example.com answered by
// the hosts plugin (reached through the server, as an ExternalName target outside the zone is).
func worldCorefile(dir string) string {
	return fmt.Sprintf(`.:0 {
    bind 127.0.0.1
    hosts {
        192.0.2.80 www.example.com
        ttl 3600
        fallthrough
    }
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests %s
        pods verified
    }
}`, dir)
}

// mixedCase alternates letter case, so that every query also tests case-insensitive matching.
func mixedCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 0 {
			b[i] = strings.ToUpper(string(b[i]))[0]
		}
	}
	return string(b)
}

func exchange(t *testing.T, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange: %v", network, err)
	}
	return resp
}

func TestConformanceOverUDPAndTCP(t *testing.T) {
	udp, tcp := startServer(t, worldCorefile(conformance.WorldDir()))
	for _, c := range conformance.Cases {
		for _, tr := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
			t.Run(tr.network+" "+c.Name, func(t *testing.T) {
				cc := conformance.WithCase(c, mixedCase(c.Qname))
				m := new(dns.Msg)
				m.SetQuestion(cc.Qname, cc.Qtype)
				if err := conformance.Check(exchange(t, tr.network, tr.addr, m), cc); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestTruncation: a headless service with 100 endpoints does not fit 512 bytes: over UDP the
// answer comes with TC set, in full over TCP and over UDP with a large EDNS0 buffer.
func TestTruncation(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n---\n")
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata: {name: many, namespace: big}\nspec: {clusterIP: None}\n---\n")
	b.WriteString("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: many-a, namespace: big, labels: {kubernetes.io/service-name: many}}\naddressType: IPv4\nendpoints:\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "- addresses: [10.2.%d.%d]\n", i/50, i%50+1)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	udp, tcp := startServer(t, worldCorefile(dir))
	q := func() *dns.Msg { m := new(dns.Msg); m.SetQuestion("many.big.svc.cluster.local.", dns.TypeA); return m }

	small := exchange(t, "udp", udp, q())
	if !small.Truncated || len(small.Answer) >= 100 {
		t.Errorf("UDP without EDNS0: TC=%v with %d answers, want TC and a partial answer", small.Truncated, len(small.Answer))
	}
	small.Compress = true // as it travelled
	if n := small.Len(); n > 512 {
		t.Errorf("UDP answer is %d bytes, over the 512 the client can take", n)
	}
	full := exchange(t, "tcp", tcp, q())
	if full.Truncated || len(full.Answer) != 100 {
		t.Errorf("TCP: TC=%v with %d answers, want all 100", full.Truncated, len(full.Answer))
	}
	edns := q()
	edns.SetEdns0(4096, false)
	big := exchange(t, "udp", udp, edns)
	if big.Truncated || len(big.Answer) != 100 {
		t.Errorf("UDP with EDNS0 4096: TC=%v with %d answers, want all 100", big.Truncated, len(big.Answer))
	}
}
