package k8sdiscovery

import (
	"testing"

	"github.com/miekg/dns"
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
