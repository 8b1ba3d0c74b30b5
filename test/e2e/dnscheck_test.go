package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	zone = "cluster.local."
	ttl  = 5 // the default ttl of k8sdiscovery
	// dnsVersionTTL is dns-version's TXT TTL (8 hours, as upstream).
	dnsVersionTTL = 28800

	// udpSize is the EDNS0 buffer the cases ask with over UDP (the size most resolvers use);
	// TestTruncation asks without EDNS0.
	udpSize = 1232

	noerror  = dns.RcodeSuccess
	nxdomain = dns.RcodeNameError
	servfail = dns.RcodeServerFailure
)

// dnsCase is one question and the answer it must get.
type dnsCase struct {
	name string // what the case shows, for the test name
	q    string // "web.ns1.svc.cluster.local. A"

	rcode int
	// answer lists the answer section as "owner TYPE rdata", in any order. Empty with NOERROR
	// means NODATA. Owner names are compared as written: the answer keeps the query's case.
	answer []string
	// extra, when not nil, is the whole additional section (OPT left out), in any order.
	extra []string
	// check is an optional extra assertion on the message; with skipAnswer it replaces the
	// comparison of the answer section.
	check      func(*dns.Msg) error
	skipAnswer bool
}

func (c dnsCase) question() (string, uint16) {
	name, typ, ok := strings.Cut(c.q, " ")
	if !ok {
		panic("dnsCase.q wants \"NAME TYPE\": " + c.q)
	}
	t, ok := dns.StringToType[typ]
	if !ok {
		panic("unknown type in " + c.q)
	}
	return name, t
}

// rrText writes an RR as "owner TYPE rdata", without TTL and class.
func rrText(rr dns.RR) string {
	h := rr.Header()
	rdata := strings.TrimPrefix(rr.String(), h.String())
	if h.Rrtype == dns.TypeSOA { // the serial changes with the data: written as SERIAL
		f := strings.Fields(rdata)
		f[2] = "SERIAL"
		rdata = strings.Join(f, " ")
	}
	return h.Name + " " + dns.TypeToString[h.Rrtype] + " " + strings.Join(strings.Fields(rdata), " ")
}

func rrTexts(rrs []dns.RR) []string {
	out := []string{}
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, rrText(rr))
	}
	slices.Sort(out)
	return out
}

func sameSet(want, got []string) bool {
	w := slices.Clone(want)
	slices.Sort(w)
	return slices.Equal(w, got)
}

// zoneOf is the k8sdiscovery zone a name is in, or "" for a name outside them.
func zoneOf(name string) string {
	lname := strings.ToLower(name)
	for _, z := range []string{zone, "in-addr.arpa.", "ip6.arpa."} {
		if lname == z || strings.HasSuffix(lname, "."+z) {
			return z
		}
	}
	return ""
}

// verify compares a response with the case; the error says everything that differs.
func (c dnsCase) verify(r *dns.Msg) error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	name, _ := c.question()

	if r.Rcode != c.rcode {
		bad("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
	}
	if got := rrTexts(r.Answer); !c.skipAnswer && !sameSet(c.answer, got) {
		bad("answer\n\t\t%s\n\twant\n\t\t%s", strings.Join(got, "\n\t\t"), strings.Join(sortedCopy(c.answer), "\n\t\t"))
	}
	if c.extra != nil {
		if got := rrTexts(r.Extra); !sameSet(c.extra, got) {
			bad("additional\n\t\t%s\n\twant\n\t\t%s", strings.Join(got, "\n\t\t"), strings.Join(sortedCopy(c.extra), "\n\t\t"))
		}
	}
	if r.Truncated {
		bad("TC set")
	}
	z := zoneOf(name)
	negative := r.Rcode == nxdomain || (r.Rcode == noerror && len(r.Answer) == 0)
	if z == zone && (r.Rcode == noerror || r.Rcode == nxdomain) && !r.Authoritative {
		bad("AA not set")
	}
	// Negative answers in the cluster zone carry its SOA; in the reverse zones, NODATA from
	// k8sdiscovery carries the reverse zone's SOA (NXDOMAIN there falls through to the upstream).
	if negative && (z == zone || (z != "" && r.Rcode == noerror)) {
		if err := checkSOA(r.Ns, z); err != nil {
			bad("authority: %v", err)
		}
	}
	// Every record from the cluster DNS (and the test upstream) has the configured TTL, but
	// dns-version's TXT, which has upstream's 8 hours.
	for _, rr := range append(append(slices.Clone(r.Answer), r.Ns...), r.Extra...) {
		want := uint32(ttl)
		if h := rr.Header(); h.Rrtype == dns.TypeTXT && strings.EqualFold(h.Name, "dns-version."+zone) {
			want = dnsVersionTTL
		}
		if h := rr.Header(); h.Rrtype != dns.TypeOPT && h.Ttl != want {
			bad("TTL %d, want %d: %s", h.Ttl, want, rr)
		}
	}
	if c.check != nil {
		if err := c.check(r); err != nil {
			bad("%v", err)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s\n--- response:\n%s", c.q, strings.Join(problems, "\n\t"), r)
}

// checkSOA wants exactly the zone's SOA:
// `<zone> SOA ns.dns.<zone> hostmaster.<zone> <serial> 7200 1800 86400 <ttl>`, for the cluster
// zone and the reverse zones alike (upstream's names).
func checkSOA(ns []dns.RR, z string) error {
	if len(ns) != 1 {
		return fmt.Errorf("want one SOA, got %d records: %v", len(ns), ns)
	}
	soa, ok := ns[0].(*dns.SOA)
	if !ok {
		return fmt.Errorf("want an SOA, got %s", ns[0])
	}
	mname, mbox := "ns.dns."+z, "hostmaster."+z
	if soa.Hdr.Name != z || soa.Ns != mname || soa.Mbox != mbox || soa.Refresh != 7200 || soa.Retry != 1800 ||
		soa.Expire != 86400 || soa.Minttl != ttl || soa.Serial == 0 {
		return fmt.Errorf("got %s, want %s SOA %s %s <serial> 7200 1800 86400 %d", soa, z, mname, mbox, ttl)
	}
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// ask sends the case's question over network (UDP with an EDNS0 buffer of udpSize).
func (s *dnsServer) ask(network, name string, qtype uint16) (*dns.Msg, error) {
	if network == "udp" {
		return s.query(network, name, qtype, udpSize)
	}
	return s.query(network, name, qtype, 0)
}

// expectDNS runs each case as a subtest, over UDP and over TCP.
func expectDNS(t *testing.T, s *dnsServer, cases []dnsCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name, qtype := c.question()
			for _, network := range []string{"udp", "tcp"} {
				r, err := s.ask(network, name, qtype)
				if err != nil {
					t.Errorf("%s over %s: %v", c.q, network, err)
					continue
				}
				if err := c.verify(r); err != nil {
					t.Errorf("over %s: %v", network, err)
				}
			}
		})
	}
}

// eventually polls (over UDP with EDNS0, every 50 ms) until the case holds or the timeout passes, then
// checks it once over TCP too. It returns how long the change took to show.
func eventually(t *testing.T, s *dnsServer, c dnsCase, timeout time.Duration) time.Duration {
	t.Helper()
	name, qtype := c.question()
	start := time.Now()
	var last error
	for {
		r, err := s.ask("udp", name, qtype)
		if err == nil {
			err = c.verify(r)
		}
		if err == nil {
			break
		}
		last = err
		if time.Since(start) > timeout {
			t.Fatalf("%s: still wrong after %s: %v", c.name, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	r, err := s.ask("tcp", name, qtype)
	if err == nil {
		err = c.verify(r)
	}
	if err != nil {
		t.Fatalf("%s: right over UDP but not over TCP: %v", c.name, err)
	}
	t.Logf("%s: took %s", c.name, took.Round(time.Millisecond))
	return took
}

// answersWithin asks c over UDP until it is answered right, for up to timeout; the last error
// otherwise.
func answersWithin(s *dnsServer, c dnsCase, timeout time.Duration) error {
	name, qtype := c.question()
	start := time.Now()
	for {
		r, err := s.ask("udp", name, qtype)
		if err == nil {
			err = c.verify(r)
		}
		if err == nil {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("%s: still wrong after %s: %v", c.name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Shorthands for expected records.
func a(owner, ip string) string { return owner + " A " + ip }
func soaRR(owner string) string {
	return owner + " SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"
}
func aaaa(owner, ip string) string      { return owner + " AAAA " + ip }
func cname(owner, target string) string { return owner + " CNAME " + target }
func ptr(owner, target string) string   { return owner + " PTR " + target }
func srv(owner string, weight, port int, target string) string {
	return fmt.Sprintf("%s SRV 0 %d %d %s", owner, weight, port, target)
}
