package searchpath

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/kube"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// world answers names as the rest of the server would: A/AAAA records by name, NXDOMAIN otherwise.
type world struct {
	records map[string][]string // lower-case name → records in zone-file form
	failing map[string]bool     // names that answer SERVFAIL
	slow    time.Duration       // every lookup takes this long
	mu      sync.Mutex
	asked   []string
}

func (w *world) Lookup(_ context.Context, _ request.Request, name string, typ uint16) (*dns.Msg, error) {
	time.Sleep(w.slow)
	w.mu.Lock()
	w.asked = append(w.asked, name)
	w.mu.Unlock()
	m := new(dns.Msg)
	m.SetQuestion(name, typ)
	m.AuthenticatedData = true // as a validating upstream would say; a synthesized answer must not
	key := strings.ToLower(name)
	if w.failing[key] {
		m.Rcode = dns.RcodeServerFailure
		return m, nil
	}
	recs, ok := w.records[key]
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m, nil
	}
	for _, r := range recs {
		rr, err := dns.NewRR(r)
		if err != nil {
			return nil, err
		}
		if rr.Header().Rrtype == typ {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m, nil
}

// pods is a fixed client index; it trims and reads pods as the real ones do.
type pods []*corev1.Pod

func (p pods) Synced() bool { return true }
func (p pods) PodsByIP(ip string) []kube.DNSClient {
	var out []kube.DNSClient
	for _, x := range p {
		if x.Status.PodIP == ip {
			out = append(out, kube.DNSClientOf(kube.TrimPod(x)))
		}
	}
	return out
}

func clientPod(ns, ip string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client-" + ns, Namespace: ns},
		Spec:       corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// nextHandler answers what reaches the next plugin with a marker record, so a test can tell.
var nextHandler = test.HandlerFunc(func(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"next"}}}
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
})

type clientWriter struct {
	test.ResponseWriter
	ip string
}

func (c *clientWriter) RemoteAddr() net.Addr { return &net.UDPAddr{IP: net.ParseIP(c.ip), Port: 40000} }

func newWorld() *world {
	return &world{records: map[string][]string{
		"web.ns1.svc.cluster.local.":         {"web.ns1.svc.cluster.local. 5 IN A 10.96.0.10"},
		"example.svc.com.svc.cluster.local.": {"example.svc.com.svc.cluster.local. 5 IN A 10.96.0.99"},
		"example.com.":                       {"example.com. 300 IN A 192.0.2.10", "example.com. 300 IN AAAA 2001:db8::10"},
		"example.org.svc.cluster.local.":     {"example.org.svc.cluster.local. 5 IN A 10.96.0.77"}, // service example.org? no: namespace org, service example
		"db.custom.example.":                 {"db.custom.example. 60 IN A 192.0.2.20"},
		"api.team.example.":                  {"api.team.example. 60 IN A 192.0.2.30"},
		"nodata.ns1.svc.cluster.local.":      {"nodata.ns1.svc.cluster.local. 5 IN A 10.96.0.11"},
		"vault.svc.cluster.local.":           {"vault.svc.cluster.local. 5 IN TXT namespace"}, // a namespace: NODATA for A
		"vault.corp.example.":                {"vault.corp.example. 60 IN A 192.0.2.40"},
		"zero.corp.example.":                 {"zero.corp.example. 0 IN A 192.0.2.41"},
	}, failing: map[string]bool{"broken.ns1.svc.cluster.local.": true}}
}

func TestServeDNS(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	terminating := func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
	finished := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	optedOut := func(p *corev1.Pod) { p.Annotations = map[string]string{kube.SearchPathAnnotation: "off"} }
	optedIn := func(p *corev1.Pod) { p.Annotations = map[string]string{kube.SearchPathAnnotation: "on"} }
	customSearch := func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"custom.example"}} }
	none := func(p *corev1.Pod) {
		p.Spec.DNSPolicy = corev1.DNSNone
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"team.example", "other.example"}}
	}

	tests := []struct {
		name    string
		clients pods
		from    string
		qname   string
		qtype   uint16
		rcode   int
		want    []string // answer records' type and data, in order; "next" when the query passed on
		asked   int      // candidates resolved
		ttl0    bool     // every answer record has TTL 0
	}{
		{name: "asked name exists: plain answer", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"A 10.96.0.10"}, asked: 1},
		{name: "user typed web.ns1", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME web.ns1.svc.cluster.local.", "A 10.96.0.10"}, asked: 2},
		{name: "external name walks to the bare name", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "example.com.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME example.com.", "A 192.0.2.10"}, asked: 5},
		{name: "external name AAAA", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "example.com.ns1.svc.cluster.local.", qtype: dns.TypeAAAA,
			want: []string{"CNAME example.com.", "AAAA 2001:db8::10"}, asked: 5},
		{name: "service example in namespace com wins as in the client's walk", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "example.svc.com.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME example.svc.com.svc.cluster.local.", "A 10.96.0.99"}, asked: 2},
		{name: "in-cluster name before the bare name", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "example.org.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME example.org.svc.cluster.local.", "A 10.96.0.77"}, asked: 2},
		{name: "existing name with another type stops the walk (NODATA)", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "nodata.ns1.svc.cluster.local.", qtype: dns.TypeAAAA, want: nil, asked: 1},
		{name: "NODATA part-way: the client walks itself (never a CNAME to a name without the type)", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "vault.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}, asked: 2},
		{name: "CNAME TTL is the target's, zero included", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "zero.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"CNAME zero.corp.example.", "A 192.0.2.41"}, asked: 4, ttl0: true},
		{name: "every candidate NXDOMAIN: the plain NXDOMAIN", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "nothing.ns1.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, want: nil, asked: 5},
		{name: "custom dnsConfig searches are walked", clients: pods{clientPod("ns1", "10.1.0.50", customSearch)}, from: "10.1.0.50",
			qname: "db.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME db.custom.example.", "A 192.0.2.20"}, asked: 5},
		{name: "dnsPolicy None uses only dnsConfig", clients: pods{clientPod("ns1", "10.1.0.50", none)}, from: "10.1.0.50",
			qname: "api.team.example.", qtype: dns.TypeA, want: []string{"A 192.0.2.30"}, asked: 1},
		{name: "dnsPolicy None: cluster domains are not searched", clients: pods{clientPod("ns1", "10.1.0.50", none)}, from: "10.1.0.50",
			qname: "web.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "unknown client", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.99",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "hostNetwork client", clients: pods{clientPod("ns1", "10.1.0.50", hostNet)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "pod annotated clusterdns.io/searchpath=off: not expanded", clients: pods{clientPod("ns1", "10.1.0.50", optedOut)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "any other annotation value expands", clients: pods{clientPod("ns1", "10.1.0.50", optedIn)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME web.ns1.svc.cluster.local.", "A 10.96.0.10"}, asked: 2},
		{name: "terminating client", clients: pods{clientPod("ns1", "10.1.0.50", terminating)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "finished client", clients: pods{clientPod("ns1", "10.1.0.50", finished)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "IP reused by a pod in another namespace: the old pod's list is not used",
			clients: pods{clientPod("ns1", "10.1.0.50", terminating), clientPod("ns2", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "IP reused by a pod in another namespace: the new pod's list is",
			clients: pods{clientPod("ns1", "10.1.0.50", finished), clientPod("ns2", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.ns2.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME web.ns1.svc.cluster.local.", "A 10.96.0.10"}, asked: 2},
		{name: "two live pods on one address with different search lists: no expansion",
			clients: pods{clientPod("ns1", "10.1.0.50"), clientPod("ns1", "10.1.0.50", customSearch)}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "two live pods on one address with the same search list: expanded",
			clients: pods{clientPod("ns1", "10.1.0.50"), clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME web.ns1.svc.cluster.local.", "A 10.96.0.10"}, asked: 2},
		{name: "name without the client's first search domain", clients: pods{clientPod("ns2", "10.1.0.50")}, from: "10.1.0.50",
			qname: "web.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "the first search domain alone is not expanded", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}},
		{name: "a failing candidate leaves the query to the chain", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "broken.ns1.svc.cluster.local.", qtype: dns.TypeA, want: []string{"next"}, asked: 1},
		{name: "case of the asked name is kept", clients: pods{clientPod("ns1", "10.1.0.50")}, from: "10.1.0.50",
			qname: "Example.COM.ns1.svc.cluster.local.", qtype: dns.TypeA,
			want: []string{"CNAME Example.COM.", "A 192.0.2.10"}, asked: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			s := &SearchPath{Next: nextHandler, config: config{zones: []string{"."}, clusterDomain: "cluster.local"},
				hostSearches: []string{"corp.example"}, pods: tc.clients, resolver: w}
			r := new(dns.Msg)
			r.SetQuestion(tc.qname, tc.qtype)
			rec := dnstest.NewRecorder(&clientWriter{ip: tc.from})
			if _, err := s.ServeDNS(context.Background(), rec, r); err != nil {
				t.Fatal(err)
			}
			got := rec.Msg
			if got.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[got.Rcode], dns.RcodeToString[tc.rcode])
			}
			if len(got.Question) != 1 || got.Question[0].Name != tc.qname || got.Id != r.Id {
				t.Errorf("question %v id %d, want %s id %d", got.Question, got.Id, tc.qname, r.Id)
			}
			var data []string
			for _, rr := range got.Answer {
				if txt, ok := rr.(*dns.TXT); ok && txt.Txt[0] == "next" {
					data = append(data, "next")
					continue
				}
				fields := strings.Fields(rr.String())
				data = append(data, strings.Join(fields[3:], " "))
				if rr.Header().Rrtype == dns.TypeCNAME && rr.Header().Name != tc.qname {
					t.Errorf("CNAME owner %s, want the asked name %s", rr.Header().Name, tc.qname)
				}
			}
			for _, rr := range got.Answer {
				if tc.ttl0 && rr.Header().Ttl != 0 {
					t.Errorf("TTL %d on %s, want 0 (the target's)", rr.Header().Ttl, rr.Header().Name)
				}
			}
			if got.AuthenticatedData && len(got.Answer) > 0 && got.Answer[0].Header().Rrtype == dns.TypeCNAME {
				t.Errorf("AD set on a synthesized CNAME answer")
			}
			if fmt.Sprint(data) != fmt.Sprint(tc.want) {
				t.Errorf("answer %v, want %v", data, tc.want)
			}
			if len(w.asked) != tc.asked {
				t.Errorf("resolved %d candidates %v, want %d", len(w.asked), w.asked, tc.asked)
			}
		})
	}
}

// TestNestedLookupsAreNotExpanded: the candidates a query expands into come back through the
// server; they must reach the next plugin as they are.
func TestNestedLookupsAreNotExpanded(t *testing.T) {
	s := &SearchPath{Next: nextHandler, config: config{zones: []string{"."}, clusterDomain: "cluster.local"},
		pods: pods{clientPod("ns1", "10.1.0.50")}, resolver: newWorld()}
	r := new(dns.Msg)
	r.SetQuestion("web.ns1.ns1.svc.cluster.local.", dns.TypeA)
	rec := dnstest.NewRecorder(&clientWriter{ip: "10.1.0.50"})
	ctx := context.WithValue(context.Background(), expandingKey{}, true)
	s.ServeDNS(ctx, rec, r)
	if len(rec.Msg.Answer) != 1 || rec.Msg.Answer[0].Header().Rrtype != dns.TypeTXT {
		t.Fatalf("nested lookup was expanded: %v", rec.Msg.Answer)
	}
}

func TestSearchList(t *testing.T) {
	long := strings.Repeat("a", 251) + ".io" // 254 characters
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf("d%d.example", i)
	}
	var wide []string
	for i := 0; i < 30; i++ {
		wide = append(wide, strings.Repeat("w", 60)+fmt.Sprintf("%02d.example", i))
	}
	tests := []struct {
		name   string
		policy corev1.DNSPolicy
		extra  []string
		host   []string
		want   []string
	}{
		{"ClusterFirst", corev1.DNSClusterFirst, nil, []string{"corp.example"},
			[]string{"ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"}},
		{"ClusterFirst with dnsConfig, deduplicated", corev1.DNSClusterFirst, []string{"Corp.Example.", "team.example"}, []string{"corp.example"},
			[]string{"ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "team.example"}},
		{"Default: the host's list", corev1.DNSDefault, []string{"team.example"}, []string{"corp.example"}, []string{"corp.example", "team.example"}},
		{"None: only dnsConfig", corev1.DNSNone, []string{"a.example", "b.example"}, []string{"corp.example"}, []string{"a.example", "b.example"}},
		{"at most 32 domains", corev1.DNSNone, many, nil, many[:32]},
		{"names over 253 characters dropped", corev1.DNSNone, []string{long, "ok.example"}, nil, []string{"ok.example"}},
		{"line at most 2048 characters", corev1.DNSNone, wide, nil, wide[:28]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := clientPod("ns1", "10.1.0.50", func(p *corev1.Pod) {
				p.Spec.DNSPolicy = tc.policy
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: tc.extra}
			})
			got, ok := searchList(kube.DNSClientOf(kube.TrimPod(p)), "cluster.local.", tc.host)
			if !ok || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v (ok=%v), want %v", got, ok, tc.want)
			}
			if n := len(strings.Join(got, " ")); n > maxSearchListLen {
				t.Errorf("search line %d characters", n)
			}
		})
	}
}

// Candidates that answer slowly: past the budget the query goes on unexpanded at once, instead
// of keeping the client waiting past its own timeout.
func TestExpansionBudget(t *testing.T) {
	w := newWorld()
	w.slow = 150 * time.Millisecond
	s := &SearchPath{Next: nextHandler, config: config{zones: []string{"."}, clusterDomain: "cluster.local", budget: 200 * time.Millisecond},
		hostSearches: []string{"corp.example"}, pods: pods{clientPod("ns1", "10.1.0.50")}, resolver: w}
	r := new(dns.Msg)
	r.SetQuestion("example.com.ns1.svc.cluster.local.", dns.TypeA) // five candidates: 750 ms
	rec := dnstest.NewRecorder(&clientWriter{ip: "10.1.0.50"})
	start := time.Now()
	if _, err := s.ServeDNS(context.Background(), rec, r); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if len(rec.Msg.Answer) != 1 || rec.Msg.Answer[0].(*dns.TXT).Txt[0] != "next" {
		t.Fatalf("answer %v, want the query passed on unexpanded", rec.Msg.Answer)
	}
	if took > 600*time.Millisecond {
		t.Fatalf("answered after %v: the walk's 750 ms, not the 200 ms budget", took)
	}
}
