package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// The records fixture: one world of objects that every row of CONFORMANCE.md "Records" and
// "Response codes" is asked against. Cluster IPs are fixed in the range's static band
// (10.96.0.0/24), which the apiserver never hands out on its own.
//
//	kube-system/kube-dns  ClusterIP 10.96.0.10 (the DNS Service: ns.dns.cluster.local)
//	ns1/web               ClusterIP 10.96.0.20, ports http 80/TCP and dns 53/UDP;
//	                      slice: 10.1.0.5 ready, 10.1.0.6 not ready
//	ns1/single            ClusterIP 10.96.0.21, one unnamed port 8080
//	ns1/proto             ClusterIP 10.96.0.22, ports x-tcp 1000/TCP, x-udp 1000/UDP, x-sctp 2000/SCTP
//	ns1/dual              dual-stack 10.96.0.30 + fd00:10:96::30; slice: fd00:10:2::5 ready
//	ns1/db                headless, three slices (pg on 5432, 5433, 5432):
//	                      IPv4 a: 10.1.0.7, db-0 10.1.0.8, db-1 10.1.0.9 (not ready),
//	                              db-2 10.1.0.11 (terminating)
//	                      IPv4 b: 10.1.0.7 again, db-3 10.1.0.12, db-4 10.1.0.13 (ready unset)
//	                              (db-3 and db-4 in topology zone zone-b),
//	                              db-0 10.1.0.14 (a second address for db-0),
//	                              db-5 10.1.0.15 (terminating, not ready)
//	                      IPv6:   fd00:10:1::7, fd00:10:1::, db-0 fd00:10:1::8
//	ns1/empty             headless, only a not-ready endpoint 10.1.0.30
//	ns1/ext               ExternalName www.example.com (answered by the test upstream)
//	ns1/ext-int           ExternalName web.ns1.svc.cluster.local
//	ns1/ext-ip            ExternalName 192.0.2.1 (an IP literal: not published)
//	ns1/peers             headless (publishNotReadyAddresses): peer-0 10.1.0.40 terminating and
//	                      ready (as the controller keeps it), peer-1 10.1.0.41 terminating, ready unset
//	ns1/mixed             headless; its only slice is labelled kubernetes.io/service-name: MIXED
//	ns1/ext-txt           ExternalName dns-version.cluster.local (an in-zone name with a TXT)
//	ns1/loop-a, loop-b    ExternalNames pointing at each other
//	ns1/chain-0..11       ExternalName chain-i → chain-(i+1), chain-11 → web (13 hops in all)
//	ns2/api               headless, slice: api-0 10.1.0.5 (the same IP as web's endpoint)
//	ns1 pod plain         running, 10.1.0.60 + fd00:10:1::60
//	default pod finished  phase Succeeded, 10.1.0.51
//	default/default-subdomain  headless, selector app=busybox, port foo 1234: slices by the
//	                      controller from pod busybox-1 (hostname busybox-1, subdomain
//	                      default-subdomain, 10.1.0.50 + fd00:10:1::50)
var fixtureOnce sync.Once

func recordsFixture(t *testing.T) *dnsServer {
	t.Helper()
	s := shared(t)
	fixtureOnce.Do(func() {
		start := time.Now()
		tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
		ipv4, ipv6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
		createNamespace(t, "ns1")
		createNamespace(t, "ns2")

		createService(t, clusterIPService("kube-system", "kube-dns", []string{"10.96.0.10"}, port("dns", 53, udp), port("dns-tcp", 53, tcp)))

		createService(t, clusterIPService("ns1", "web", []string{"10.96.0.20"}, port("http", 80, tcp), port("dns", 53, udp)))
		dnsPort := slicePort("dns", 5353)
		dnsPort.Protocol = &udp
		createSlice(t, endpointSlice("ns1", "web", "web-1", ipv4, []discoveryv1.EndpointPort{slicePort("http", 8080), dnsPort},
			ep("10.1.0.5"), ep("10.1.0.6", notReady)))

		createService(t, clusterIPService("ns1", "single", []string{"10.96.0.21"}, port("", 8080, tcp)))
		createService(t, clusterIPService("ns1", "proto", []string{"10.96.0.22"},
			port("x-tcp", 1000, tcp), port("x-udp", 1000, udp), port("x-sctp", 2000, corev1.ProtocolSCTP)))

		createService(t, clusterIPService("ns1", "dual", []string{"10.96.0.30", "fd00:10:96::30"}, port("http", 80, tcp)))
		createSlice(t, endpointSlice("ns1", "dual", "dual-v6", ipv6, []discoveryv1.EndpointPort{slicePort("http", 80)}, ep("fd00:10:2::5")))

		createService(t, headlessService("ns1", "db", nil, port("pg", 5432, tcp)))
		createSlice(t, endpointSlice("ns1", "db", "db-a", ipv4, []discoveryv1.EndpointPort{slicePort("pg", 5432)},
			ep("10.1.0.7"), ep("10.1.0.8", hostname("db-0")), ep("10.1.0.9", hostname("db-1"), notReady),
			ep("10.1.0.11", hostname("db-2"), terminating)))
		createSlice(t, endpointSlice("ns1", "db", "db-b", ipv4, []discoveryv1.EndpointPort{slicePort("pg", 5433)},
			ep("10.1.0.7"), ep("10.1.0.12", hostname("db-3"), inZone("zone-b")), ep("10.1.0.13", hostname("db-4"), readyUnset, inZone("zone-b")),
			ep("10.1.0.14", hostname("db-0")), ep("10.1.0.15", hostname("db-5"), terminating)))
		createSlice(t, endpointSlice("ns1", "db", "db-v6", ipv6, []discoveryv1.EndpointPort{slicePort("pg", 5432)},
			ep("fd00:10:1::7"), ep("fd00:10:1::"), ep("fd00:10:1::8", hostname("db-0"))))

		createService(t, headlessService("ns1", "empty", nil, port("pg", 5432, tcp)))
		createSlice(t, endpointSlice("ns1", "empty", "empty-1", ipv4, []discoveryv1.EndpointPort{slicePort("pg", 5432)}, ep("10.1.0.30", notReady)))

		createService(t, externalNameService("ns1", "ext", "www.example.com"))
		createService(t, externalNameService("ns1", "ext-int", "web.ns1.svc.cluster.local"))
		createService(t, externalNameService("ns1", "ext-ip", "192.0.2.1"))
		peers := headlessService("ns1", "peers", nil, port("peer", 7000, tcp))
		peers.Spec.PublishNotReadyAddresses = true
		createService(t, peers)
		createSlice(t, endpointSlice("ns1", "peers", "peers-1", ipv4, []discoveryv1.EndpointPort{slicePort("peer", 7000)},
			ep("10.1.0.40", hostname("peer-0"), readyTerminating), ep("10.1.0.41", hostname("peer-1"), terminatingOnly)))
		createService(t, headlessService("ns1", "mixed", nil, port("http", 80, tcp)))
		createSlice(t, endpointSlice("ns1", "MIXED", "mixed-1", ipv4, []discoveryv1.EndpointPort{slicePort("http", 80)}, ep("10.1.0.35")))
		createService(t, externalNameService("ns1", "ext-txt", "dns-version.cluster.local"))
		createService(t, externalNameService("ns1", "loop-a", "loop-b.ns1.svc.cluster.local"))
		createService(t, externalNameService("ns1", "loop-b", "loop-a.ns1.svc.cluster.local"))
		for i := 0; i < 12; i++ {
			target := fmt.Sprintf("chain-%d.ns1.svc.cluster.local", i+1)
			if i == 11 {
				target = "web.ns1.svc.cluster.local"
			}
			createService(t, externalNameService("ns1", fmt.Sprintf("chain-%d", i), target))
		}

		createService(t, headlessService("ns2", "api", nil, port("http", 80, tcp)))
		createSlice(t, endpointSlice("ns2", "api", "api-1", ipv4, []discoveryv1.EndpointPort{slicePort("http", 80)}, ep("10.1.0.5", hostname("api-0"))))

		finished := createRunningPod(t, podSpec("default", "finished", nil), false, "10.1.0.51")
		setPodStatus(t, finished, corev1.PodSucceeded, false)
		createRunningPod(t, podSpec("ns1", "plain", nil), true, "10.1.0.60", "fd00:10:1::60")

		createService(t, headlessService("default", "default-subdomain", map[string]string{"app": "busybox"}, port("foo", 1234, tcp)))
		busybox := podSpec("default", "busybox-1", map[string]string{"app": "busybox"})
		busybox.Spec.Hostname, busybox.Spec.Subdomain = "busybox-1", "default-subdomain"
		createRunningPod(t, busybox, true, "10.1.0.50", "fd00:10:1::50")

		// The last object of each kind shows up: then the whole world is in the index.
		for _, c := range []dnsCase{
			{name: "fixture: slices of the busybox pod made by the controller", q: "busybox-1.default-subdomain.default.svc.cluster.local. AAAA",
				answer: []string{aaaa("busybox-1.default-subdomain.default.svc.cluster.local.", "fd00:10:1::50")}},
			{name: "fixture: last pod (after the finished one)", q: "10-1-0-50.default.pod.cluster.local. A",
				answer: []string{a("10-1-0-50.default.pod.cluster.local.", "10.1.0.50")}},
			{name: "fixture: last ExternalName", q: "chain-11.ns1.svc.cluster.local. CNAME",
				answer: []string{cname("chain-11.ns1.svc.cluster.local.", "web.ns1.svc.cluster.local.")}},
		} {
			eventually(t, s, c, 30*time.Second)
		}
		t.Logf("records fixture created and visible in %s", time.Since(start).Round(time.Millisecond))
	})
	return s
}

const (
	web    = "web.ns1.svc.cluster.local."
	single = "single.ns1.svc.cluster.local."
	dual   = "dual.ns1.svc.cluster.local."
	db     = "db.ns1.svc.cluster.local."
	bb     = "busybox-1.default-subdomain.default.svc.cluster.local."
)

func reverse(ip string) string {
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return r
}

// TestRecords: every row of CONFORMANCE.md "Records".
func TestRecords(t *testing.T) {
	s := recordsFixture(t)
	pgSRV := "_pg._tcp." + db
	expectDNS(t, s, []dnsCase{
		{name: "dns-version TXT", q: "dns-version.cluster.local. TXT",
			answer: []string{`dns-version.cluster.local. TXT "1.1.0"`}},
		{name: "apex SOA", q: "cluster.local. SOA", answer: []string{soaRR("cluster.local.")}},
		{name: "apex NS with the DNS Service address", q: "cluster.local. NS",
			answer: []string{"cluster.local. NS ns.dns.cluster.local."},
			extra:  []string{a("ns.dns.cluster.local.", "10.96.0.10")}},
		{name: "ns.dns A is the DNS Service", q: "ns.dns.cluster.local. A", answer: []string{a("ns.dns.cluster.local.", "10.96.0.10")}},

		{name: "ClusterIP A", q: web + " A", answer: []string{a(web, "10.96.0.20")}},
		{name: "ClusterIP A, query case kept in the answer", q: "WeB.Ns1.SVC.Cluster.Local. A",
			answer: []string{a("WeB.Ns1.SVC.Cluster.Local.", "10.96.0.20")}},
		{name: "dual-stack A", q: dual + " A", answer: []string{a(dual, "10.96.0.30")}},
		{name: "dual-stack AAAA", q: dual + " AAAA", answer: []string{aaaa(dual, "fd00:10:96::30")}},

		{name: "named port SRV with target A in additional", q: "_http._tcp." + web + " SRV",
			answer: []string{srv("_http._tcp."+web, 100, 80, web)}, extra: []string{a(web, "10.96.0.20")}},
		{name: "named UDP port SRV", q: "_dns._udp." + web + " SRV",
			answer: []string{srv("_dns._udp."+web, 100, 53, web)}, extra: []string{a(web, "10.96.0.20")}},
		{name: "bare SRV: one per service port", q: web + " SRV",
			answer: []string{srv(web, 50, 80, web), srv(web, 50, 53, web)}, extra: []string{a(web, "10.96.0.20")}},
		{name: "bare SRV: unnamed port included", q: single + " SRV",
			answer: []string{srv(single, 100, 8080, single)}, extra: []string{a(single, "10.96.0.21")}},

		{name: "SRV of an SCTP port", q: "_x-sctp._sctp.proto.ns1.svc.cluster.local. SRV",
			answer: []string{srv("_x-sctp._sctp.proto.ns1.svc.cluster.local.", 100, 2000, "proto.ns1.svc.cluster.local.")},
			extra:  []string{a("proto.ns1.svc.cluster.local.", "10.96.0.22")}},
		{name: "SRV of the UDP one of two ports with one number", q: "_x-udp._udp.proto.ns1.svc.cluster.local. SRV",
			answer: []string{srv("_x-udp._udp.proto.ns1.svc.cluster.local.", 100, 1000, "proto.ns1.svc.cluster.local.")},
			extra:  []string{a("proto.ns1.svc.cluster.local.", "10.96.0.22")}},
		{name: "bare SRV: a port number on two protocols is one record", q: "proto.ns1.svc.cluster.local. SRV",
			answer: []string{srv("proto.ns1.svc.cluster.local.", 50, 1000, "proto.ns1.svc.cluster.local."),
				srv("proto.ns1.svc.cluster.local.", 50, 2000, "proto.ns1.svc.cluster.local.")},
			extra: []string{a("proto.ns1.svc.cluster.local.", "10.96.0.22")}},
		{name: "named port SRV, query case kept in the answer", q: "_HTTP._Tcp.WEB.ns1.svc.cluster.local. SRV",
			answer: []string{srv("_HTTP._Tcp.WEB.ns1.svc.cluster.local.", 100, 80, web)}, extra: []string{a(web, "10.96.0.20")}},

		{name: "ready endpoint of a ClusterIP service", q: "10-1-0-5." + web + " A", answer: []string{a("10-1-0-5."+web, "10.1.0.5")}},
		{name: "IPv6 endpoint of a ClusterIP service", q: "fd00-10-2--5." + dual + " AAAA",
			answer: []string{aaaa("fd00-10-2--5."+dual, "fd00:10:2::5")}},

		{name: "headless A: ready IPs deduplicated across slices", q: db + " A",
			answer: []string{a(db, "10.1.0.7"), a(db, "10.1.0.8"), a(db, "10.1.0.12"), a(db, "10.1.0.13"), a(db, "10.1.0.14")}},
		{name: "headless AAAA", q: db + " AAAA",
			answer: []string{aaaa(db, "fd00:10:1::7"), aaaa(db, "fd00:10:1::"), aaaa(db, "fd00:10:1::8")}},
		{name: "endpoint by hostname: one A per IP", q: "db-0." + db + " A",
			answer: []string{a("db-0."+db, "10.1.0.8"), a("db-0."+db, "10.1.0.14")}},
		{name: "endpoint by hostname AAAA", q: "db-0." + db + " AAAA", answer: []string{aaaa("db-0."+db, "fd00:10:1::8")}},
		{name: "endpoint with ready condition unset counts as ready", q: "db-4." + db + " A", answer: []string{a("db-4."+db, "10.1.0.13")}},
		{name: "endpoint without hostname by dashed IP", q: "10-1-0-7." + db + " A", answer: []string{a("10-1-0-7."+db, "10.1.0.7")}},
		{name: "IPv6 endpoint by dashed IP", q: "fd00-10-1--7." + db + " AAAA", answer: []string{aaaa("fd00-10-1--7."+db, "fd00:10:1::7")}},
		{name: "IPv6 dashed IP with trailing dash gets 0", q: "fd00-10-1--0." + db + " AAAA", answer: []string{aaaa("fd00-10-1--0."+db, "fd00:10:1::")}},

		{name: "headless named port SRV: ready endpoint x port, ports from the slices", q: pgSRV + " SRV",
			answer: []string{
				srv(pgSRV, 12, 5432, "10-1-0-7."+db), srv(pgSRV, 12, 5433, "10-1-0-7."+db),
				srv(pgSRV, 12, 5432, "db-0."+db), srv(pgSRV, 12, 5433, "db-0."+db),
				srv(pgSRV, 12, 5433, "db-3."+db), srv(pgSRV, 12, 5433, "db-4."+db),
				srv(pgSRV, 12, 5432, "fd00-10-1--7."+db), srv(pgSRV, 12, 5432, "fd00-10-1--0."+db),
			},
			extra: []string{
				a("10-1-0-7."+db, "10.1.0.7"), a("db-0."+db, "10.1.0.8"), a("db-0."+db, "10.1.0.14"), aaaa("db-0."+db, "fd00:10:1::8"),
				a("db-3."+db, "10.1.0.12"), a("db-4."+db, "10.1.0.13"),
				aaaa("fd00-10-1--7."+db, "fd00:10:1::7"), aaaa("fd00-10-1--0."+db, "fd00:10:1::"),
			}},

		{name: "bare SRV of a headless service: one per ready endpoint x port", q: db + " SRV",
			answer: []string{
				srv(db, 12, 5432, "10-1-0-7."+db), srv(db, 12, 5433, "10-1-0-7."+db),
				srv(db, 12, 5432, "db-0."+db), srv(db, 12, 5433, "db-0."+db),
				srv(db, 12, 5433, "db-3."+db), srv(db, 12, 5433, "db-4."+db),
				srv(db, 12, 5432, "fd00-10-1--7."+db), srv(db, 12, 5432, "fd00-10-1--0."+db),
			}},
		{name: "endpoint by hostname, query case kept", q: "DB-0.Db.ns1.svc.cluster.local. A",
			answer: []string{a("DB-0.Db.ns1.svc.cluster.local.", "10.1.0.8"), a("DB-0.Db.ns1.svc.cluster.local.", "10.1.0.14")}},

		{name: "ExternalName out of the zone: CNAME and the target's A", q: "ext.ns1.svc.cluster.local. A",
			answer: []string{cname("ext.ns1.svc.cluster.local.", "www.example.com."), a("www.example.com.", "192.0.2.10")}},
		{name: "ExternalName out of the zone: CNAME and the target's AAAA", q: "ext.ns1.svc.cluster.local. AAAA",
			answer: []string{cname("ext.ns1.svc.cluster.local.", "www.example.com."), aaaa("www.example.com.", "2001:db8::10")}},
		{name: "ExternalName CNAME query", q: "ext.ns1.svc.cluster.local. CNAME",
			answer: []string{cname("ext.ns1.svc.cluster.local.", "www.example.com.")}},
		{name: "ExternalName in the cluster: CNAME and the in-cluster A", q: "ext-int.ns1.svc.cluster.local. A",
			answer: []string{cname("ext-int.ns1.svc.cluster.local.", web), a(web, "10.96.0.20")}},
		{name: "ExternalName chain of 9 CNAMEs resolves", q: "chain-3.ns1.svc.cluster.local. A",
			answer: append(chainCNAMEs(3, 11), a(web, "10.96.0.20"))},
		{name: "zonal: the endpoints of one topology zone", q: "zone-b.pin._zone.db.ns1.svc.cluster.local. A",
			answer: []string{a("zone-b.pin._zone.db.ns1.svc.cluster.local.", "10.1.0.12"), a("zone-b.pin._zone.db.ns1.svc.cluster.local.", "10.1.0.13")}},
		{name: "zonal prefer: a zone without endpoints gives every endpoint", q: "zone-x.prefer._zone.db.ns1.svc.cluster.local. A",
			answer: []string{a("zone-x.prefer._zone.db.ns1.svc.cluster.local.", "10.1.0.7"), a("zone-x.prefer._zone.db.ns1.svc.cluster.local.", "10.1.0.8"),
				a("zone-x.prefer._zone.db.ns1.svc.cluster.local.", "10.1.0.12"), a("zone-x.prefer._zone.db.ns1.svc.cluster.local.", "10.1.0.13"),
				a("zone-x.prefer._zone.db.ns1.svc.cluster.local.", "10.1.0.14")}},
		{name: "ExternalName chain of 11 CNAMEs (upstream's limit) resolves", q: "chain-1.ns1.svc.cluster.local. A",
			answer: append(chainCNAMEs(1, 11), a(web, "10.96.0.20"))},
		{name: "ExternalName to an in-zone name with a TXT: the CNAME and the TXT", q: "ext-txt.ns1.svc.cluster.local. TXT",
			answer: []string{cname("ext-txt.ns1.svc.cluster.local.", "dns-version.cluster.local."), `dns-version.cluster.local. TXT "1.1.0"`}},
		{name: "terminating endpoints that are ready (publishNotReadyAddresses) are served", q: "peers.ns1.svc.cluster.local. A",
			answer: []string{a("peers.ns1.svc.cluster.local.", "10.1.0.40"), a("peers.ns1.svc.cluster.local.", "10.1.0.41")}},
		{name: "terminating endpoint with ready unset is served by hostname", q: "peer-1.peers.ns1.svc.cluster.local. A",
			answer: []string{a("peer-1.peers.ns1.svc.cluster.local.", "10.1.0.41")}},
		{name: "ExternalName loop ends", q: "loop-a.ns1.svc.cluster.local. A", skipAnswer: true,
			check: cnameChainEnds("loop-a.ns1.svc.cluster.local.", "loop-b.ns1.svc.cluster.local.")},
		{name: "ExternalName chain longer than 10 hops ends", q: "chain-0.ns1.svc.cluster.local. A", skipAnswer: true,
			check: cnameChainEnds("chain-0.ns1.svc.cluster.local.", "chain-1.ns1.svc.cluster.local.")},

		{name: "pod A (verified: live pod in the namespace)", q: "10-1-0-60.ns1.pod.cluster.local. A",
			answer: []string{a("10-1-0-60.ns1.pod.cluster.local.", "10.1.0.60")}},
		{name: "pod AAAA (verified)", q: "fd00-10-1--60.ns1.pod.cluster.local. AAAA",
			answer: []string{aaaa("fd00-10-1--60.ns1.pod.cluster.local.", "fd00:10:1::60")}},
		{name: "pod A of a pod made ready for the controller", q: "10-1-0-50.default.pod.cluster.local. A",
			answer: []string{a("10-1-0-50.default.pod.cluster.local.", "10.1.0.50")}},

		{name: "pod hostname.subdomain A", q: bb + " A", answer: []string{a(bb, "10.1.0.50")}},
		{name: "pod hostname.subdomain AAAA", q: bb + " AAAA", answer: []string{aaaa(bb, "fd00:10:1::50")}},
		{name: "headless service of the pod subdomain", q: "default-subdomain.default.svc.cluster.local. A",
			answer: []string{a("default-subdomain.default.svc.cluster.local.", "10.1.0.50")}},
		{name: "SRV of the pod subdomain service", q: "_foo._tcp.default-subdomain.default.svc.cluster.local. SRV",
			answer: []string{srv("_foo._tcp.default-subdomain.default.svc.cluster.local.", 100, 1234, bb)},
			extra:  []string{a(bb, "10.1.0.50"), aaaa(bb, "fd00:10:1::50")}},

		{name: "PTR of a ClusterIP", q: reverse("10.96.0.20") + " PTR", answer: []string{ptr(reverse("10.96.0.20"), web)}},
		{name: "PTR of the DNS Service ClusterIP", q: reverse("10.96.0.10") + " PTR",
			answer: []string{ptr(reverse("10.96.0.10"), "kube-dns.kube-system.svc.cluster.local.")}},
		{name: "PTR of an endpoint in two services: every name", q: reverse("10.1.0.5") + " PTR",
			answer: []string{ptr(reverse("10.1.0.5"), "10-1-0-5."+web), ptr(reverse("10.1.0.5"), "api-0.api.ns2.svc.cluster.local.")}},
		{name: "PTR of an endpoint with hostname", q: reverse("10.1.0.8") + " PTR", answer: []string{ptr(reverse("10.1.0.8"), "db-0."+db)}},
		{name: "PTR of a headless endpoint without hostname", q: reverse("10.1.0.7") + " PTR",
			answer: []string{ptr(reverse("10.1.0.7"), "10-1-0-7."+db)}},
		{name: "PTR of a pod subdomain endpoint", q: reverse("10.1.0.50") + " PTR", answer: []string{ptr(reverse("10.1.0.50"), bb)}},
		{name: "IPv6 PTR of a dual-stack ClusterIP", q: reverse("fd00:10:96::30") + " PTR", answer: []string{ptr(reverse("fd00:10:96::30"), dual)}},
		{name: "IPv6 PTR asked in upper case", q: strings.ToUpper(reverse("fd00:10:96::30")) + " PTR",
			answer: []string{ptr(strings.ToUpper(reverse("fd00:10:96::30")), dual)}},
		{name: "IPv6 PTR of an endpoint with hostname", q: reverse("fd00:10:1::8") + " PTR", answer: []string{ptr(reverse("fd00:10:1::8"), "db-0."+db)}},
		{name: "IPv6 PTR of an endpoint without hostname", q: reverse("fd00:10:1::") + " PTR",
			answer: []string{ptr(reverse("fd00:10:1::"), "fd00-10-1--0."+db)}},
		{name: "PTR of a not-ready endpoint falls through (upstream NXDOMAIN)", q: reverse("10.1.0.6") + " PTR", rcode: nxdomain},
		{name: "PTR of an unknown address falls through (upstream NXDOMAIN)", q: reverse("10.96.99.99") + " PTR", rcode: nxdomain},
	})
}

// TestResponseCodes: CONFORMANCE.md "Response codes" (SERVFAIL before the first sync is in
// TestBeforeFirstSync).
func TestResponseCodes(t *testing.T) {
	s := recordsFixture(t)
	nx := func(name, q string) dnsCase { return dnsCase{name: "NXDOMAIN: " + name, q: q, rcode: nxdomain} }
	nodata := func(name, q string) dnsCase { return dnsCase{name: "NODATA: " + name, q: q, rcode: noerror} }
	expectDNS(t, s, []dnsCase{
		nx("unknown namespace", "web.nope.svc.cluster.local. A"),
		nx("unknown namespace name", "nope.svc.cluster.local. A"),
		nx("unknown service", "nope.ns1.svc.cluster.local. A"),
		nx("unknown service SRV", "nope.ns1.svc.cluster.local. SRV"),
		nx("unknown endpoint", "10-9-9-9."+web+" A"),
		nx("unknown endpoint hostname", "db-9."+db+" A"),
		nx("unknown port", "_nope._tcp."+web+" SRV"),
		nx("named port with the wrong protocol", "_http._udp."+web+" SRV"),
		nx("headless service without ready endpoints", "empty.ns1.svc.cluster.local. A"),
		nx("headless service without ready endpoints, AAAA", "empty.ns1.svc.cluster.local. AAAA"),
		nx("not-ready endpoint of a headless service without ready endpoints", "10-1-0-30.empty.ns1.svc.cluster.local. A"),
		nx("name under an ExternalName service", "x.ext.ns1.svc.cluster.local. A"),
		nx("port under an ExternalName service", "_http._tcp.ext.ns1.svc.cluster.local. SRV"),
		nx("ExternalName with an IP literal", "ext-ip.ns1.svc.cluster.local. A"),
		nx("not-ready endpoint of a ClusterIP service", "10-1-0-6."+web+" A"),
		nx("not-ready endpoint by hostname", "db-1."+db+" A"),
		nx("terminating endpoint, not ready", "db-2."+db+" A"),
		nx("terminating endpoint, not ready (b)", "db-5."+db+" A"),
		nx("a slice labelled MIXED is not the Service mixed's", "mixed.ns1.svc.cluster.local. A"),
		nx("zonal names of a ClusterIP Service", "zone-b.pin._zone."+web+" A"),
		nx("not-ready endpoint by dashed IP", "10-1-0-9."+db+" A"),
		nx("longer than the grammar under an endpoint", "x.10-1-0-5."+web+" A"),
		nx("longer than the grammar under a hostname", "x.db-0."+db+" A"),
		nx("longer than the grammar under a port", "x._http._tcp."+web+" SRV"),
		nx("'*' is an ordinary label", "*.ns1.svc.cluster.local. A"),
		nx("'any' is an ordinary label", "any.ns1.svc.cluster.local. A"),
		nx("'*' as namespace", "web.*.svc.cluster.local. A"),
		nx("neither svc nor pod", "nope.cluster.local. A"),
		nx("service without svc", "web.ns1.cluster.local. A"),
		nx("pod IP of no pod", "10-1-0-99.ns1.pod.cluster.local. A"),
		nx("pod IP in another namespace (verified)", "10-1-0-60.ns2.pod.cluster.local. A"),
		nx("pod that finished (verified)", "10-1-0-51.default.pod.cluster.local. A"),
		nx("pod name that is not an IP", "web.ns1.pod.cluster.local. A"),

		nodata("AAAA of an IPv4-only service", web+" AAAA"),
		nodata("TXT of a service", web+" TXT"),
		nodata("zonal pin: a zone without endpoints", "zone-x.pin._zone.db.ns1.svc.cluster.local. A"),
		nodata("MX of a service", web+" MX"),
		nodata("HINFO of a service", web+" HINFO"),
		nodata("AAAA of an IPv4 endpoint", "10-1-0-5."+web+" AAAA"),
		nodata("A of a port name", "_http._tcp."+web+" A"),
		nodata("existing namespace", "ns1.svc.cluster.local. A"),
		nodata("existing namespace with no services", "kube-public.svc.cluster.local. A"),
		nodata("svc", "svc.cluster.local. A"),
		nodata("pod", "pod.cluster.local. A"),
		nodata("apex A", "cluster.local. A"),
		nodata("apex AAAA", "cluster.local. AAAA"),
		nodata("apex TXT", "cluster.local. TXT"),
		nodata("apex MX", "cluster.local. MX"),
		nodata("dns-version A", "dns-version.cluster.local. A"),
		nodata("A of a PTR name", reverse("10.96.0.20")+" A"),
	})
}

// TestAAndAAAAAgree: an A and an AAAA query for one name never disagree on NXDOMAIN vs NOERROR.
func TestAAndAAAAAgree(t *testing.T) {
	s := recordsFixture(t)
	for _, name := range []string{
		web, dual, db, single, "10-1-0-5." + web, "10-1-0-6." + web, "db-0." + db, "db-1." + db, "db-2." + db,
		"fd00-10-1--7." + db, "10-1-0-7." + db, "empty.ns1.svc.cluster.local.", "nope.ns1.svc.cluster.local.",
		"ns1.svc.cluster.local.", "nope.svc.cluster.local.", "svc.cluster.local.", "pod.cluster.local.", "cluster.local.",
		"10-1-0-60.ns1.pod.cluster.local.", "fd00-10-1--60.ns1.pod.cluster.local.", "10-1-0-60.ns2.pod.cluster.local.",
		bb, "ext-ip.ns1.svc.cluster.local.", "x.ext.ns1.svc.cluster.local.", "_http._tcp." + web, "dns-version.cluster.local.",
		"ns.dns.cluster.local.",
	} {
		var rcodes [2]int
		for i, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			r, err := s.query("udp", name, qtype, 0)
			if err != nil {
				t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
			}
			rcodes[i] = r.Rcode
		}
		if (rcodes[0] == nxdomain) != (rcodes[1] == nxdomain) {
			t.Errorf("%s: A gets %s but AAAA gets %s", name, dns.RcodeToString[rcodes[0]], dns.RcodeToString[rcodes[1]])
		}
	}
}

// TestTruncation: a UDP answer larger than the client's buffer has TC set; TCP gets it whole.
func TestTruncation(t *testing.T) {
	s := shared(t)
	createNamespace(t, "big")
	createService(t, headlessService("big", "many", nil, port("http", 80, corev1.ProtocolTCP)))
	var eps []discoveryv1.Endpoint
	var want []string
	owner := "many.big.svc.cluster.local."
	for i := 1; i <= 60; i++ {
		ip := fmt.Sprintf("10.3.0.%d", i)
		eps = append(eps, ep(ip))
		want = append(want, a(owner, ip))
	}
	createSlice(t, endpointSlice("big", "many", "many-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePort("http", 80)}, eps...))
	// UDP with EDNS0 and TCP: the whole answer (this also waits for the slice to be indexed).
	eventually(t, s, dnsCase{name: "60 A records", q: owner + " A", answer: want}, 10*time.Second)

	r, err := s.query("udp", owner, dns.TypeA, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true // Len: the size on the wire, with name compression
	if !r.Truncated || len(r.Answer) >= 60 || r.Len() > 512 {
		t.Errorf("UDP without EDNS0: TC=%v, %d answers, %d bytes; want TC set, fewer than 60 answers, at most 512 bytes", r.Truncated, len(r.Answer), r.Len())
	}
	r, err = s.query("udp", owner, dns.TypeA, 512)
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true
	if !r.Truncated || len(r.Answer) >= 60 || r.Len() > 512 {
		t.Errorf("UDP with EDNS0 buffer 512: TC=%v, %d answers, %d bytes; want TC set, fewer than 60 answers, at most 512 bytes", r.Truncated, len(r.Answer), r.Len())
	}
}

// chainCNAMEs is chain-from → chain-(from+1) … chain-to → web.
func chainCNAMEs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		target := fmt.Sprintf("chain-%d.ns1.svc.cluster.local.", i+1)
		if i == 11 {
			target = web
		}
		out = append(out, cname(fmt.Sprintf("chain-%d.ns1.svc.cluster.local.", i), target))
	}
	return out
}

// cnameChainEnds: the answer comes (no SERVFAIL), starts with owner → target, holds only CNAMEs
// and at most 11 of them.
func cnameChainEnds(owner, target string) func(*dns.Msg) error {
	return func(r *dns.Msg) error {
		if r.Rcode == servfail {
			return fmt.Errorf("SERVFAIL")
		}
		if len(r.Answer) == 0 || rrText(r.Answer[0]) != cname(owner, target) {
			return fmt.Errorf("answer does not start with %s", cname(owner, target))
		}
		if len(r.Answer) > 11 {
			return fmt.Errorf("%d records in the answer: the chain did not end", len(r.Answer))
		}
		for _, rr := range r.Answer {
			if rr.Header().Rrtype != dns.TypeCNAME {
				return fmt.Errorf("a %s record at the end of a chain that should not resolve: %s", dns.TypeToString[rr.Header().Rrtype], strings.TrimSpace(rr.String()))
			}
		}
		return nil
	}
}
