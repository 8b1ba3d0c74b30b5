package k8sdiscovery

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/runtime"
)

// A slice joins the Service its kubernetes.io/service-name label names exactly: label values are
// case-sensitive, and kube-proxy would not join "MIXED" to "mixed".
func TestSliceLabelIsCaseSensitive(t *testing.T) {
	k, _ := startFake(t, defaultConfig(), namespace("ns1"), headlessService("ns1", "mixed"), headlessService("ns1", "exact"),
		slice("ns1", "MIXED", "mixed-1", 80, ep{ip: "10.1.0.35"}), slice("ns1", "exact", "exact-1", 80, ep{ip: "10.1.0.36"}))
	eventually(t, k, "exact.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.36")
	eventually(t, k, "mixed.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "35.0.1.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN")
}

// Endpoints are served by their ready condition alone (absent means ready), terminating or not.
func TestTerminatingEndpointsByReady(t *testing.T) {
	readyTerm := slice("ns1", "peers", "peers-1", 7000, ep{ip: "10.1.0.40", hostname: "peer-0", ready: boolPtr(true)},
		ep{ip: "10.1.0.41", hostname: "peer-1"}, ep{ip: "10.1.0.42", hostname: "peer-2", ready: boolPtr(false)})
	for i := range readyTerm.Endpoints {
		readyTerm.Endpoints[i].Conditions.Terminating = boolPtr(true)
	}
	k, _ := startFake(t, defaultConfig(), namespace("ns1"), headlessService("ns1", "peers"), readyTerm)
	eventually(t, k, "peers.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.40", "10.1.0.41")
	eventually(t, k, "peer-1.peers.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.41")
	eventually(t, k, "peer-2.peers.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
}

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
