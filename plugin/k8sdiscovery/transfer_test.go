package k8sdiscovery

import (
	"errors"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

var _ transfer.Transferer = (*K8sDiscovery)(nil)

// A zone transfer holds every name the zone answers (but pods), between two SOAs; an IXFR at the
// current serial is the SOA alone; reverse zones and zones not ours are refused.
func TestTransfer(t *testing.T) {
	cfg := defaultConfig()
	cfg.podMode = podsVerified
	web := clusterIPService("ns1", "web", "10.96.0.20")
	db := headlessService("ns1", "db")
	k, _ := startFake(t, cfg, namespace("ns1"), namespace("kube-system"), web, db, clusterIPService("kube-system", "kube-dns", "10.96.0.10"),
		externalService("ns1", "ext", "www.example.com"),
		slice("ns1", "web", "web-1", 8080, ep{ip: "10.1.0.5"}),
		slice("ns1", "db", "db-1", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}, ep{ip: "10.1.0.8", ready: boolPtr(false)}),
		pod("ns1", "p", "10.1.0.50", corev1.PodRunning))
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")

	ch, err := k.Transfer("cluster.local.", 0)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for batch := range ch {
		rrs = append(rrs, batch...)
	}
	if len(rrs) < 2 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("want SOA first and last, got %v", rrs)
	}
	var text []string
	for _, rr := range rrs[1 : len(rrs)-1] {
		text = append(text, strings.Join(strings.Fields(rr.String()), " "))
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{
		"cluster.local. 5 IN NS ns.dns.cluster.local.",
		"ns.dns.cluster.local. 5 IN A 10.96.0.10",
		`dns-version.cluster.local. 28800 IN TXT "1.1.0"`,
		"web.ns1.svc.cluster.local. 5 IN A 10.96.0.20",
		"_http._tcp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 80 web.ns1.svc.cluster.local.",
		"10-1-0-5.web.ns1.svc.cluster.local. 5 IN A 10.1.0.5",
		"db.ns1.svc.cluster.local. 5 IN A 10.1.0.7",
		"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.7",
		"_http._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.ns1.svc.cluster.local.",
		"ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com.",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("transfer lacks %q; it holds:\n%s", want, all)
		}
	}
	for _, not := range []string{"10.1.0.8", "10-1-0-50", "pod.cluster.local"} {
		if strings.Contains(all, not) {
			t.Errorf("transfer holds %q (a not-ready endpoint or a pod record)", not)
		}
	}
	// Every record of the transfer is what a query for it answers.
	for _, rr := range rrs[1 : len(rrs)-1] {
		h := rr.Header()
		got := ask(k, h.Name, h.Rrtype)
		found := false
		for _, a := range got.Answer {
			if dns.IsDuplicate(a, rr) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is in the transfer but a query for %s %s answers %v", rr, h.Name, dns.TypeToString[h.Rrtype], got.Answer)
		}
	}

	serial := rrs[0].(*dns.SOA).Serial
	ch, _ = k.Transfer("cluster.local.", serial)
	var n int
	for batch := range ch {
		n += len(batch)
	}
	if n != 1 {
		t.Errorf("IXFR at the current serial: %d records, want the SOA alone", n)
	}
	for _, z := range []string{"in-addr.arpa.", "example.org."} {
		if _, err := k.Transfer(z, 0); !errors.Is(err, transfer.ErrNotAuthoritative) {
			t.Errorf("Transfer(%s): %v, want ErrNotAuthoritative", z, err)
		}
	}
}
