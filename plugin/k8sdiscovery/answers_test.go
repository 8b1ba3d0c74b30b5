package k8sdiscovery

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/runtime"
)

// An ExternalName to an in-zone name brings that name's records of the asked type, whatever the
// type; a chain is followed for 11 CNAMEs, as upstream follows it, and a longer one ends there.
func TestExternalNameTargets(t *testing.T) {
	objs := []runtime.Object{namespace("ns1"), clusterIPService("ns1", "web", "10.96.0.20"),
		externalService("ns1", "ext-txt", "dns-version.cluster.local"),
		externalService("ns1", "ext-srv", "web.ns1.svc.cluster.local"),
		externalService("ns1", "ext-apex", "cluster.local")}
	// chain-0 → chain-1 → … → chain-11 → web: 12 CNAMEs from chain-0, 11 from chain-1.
	for i := 0; i < 12; i++ {
		target := fmt.Sprintf("chain-%d.ns1.svc.cluster.local", i+1)
		if i == 11 {
			target = "web.ns1.svc.cluster.local"
		}
		objs = append(objs, externalService("ns1", fmt.Sprintf("chain-%d", i), target))
	}
	k, _ := startFake(t, defaultConfig(), objs...)

	eventually(t, k, "ext-txt.ns1.svc.cluster.local.", dns.TypeTXT, "NOERROR", "dns-version.cluster.local.", "1.1.0")
	if r := ask(k, "ext-srv.ns1.svc.cluster.local.", dns.TypeSRV); len(r.Answer) != 2 || r.Answer[1].Header().Rrtype != dns.TypeSRV {
		t.Errorf("ext-srv SRV: want the CNAME and web's SRV, got %v", r.Answer)
	}
	if r := ask(k, "ext-apex.ns1.svc.cluster.local.", dns.TypeSOA); len(r.Answer) != 2 || r.Answer[1].Header().Rrtype != dns.TypeSOA {
		t.Errorf("ext-apex SOA: want the CNAME and the zone's SOA, got %v", r.Answer)
	}

	r := ask(k, "chain-1.ns1.svc.cluster.local.", dns.TypeA)
	if len(r.Answer) != 12 || r.Answer[11].Header().Rrtype != dns.TypeA {
		t.Errorf("a chain of 11 CNAMEs: %d records, want 11 CNAMEs and web's A", len(r.Answer))
	}
	r = ask(k, "chain-0.ns1.svc.cluster.local.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != maxCNAMEChain {
		t.Errorf("a chain of 12 CNAMEs: %s with %d records, want NOERROR with the first %d CNAMEs", dns.RcodeToString[r.Rcode], len(r.Answer), maxCNAMEChain)
	}
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != dns.TypeCNAME {
			t.Errorf("a chain past the limit answered %s", rr)
		}
	}
}

// Reverse zones' SOA carries the zone's own names, as upstream writes them.
func TestReverseSOANames(t *testing.T) {
	k, _ := startFake(t, defaultConfig(), namespace("ns1"))
	r := ask(k, "in-addr.arpa.", dns.TypeSOA)
	if len(r.Answer) != 1 {
		t.Fatalf("in-addr.arpa. SOA: %v", r.Answer)
	}
	soa := r.Answer[0].(*dns.SOA)
	if soa.Ns != "ns.dns.in-addr.arpa." || soa.Mbox != "hostmaster.in-addr.arpa." {
		t.Errorf("in-addr.arpa. SOA names %s %s, want ns.dns.in-addr.arpa. hostmaster.in-addr.arpa.", soa.Ns, soa.Mbox)
	}
}

func TestDashedIP(t *testing.T) {
	for ip, want := range map[string]string{
		"10.1.0.5": "10-1-0-5", "fd00::7": "fd00--7", "fd00:1::": "fd00-1--0", "::1": "0--1", "2001:db8::1:2": "2001-db8--1-2",
	} {
		a := netip.MustParseAddr(ip)
		if got := dashedIP(a); got != want {
			t.Errorf("dashedIP(%s) = %s, want %s", ip, got, want)
		}
		if back, ok := parseDashedIP(want); !ok || back != a {
			t.Errorf("parseDashedIP(%s) = %v %v, want %s", want, back, ok, ip)
		}
	}
	for _, bad := range []string{"10-1-0", "web", "10-1-0-256", "1-2-3-4-5", "fd00-1-0", ""} {
		if ip, ok := parseDashedIP(bad); ok {
			t.Errorf("parseDashedIP(%q) = %v, want not an address", bad, ip)
		}
	}
}

func TestMatchZone(t *testing.T) {
	k := newK8sDiscovery(config{zones: []string{"cluster.local.", "in-addr.arpa.", "example.cluster.local."}})
	for name, want := range map[string]string{
		"web.ns1.svc.cluster.local.": "cluster.local.",
		"cluster.local.":             "cluster.local.",
		"a.example.cluster.local.":   "example.cluster.local.",
		"xcluster.local.":            "",
		"local.":                     "",
		"5.0.1.10.in-addr.arpa.":     "in-addr.arpa.",
		"in-addr.arpa.":              "in-addr.arpa.",
	} {
		if got := k.matchZone(name); got != want {
			t.Errorf("matchZone(%q) = %q, want %q", name, got, want)
		}
	}
}

// The additional section of a headless SRV answer has every address of each target, also from
// a slice without the port asked for.
func TestSRVAdditionalHasEveryTargetAddress(t *testing.T) {
	a := slice("ns1", "db", "db-a", 5432, ep{ip: "10.1.0.7", hostname: "db-0"})
	b := slice("ns1", "db", "db-b", 9999, ep{ip: "10.1.0.8", hostname: "db-0"})
	other := "metrics"
	b.Ports[0].Name = &other
	k, _ := startFake(t, defaultConfig(), namespace("ns1"), headlessService("ns1", "db"), a, b)
	m := ask(k, "_http._tcp.db.ns1.svc.cluster.local.", dns.TypeSRV)
	if len(m.Answer) != 1 {
		t.Fatalf("answer %v, want one SRV", m.Answer)
	}
	var extra []string
	for _, rr := range m.Extra {
		if a, ok := rr.(*dns.A); ok {
			extra = append(extra, a.Hdr.Name+" "+a.A.String())
		}
	}
	if want := "[db-0.db.ns1.svc.cluster.local. 10.1.0.7 db-0.db.ns1.svc.cluster.local. 10.1.0.8]"; fmt.Sprint(extra) != want {
		t.Fatalf("additional %v, want %s", extra, want)
	}
}

// noendpoints: no EndpointSlice is read, so headless Services and endpoint names have no
// records, and ClusterIP Services are answered as usual. ignore empty_service: a ClusterIP Service
// without a ready endpoint is NXDOMAIN, so a client's search walk goes on.
func TestNoEndpointsAndIgnoreEmptyService(t *testing.T) {
	objs := []runtime.Object{namespace("ns1"), clusterIPService("ns1", "web", "10.96.0.20"), clusterIPService("ns1", "idle", "10.96.0.21"),
		headlessService("ns1", "db"), slice("ns1", "web", "web-1", 80, ep{ip: "10.1.0.5"}), slice("ns1", "db", "db-1", 80, ep{ip: "10.1.0.7"})}

	cfg := defaultConfig()
	cfg.noEndpoints = true
	k, _ := startFake(t, cfg, objs...)
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.20")
	eventually(t, k, "10-1-0-5.web.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")

	cfg = defaultConfig()
	cfg.ignoreEmptyService = true
	k, _ = startFake(t, cfg, objs...)
	eventually(t, k, "web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.20")
	eventually(t, k, "idle.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")

	k, _ = startFake(t, defaultConfig(), objs...)
	eventually(t, k, "idle.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.21")
	eventually(t, k, "10-1-0-5.web.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.5")
}

// namespace_labels: only namespaces whose labels match are served (names and PTRs), and a
// namespace relabelled into the selection appears.
func TestNamespaceLabels(t *testing.T) {
	a, b := namespace("team-a"), namespace("team-b")
	a.Labels, b.Labels = map[string]string{"team": "a"}, map[string]string{"team": "b"}
	cfg := defaultConfig()
	cfg.namespaceLabels = "team=a"
	k, client := startFake(t, cfg, a, b, clusterIPService("team-a", "web", "10.96.0.20"), clusterIPService("team-b", "web", "10.96.0.21"))
	eventually(t, k, "web.team-a.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.20")
	eventually(t, k, "web.team-b.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "team-b.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "21.0.96.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN")
	eventually(t, k, "20.0.96.10.in-addr.arpa.", dns.TypePTR, "NOERROR", "web.team-a.svc.cluster.local.")

	b.Labels = map[string]string{"team": "a"}
	if _, err := client.CoreV1().Namespaces().Update(context.Background(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "web.team-b.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.21")
	eventually(t, k, "21.0.96.10.in-addr.arpa.", dns.TypePTR, "NOERROR", "web.team-b.svc.cluster.local.")
}

// zonal: <zone>.pin|prefer._zone.<svc>.<ns>.svc scopes a headless Service's answer to the
// endpoints of one topology zone (upstream's grammar, dotted zone values included).
func TestZonal(t *testing.T) {
	db := slice("ns1", "db", "db-1", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}, ep{ip: "10.1.0.8", hostname: "db-1"}, ep{ip: "10.1.0.9", hostname: "db-2"})
	for i, z := range []string{"us-west-2a", "us-west-2b", "Corp.Example.com"} {
		db.Endpoints[i].Zone = &z
	}
	objs := []runtime.Object{namespace("ns1"), headlessService("ns1", "db"), clusterIPService("ns1", "web", "10.96.0.20"), db}
	cfg := defaultConfig()
	cfg.zonal = true
	k, _ := startFake(t, cfg, objs...)
	eventually(t, k, "us-west-2a.pin._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")
	eventually(t, k, "corp.example.com.pin._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.9")
	eventually(t, k, "US-West-2B.pin._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.8")
	eventually(t, k, "eu-1.pin._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR") // NODATA
	eventually(t, k, "eu-1.prefer._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7", "10.1.0.8", "10.1.0.9")
	eventually(t, k, "us-west-2a.prefer._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")
	eventually(t, k, "us-west-2a.pin._zone.db.ns1.svc.cluster.local.", dns.TypeSRV, "NOERROR", "5432 db-0.db.ns1.svc.cluster.local.")
	eventually(t, k, "us-west-2a.pin._zone.db.ns1.svc.cluster.local.", dns.TypeTXT, "NOERROR") // NODATA for other types
	eventually(t, k, "us-west-2a.pin._zone.web.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN") // ClusterIP: no zonal names
	eventually(t, k, "us-west-2a.pin._zone.nope.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "us-west-2a.near._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN") // unknown directive
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7", "10.1.0.8", "10.1.0.9")

	k2, _ := startFake(t, defaultConfig(), objs...) // zonal off: the stock NXDOMAIN
	eventually(t, k2, "us-west-2a.pin._zone.db.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
}
