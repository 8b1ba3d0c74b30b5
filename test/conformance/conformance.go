// Package conformance holds the behaviours of ../../../shared/CONFORMANCE.md as a table of
// queries and expected answers over the objects in test/testdata/world, and the one helper that
// checks a response against a case. The plugin's unit tests and the integration tests (over UDP
// and TCP through a real server) both run this table.
package conformance

import (
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Case is one query and the answer it must get. Records are in zone-file form; an SOA's serial
// is written as SERIAL and matches any serial.
type Case struct {
	Name   string
	Qname  string
	Qtype  uint16
	Rcode  int
	Answer []string
	Ns     []string
	Extra  []string
	// NotAuthoritative marks error replies written by the server rather than the zone (REFUSED).
	NotAuthoritative bool
}

// WorldDir is the folder of manifests the cases are written against.
func WorldDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "world")
}

// NegativeSOA is the SOA that NXDOMAIN and NODATA answers carry in the authority section.
const NegativeSOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"

// OutsideA is what the test servers answer for www.example.com (the ExternalName target).
const OutsideA = "www.example.com. 3600 IN A 192.0.2.80"

var nodata = []string{NegativeSOA}

// Cases covers every row of CONFORMANCE.md "Records" and every rule of "Response codes".
var Cases = []Case{
	// apex and schema version
	{Name: "dns-version TXT", Qname: "dns-version.cluster.local.", Qtype: dns.TypeTXT,
		Answer: []string{`dns-version.cluster.local. 28800 IN TXT "1.1.0"`}},
	{Name: "apex SOA", Qname: "cluster.local.", Qtype: dns.TypeSOA, Answer: nodata},
	{Name: "apex NS with address", Qname: "cluster.local.", Qtype: dns.TypeNS,
		Answer: []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
		Extra:  []string{"ns.dns.cluster.local. 5 IN A 10.96.0.53"}},
	{Name: "apex A is NODATA", Qname: "cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "svc is NODATA", Qname: "svc.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "pod is NODATA", Qname: "pod.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "namespace is NODATA", Qname: "ns1.svc.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "namespace without services is NODATA", Qname: "empty-ns.svc.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "unknown namespace NXDOMAIN", Qname: "nons.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "service in unknown namespace NXDOMAIN", Qname: "web.nons.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "unknown service NXDOMAIN", Qname: "nope.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "unknown top label NXDOMAIN", Qname: "foo.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},

	// ClusterIP services
	{Name: "ClusterIP A", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{Name: "ClusterIP A keeps the query's case", Qname: "WeB.Ns1.SVC.Cluster.Local.", Qtype: dns.TypeA,
		Answer: []string{"WeB.Ns1.SVC.Cluster.Local. 5 IN A 10.96.0.10"}},
	{Name: "ClusterIP AAAA of IPv4-only is NODATA", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA, Ns: nodata},
	{Name: "ClusterIP TXT is NODATA", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeTXT, Ns: nodata},
	{Name: "ClusterIP MX is NODATA", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeMX, Ns: nodata},
	{Name: "ClusterIP HINFO is NODATA", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeHINFO, Ns: nodata},
	{Name: "dual-stack A", Qname: "dual.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"dual.ns1.svc.cluster.local. 5 IN A 10.96.0.20"}},
	{Name: "dual-stack AAAA", Qname: "dual.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA,
		Answer: []string{"dual.ns1.svc.cluster.local. 5 IN AAAA fd00:96::20"}},
	{Name: "named SRV of ClusterIP", Qname: "_http._tcp.web.ns1.svc.cluster.local.", Qtype: dns.TypeSRV,
		Answer: []string{"_http._tcp.web.ns1.svc.cluster.local. 5 IN SRV 0 100 80 web.ns1.svc.cluster.local."},
		Extra:  []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{Name: "bare SRV: every port, unnamed included", Qname: "web.ns1.svc.cluster.local.", Qtype: dns.TypeSRV,
		Answer: []string{
			"web.ns1.svc.cluster.local. 5 IN SRV 0 50 80 web.ns1.svc.cluster.local.",
			"web.ns1.svc.cluster.local. 5 IN SRV 0 50 8080 web.ns1.svc.cluster.local.",
		},
		Extra: []string{"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{Name: "SRV with unknown protocol NXDOMAIN", Qname: "_http._udp.web.ns1.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "SRV with unknown port NXDOMAIN", Qname: "_nope._tcp.web.ns1.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "SRV protocol label is an empty non-terminal", Qname: "_tcp.web.ns1.svc.cluster.local.", Qtype: dns.TypeSRV, Ns: nodata},
	{Name: "SRV name A is NODATA", Qname: "_http._tcp.web.ns1.svc.cluster.local.", Qtype: dns.TypeA, Ns: nodata},

	// endpoint names under a ClusterIP service
	{Name: "ready endpoint of ClusterIP", Qname: "10-1-0-5.web.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-5.web.ns1.svc.cluster.local. 5 IN A 10.1.0.5"}},
	{Name: "endpoint with absent ready condition is ready", Qname: "10-1-0-11.web.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-11.web.ns1.svc.cluster.local. 5 IN A 10.1.0.11"}},
	{Name: "not-ready endpoint NXDOMAIN", Qname: "10-1-0-6.web.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	// Served by the ready condition alone: the EndpointSlice controller keeps a terminating
	// endpoint ready for publishNotReadyAddresses Services (StatefulSet peers in a rollout).
	{Name: "terminating endpoint that is ready: served", Qname: "10-1-0-9.web.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-9.web.ns1.svc.cluster.local. 5 IN A 10.1.0.9"}},
	{Name: "terminating endpoint with ready absent: served", Qname: "10-1-0-12.web.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-12.web.ns1.svc.cluster.local. 5 IN A 10.1.0.12"}},
	{Name: "terminating endpoint not ready: NXDOMAIN", Qname: "10-1-0-13.web.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "name longer than the grammar NXDOMAIN", Qname: "a.10-1-0-5.web.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},

	// headless services
	{Name: "headless A: ready endpoints deduplicated across slices", Qname: "db.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.7",
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.8",
			"db.ns1.svc.cluster.local. 5 IN A 10.1.0.10",
		}},
	{Name: "headless AAAA", Qname: "db.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA,
		Answer: []string{"db.ns1.svc.cluster.local. 5 IN AAAA fd00::7", "db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::"}},
	{Name: "hostname endpoint A", Qname: "db-0.db.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.7"}},
	{Name: "hostname endpoint AAAA", Qname: "db-0.db.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA,
		Answer: []string{"db-0.db.ns1.svc.cluster.local. 5 IN AAAA fd00::7"}},
	{Name: "dashed-IP endpoint", Qname: "10-1-0-8.db.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-8.db.ns1.svc.cluster.local. 5 IN A 10.1.0.8"}},
	{Name: "IPv6 dashed name with trailing 0", Qname: "fd00-1--0.db.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA,
		Answer: []string{"fd00-1--0.db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::"}},
	{Name: "IPv6 endpoint A is NODATA", Qname: "fd00-1--0.db.ns1.svc.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
	{Name: "not-ready hostname NXDOMAIN", Qname: "db-2.db.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "headless named SRV: endpoints x ports from the slices", Qname: "_pg._tcp.db.ns1.svc.cluster.local.", Qtype: dns.TypeSRV,
		Answer: []string{
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 20 5432 db-0.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 20 5432 10-1-0-8.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 20 5433 10-1-0-8.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 20 5433 10-1-0-10.db.ns1.svc.cluster.local.",
			"_pg._tcp.db.ns1.svc.cluster.local. 5 IN SRV 0 20 5432 fd00-1--0.db.ns1.svc.cluster.local.",
		},
		Extra: []string{
			"db-0.db.ns1.svc.cluster.local. 5 IN A 10.1.0.7",
			"db-0.db.ns1.svc.cluster.local. 5 IN AAAA fd00::7",
			"10-1-0-8.db.ns1.svc.cluster.local. 5 IN A 10.1.0.8",
			"10-1-0-10.db.ns1.svc.cluster.local. 5 IN A 10.1.0.10",
			"fd00-1--0.db.ns1.svc.cluster.local. 5 IN AAAA fd00:1::",
		}},
	{Name: "headless without ready endpoints NXDOMAIN", Qname: "nobody.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "headless without ready endpoints AAAA NXDOMAIN too", Qname: "nobody.ns1.svc.cluster.local.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "pod hostname and subdomain", Qname: "busybox-1.default-subdomain.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"busybox-1.default-subdomain.ns1.svc.cluster.local. 5 IN A 10.1.0.60"}},

	// wildcards are ordinary labels
	{Name: "wildcard service NXDOMAIN", Qname: "*.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "any service NXDOMAIN", Qname: "any.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "zone transfer REFUSED", Qname: "cluster.local.", Qtype: dns.TypeAXFR, Rcode: dns.RcodeRefused, NotAuthoritative: true},
	{Name: "wildcard namespace NXDOMAIN", Qname: "web.*.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},

	// ExternalName
	{Name: "ExternalName out of zone: CNAME and the target's records", Qname: "ext.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com.", OutsideA}},
	{Name: "ExternalName CNAME query", Qname: "ext.ns1.svc.cluster.local.", Qtype: dns.TypeCNAME,
		Answer: []string{"ext.ns1.svc.cluster.local. 5 IN CNAME www.example.com."}},
	{Name: "ExternalName in zone: CNAME and the in-cluster answer", Qname: "ext-int.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"ext-int.ns1.svc.cluster.local. 5 IN CNAME web.ns1.svc.cluster.local.", "web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"}},
	{Name: "ExternalName loop ends", Qname: "loop-a.ns1.svc.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{
			"loop-a.ns1.svc.cluster.local. 5 IN CNAME loop-b.ns1.svc.cluster.local.",
			"loop-b.ns1.svc.cluster.local. 5 IN CNAME loop-a.ns1.svc.cluster.local.",
		}},
	{Name: "name under an ExternalName NXDOMAIN", Qname: "_http._tcp.ext.ns1.svc.cluster.local.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "ExternalName to an IP literal NXDOMAIN", Qname: "ext-ip.ns1.svc.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},

	// reverse
	{Name: "PTR of a ClusterIP", Qname: "10.0.96.10.in-addr.arpa.", Qtype: dns.TypePTR,
		Answer: []string{"10.0.96.10.in-addr.arpa. 5 IN PTR web.ns1.svc.cluster.local."}},
	{Name: "PTR of an endpoint in two services", Qname: "5.0.1.10.in-addr.arpa.", Qtype: dns.TypePTR,
		Answer: []string{
			"5.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-5.web.ns1.svc.cluster.local.",
			"5.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-5.web2.ns2.svc.cluster.local.",
		}},
	{Name: "PTR of a hostname endpoint", Qname: "7.0.1.10.in-addr.arpa.", Qtype: dns.TypePTR,
		Answer: []string{"7.0.1.10.in-addr.arpa. 5 IN PTR db-0.db.ns1.svc.cluster.local."}},
	{Name: "IPv6 PTR of a ClusterIP", Qname: "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", Qtype: dns.TypePTR,
		Answer: []string{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.ns1.svc.cluster.local."}},
	{Name: "IPv6 PTR of an endpoint", Qname: "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", Qtype: dns.TypePTR,
		Answer: []string{"7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR db-0.db.ns1.svc.cluster.local."}},
	{Name: "PTR of a not-ready endpoint NXDOMAIN", Qname: "6.0.1.10.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError,
		Ns: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. SERIAL 7200 1800 86400 5"}},

	// pods verified
	{Name: "pod A (verified)", Qname: "10-1-0-50.ns1.pod.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-50.ns1.pod.cluster.local. 5 IN A 10.1.0.50"}},
	{Name: "pod AAAA (verified)", Qname: "fd00--50.ns1.pod.cluster.local.", Qtype: dns.TypeAAAA,
		Answer: []string{"fd00--50.ns1.pod.cluster.local. 5 IN AAAA fd00::50"}},
	{Name: "finished pod NXDOMAIN", Qname: "10-1-0-51.ns1.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "pod IP of another namespace NXDOMAIN", Qname: "10-1-0-52.ns1.pod.cluster.local.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: nodata},
	{Name: "pod in its own namespace", Qname: "10-1-0-52.ns2.pod.cluster.local.", Qtype: dns.TypeA,
		Answer: []string{"10-1-0-52.ns2.pod.cluster.local. 5 IN A 10.1.0.52"}},
	{Name: "pod namespace is NODATA", Qname: "ns1.pod.cluster.local.", Qtype: dns.TypeA, Ns: nodata},
}

// Check compares a response with a case: rcode, the AA bit, and each section as a set of records.
func Check(resp *dns.Msg, c Case) error {
	if resp == nil {
		return fmt.Errorf("no response")
	}
	if resp.Rcode != c.Rcode {
		return fmt.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[c.Rcode])
	}
	if !resp.Authoritative && !c.NotAuthoritative {
		return fmt.Errorf("AA bit not set")
	}
	if resp.Truncated {
		return fmt.Errorf("TC bit set")
	}
	if len(resp.Question) != 1 || resp.Question[0].Name != c.Qname {
		return fmt.Errorf("question %v, want %s", resp.Question, c.Qname)
	}
	for _, sec := range []struct {
		name      string
		got       []dns.RR
		want      []string
		skipExtra bool
	}{{"answer", resp.Answer, c.Answer, false}, {"authority", resp.Ns, c.Ns, false}, {"additional", resp.Extra, c.Extra, true}} {
		got := normalize(sec.got, sec.skipExtra)
		want := make([]string, 0, len(sec.want))
		for _, w := range sec.want {
			rr, err := dns.NewRR(strings.Replace(w, "SERIAL", "1", 1))
			if err != nil {
				return fmt.Errorf("bad expected record %q: %v", w, err)
			}
			want = append(want, normalize([]dns.RR{rr}, false)...)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s section:\n got  %s\n want %s", sec.name, strings.Join(got, "\n       "), strings.Join(want, "\n       "))
		}
	}
	return nil
}

// normalize writes records as strings with SOA serials zeroed; OPT records are left out.
func normalize(rrs []dns.RR, skipOPT bool) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT && skipOPT {
			continue
		}
		if soa, ok := rr.(*dns.SOA); ok {
			cp := *soa
			cp.Serial = 0
			rr = &cp
		}
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	return out
}

// WithCase rewrites a case for a query name in other letters: answer records owned by the query
// name take its case, as the server must answer; names the server writes itself (SOA, targets,
// additional records) keep theirs.
func WithCase(c Case, qname string) Case {
	fix := func(recs []string) []string {
		out := make([]string, len(recs))
		for i, r := range recs {
			owner, rest, _ := strings.Cut(r, " ")
			if strings.EqualFold(owner, c.Qname) {
				owner = qname
			}
			out[i] = owner + " " + rest
		}
		return out
	}
	c.Qname, c.Answer = qname, fix(c.Answer)
	return c
}
