package k8sdiscovery

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

func externalWorld(t *testing.T, headless bool) *External {
	t.Helper()
	web := clusterIPService("ns1", "web", "10.96.0.20")
	web.Spec.ExternalIPs = []string{"192.0.2.10"}
	web.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.11"}, {IP: "2001:db8::11"}, {Hostname: "lb.example.net"}}
	elb := clusterIPService("ns1", "elb", "10.96.0.22")
	elb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "elb-1.example.net"}, {Hostname: "elb-2.example.net"}}
	dnsSvc := clusterIPService("kube-system", "kube-dns", "10.96.0.10")
	dnsSvc.Spec.ExternalIPs = []string{"192.0.2.53"}
	k, _ := startFake(t, defaultConfig(), namespace("ns1"), namespace("kube-system"), web, elb, dnsSvc,
		clusterIPService("ns1", "internal", "10.96.0.21"), headlessService("ns1", "db"),
		slice("ns1", "db", "db-1", 5432, ep{ip: "10.1.0.7", hostname: "db-0"}))
	eventually(t, k, "db.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.1.0.7")
	e := &External{zones: []string{"example.com."}, apex: "dns", ttl: 5, head: headless, k: k}
	return e
}

func askExternal(e *External, qname string, qtype uint16) *dns.Msg {
	return askHandler(e, qname, qtype)
}

func rrTexts(rrs []dns.RR) string {
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return strings.Join(out, "; ")
}

// External names for clients outside the cluster, as upstream's k8s_external answers them.
func TestExternal(t *testing.T) {
	e := externalWorld(t, false)
	cases := []struct {
		qname  string
		qtype  uint16
		rcode  int
		answer string
		extra  string
	}{
		{"web.ns1.example.com.", dns.TypeA, dns.RcodeSuccess,
			"web.ns1.example.com. 5 IN A 192.0.2.10; web.ns1.example.com. 5 IN A 192.0.2.11", ""},
		{"WEB.ns1.example.com.", dns.TypeAAAA, dns.RcodeSuccess, "WEB.ns1.example.com. 5 IN AAAA 2001:db8::11", ""},
		{"elb.ns1.example.com.", dns.TypeA, dns.RcodeSuccess, "elb.ns1.example.com. 5 IN CNAME elb-1.example.net.", ""},
		{"web.ns1.example.com.", dns.TypeSRV, dns.RcodeSuccess, "web.ns1.example.com. 5 IN SRV 0 100 80 web.ns1.example.com.",
			"web.ns1.example.com. 5 IN A 192.0.2.10; web.ns1.example.com. 5 IN A 192.0.2.11; web.ns1.example.com. 5 IN AAAA 2001:db8::11"},
		{"_http._tcp.web.ns1.example.com.", dns.TypeSRV, dns.RcodeSuccess, "_http._tcp.web.ns1.example.com. 5 IN SRV 0 100 80 web.ns1.example.com.", ""},
		{"internal.ns1.example.com.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"db.ns1.example.com.", dns.TypeA, dns.RcodeNameError, "", ""}, // headless: only with the headless option
		{"nope.ns9.example.com.", dns.TypeA, dns.RcodeNameError, "", ""},
		{"example.com.", dns.TypeSOA, dns.RcodeSuccess, "example.com. 5 IN SOA ns1.dns.example.com. hostmaster.dns.example.com.", ""},
		{"example.com.", dns.TypeNS, dns.RcodeSuccess, "example.com. 5 IN NS ns1.dns.example.com.", "ns1.dns.example.com. 5 IN A 192.0.2.53"},
		{"ns1.dns.example.com.", dns.TypeA, dns.RcodeSuccess, "ns1.dns.example.com. 5 IN A 192.0.2.53", ""},
		{"x.dns.example.com.", dns.TypeA, dns.RcodeNameError, "", ""},
	}
	for _, c := range cases {
		r := askExternal(e, c.qname, c.qtype)
		got := rrTexts(r.Answer)
		if c.qtype == dns.TypeSOA && len(r.Answer) == 1 {
			soa := r.Answer[0].(*dns.SOA)
			got = fmt.Sprintf("%s %d IN SOA %s %s", soa.Hdr.Name, soa.Hdr.Ttl, soa.Ns, soa.Mbox)
		}
		if r.Rcode != c.rcode || got != c.answer || (c.extra != "" && rrTexts(r.Extra) != c.extra) {
			t.Errorf("%s %s: %s\n answer %s\n extra %s\nwant %s\n answer %s\n extra %s", c.qname, dns.TypeToString[c.qtype],
				dns.RcodeToString[r.Rcode], got, rrTexts(r.Extra), dns.RcodeToString[c.rcode], c.answer, c.extra)
		}
		if (r.Rcode == dns.RcodeNameError || len(r.Answer) == 0) && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s %s: a negative answer without the zone's SOA: %v", c.qname, dns.TypeToString[c.qtype], r.Ns)
		}
	}

	h := externalWorld(t, true)
	if r := askExternal(h, "db.ns1.example.com.", dns.TypeA); rrTexts(r.Answer) != "db.ns1.example.com. 5 IN A 10.1.0.7" {
		t.Errorf("headless: db: %s", rrTexts(r.Answer))
	}
	if r := askExternal(h, "db-0.db.ns1.example.com.", dns.TypeA); rrTexts(r.Answer) != "db-0.db.ns1.example.com. 5 IN A 10.1.0.7" {
		t.Errorf("headless: db-0: %s", rrTexts(r.Answer))
	}
}

func TestParseExternal(t *testing.T) {
	c := caddy.NewTestController("dns", "k8sdiscovery_external example.com {\n apex edge\n ttl 30\n headless\n fallthrough\n}")
	e, err := parseExternal(c)
	if err != nil || e.zones[0] != "example.com." || e.apex != "edge" || e.ttl != 30 || !e.head {
		t.Fatalf("parsed %+v, %v", e, err)
	}
	for input, want := range map[string]string{
		"k8sdiscovery_external {\n ttl forever\n}": "ttl: want a number",
		"k8sdiscovery_external {\n apex\n}":        "apex: want one name",
		"k8sdiscovery_external {\n bogus\n}":       `unknown option "bogus"`,
	} {
		c := caddy.NewTestController("dns", input)
		c.ServerBlockKeys = []string{"example.com:53"}
		if _, err := parseExternal(c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", input, err, want)
		}
	}
}
