package e2e

// The drop-in check: a Corefile operators already run, served by upstream's kubernetes plugin
// (in this binary, for migration) and, with kubernetes renamed, by k8sdiscovery, on the same API
// server and world, must answer the same questions the same way, but where a documented
// decision says otherwise (stockExceptions).

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// startCorefile starts ./coredns with a Corefile made by conf from the DNS port and the ready
// port, and waits until it is ready. It is stopped when the test ends.
func startCorefile(t *testing.T, name string, conf func(port, readyPort int) string) *dnsServer {
	t.Helper()
	port, readyPort := mustFreePort(), mustFreePort()
	s := &dnsServer{addr: fmt.Sprintf("127.0.0.1:%d", port), readyPort: readyPort,
		readyURL: fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)}
	s.corefile = filepath.Join(harness.dir, name+".Corefile")
	if err := os.WriteFile(s.corefile, []byte(conf(port, readyPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.proc, err = startProcess(harness.dir, name, harness.coredns, "-conf", s.corefile); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.proc.Stop(200 * time.Millisecond) }) // the stock Corefiles have a 5 s lameduck
	if err := s.waitReady(60 * time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, s.proc.LogTail(20))
	}
	// /ready can answer before the DNS listeners are open (the ready plugin starts first): wait
	// for a reply on the DNS port too.
	err = s.proc.WaitFor(10*time.Second, func() error {
		_, err := s.query("udp", "listening.clusterdns-e2e.invalid.", dns.TypeA, 0)
		return err
	})
	if err != nil {
		t.Fatalf("%s: ready, but the DNS port does not answer: %v\n%s", name, err, s.proc.LogTail(20))
	}
	return s
}

// bothReplies asks two servers one question ("NAME TYPE") over UDP and returns their replies as
// replyText writes them.
func bothReplies(a, b *dnsServer, q string) (ta, tb string, err error) {
	qname, qtype := dnsCase{q: q}.question()
	ra, err1 := a.query("udp", qname, qtype, udpSize)
	rb, err2 := b.query("udp", qname, qtype, udpSize)
	if err1 != nil || err2 != nil {
		return "", "", fmt.Errorf("%s: %s: %v, %s: %v", q, a.corefile, err1, b.corefile, err2)
	}
	return replyText(ra), replyText(rb), nil
}

var serialField = regexp.MustCompile(`(\tSOA\t\S+ \S+ )\d+`)

// replyText is a reply in a form two servers can be compared by: the rcode, then each section's
// records (TTL included) sorted, with SOA serials left out (each server numbers its own).
func replyText(r *dns.Msg) string {
	var b strings.Builder
	b.WriteString(dns.RcodeToString[r.Rcode])
	for _, sec := range []struct {
		name string
		rrs  []dns.RR
	}{{"answer", r.Answer}, {"authority", r.Ns}, {"additional", r.Extra}} {
		var lines []string
		for _, rr := range sec.rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			lines = append(lines, serialField.ReplaceAllString(rr.String(), "${1}SERIAL"))
		}
		slices.Sort(lines)
		if len(lines) > 0 {
			fmt.Fprintf(&b, "\n  %s:\n    %s", sec.name, strings.Join(lines, "\n    "))
		}
	}
	return b.String()
}

// stockQuestions asks about every kind of name of the records fixture (records_test.go) and the
// names around them that must not exist.
var stockQuestions = []string{
	"cluster.local. SOA", "cluster.local. NS", "cluster.local. A", "dns-version.cluster.local. TXT",
	"ns.dns.cluster.local. A", "svc.cluster.local. A", "pod.cluster.local. A", "ns1.svc.cluster.local. A",
	"nosuchns.svc.cluster.local. A",
	"web.ns1.svc.cluster.local. A", "web.ns1.svc.cluster.local. AAAA", "web.ns1.svc.cluster.local. SRV",
	"web.ns1.svc.cluster.local. MX", "WeB.Ns1.SVC.Cluster.Local. A",
	"_http._tcp.web.ns1.svc.cluster.local. SRV", "_dns._udp.web.ns1.svc.cluster.local. SRV",
	"_nope._tcp.web.ns1.svc.cluster.local. SRV", "10-1-0-5.web.ns1.svc.cluster.local. A",
	"10-1-0-6.web.ns1.svc.cluster.local. A",
	"single.ns1.svc.cluster.local. SRV", "proto.ns1.svc.cluster.local. SRV",
	"_x-sctp._sctp.proto.ns1.svc.cluster.local. SRV",
	"dual.ns1.svc.cluster.local. A", "dual.ns1.svc.cluster.local. AAAA",
	"db.ns1.svc.cluster.local. A", "db.ns1.svc.cluster.local. AAAA", "db.ns1.svc.cluster.local. SRV",
	"_pg._tcp.db.ns1.svc.cluster.local. SRV", "db-0.db.ns1.svc.cluster.local. A", "db-0.db.ns1.svc.cluster.local. AAAA",
	"db-1.db.ns1.svc.cluster.local. A", "db-4.db.ns1.svc.cluster.local. A", "10-1-0-7.db.ns1.svc.cluster.local. A",
	"fd00-10-1--7.db.ns1.svc.cluster.local. AAAA",
	"empty.ns1.svc.cluster.local. A", "peers.ns1.svc.cluster.local. A",
	"ext.ns1.svc.cluster.local. A", "ext.ns1.svc.cluster.local. CNAME", "ext-int.ns1.svc.cluster.local. A",
	"ext-ip.ns1.svc.cluster.local. A", "ext-txt.ns1.svc.cluster.local. TXT", "chain-3.ns1.svc.cluster.local. A",
	"api.ns2.svc.cluster.local. A", "api-0.api.ns2.svc.cluster.local. A",
	"kube-dns.kube-system.svc.cluster.local. A", "nosuch.ns1.svc.cluster.local. A",
	"10-1-0-60.ns1.pod.cluster.local. A", "10-1-0-99.ns1.pod.cluster.local. A",
	"20.0.96.10.in-addr.arpa. PTR", "8.0.1.10.in-addr.arpa. PTR", "5.0.1.10.in-addr.arpa. PTR",
	"www.example.com. A",
}

// stockException is a question whose reply k8sdiscovery gives otherwise than upstream on
// purpose: why (where the decision is written) and, when only part of the reply may differ, mask:
// what it matches is blanked in both replies, which must then be the same.
type stockException struct {
	why  string
	mask *regexp.Regexp
	only string // the one Corefile it applies to; "" for all
	fold bool   // the replies must be the same but for the case of names
}

var (
	srvWeight = regexp.MustCompile(`\tSRV\t0 \d+ `)
	// ns.dns: upstream finds the DNS Service through the EndpointSlice that holds its own pod's
	// address (outside a pod, as here, none: NODATA); k8sdiscovery names the Service (dns_service).
	nsDNS = stockException{why: "docs/decisions.md: ns.dns.<zone> gets the cluster IPs of kube-system/kube-dns"}
	// upstream counts the records before it folds duplicates (a port on two protocols, an address
	// in two slices), so its weights do not add up to 100.
	weights = stockException{why: "docs/decisions.md: SRV weights 100 / number of records", mask: srvWeight}
)

var (
	// cache stands below k8sdiscovery in this binary (plugin.cfg, docs/decisions.md "deploy"):
	// above upstream's kubernetes, the stock Corefiles' cache gives every record of an answer
	// the answer's smallest TTL, capped at its own (30), and answers a name with the case of the
	// first query that filled it; k8sdiscovery's answers keep their TTLs and the asker's case.
	ttlField  = regexp.MustCompile(`\t\d+\tIN\t`)
	cacheTTL  = stockException{why: "docs/decisions.md: cache stands below k8sdiscovery; upstream's cache above kubernetes rewrites TTLs", mask: ttlField}
	cacheCase = stockException{why: "docs/decisions.md: cache stands below k8sdiscovery; upstream's cache above kubernetes answers in the case of the first asker", fold: true}
)

// stockExceptions are the questions answered otherwise on purpose; the first exception of a
// question that applies to the Corefile is taken.
var stockExceptions = map[string][]stockException{
	"cluster.local. NS":                      {nsDNS},
	"ns.dns.cluster.local. A":                {nsDNS},
	"proto.ns1.svc.cluster.local. SRV":       {weights},
	"db.ns1.svc.cluster.local. SRV":          {weights},
	"_pg._tcp.db.ns1.svc.cluster.local. SRV": {weights},
	"dns-version.cluster.local. TXT":         {cacheTTL},
	"WeB.Ns1.SVC.Cluster.Local. A":           {cacheCase},
	// operator.Corefile's k8s_external zone example.com takes www.example.com: NXDOMAIN.
	"ext.ns1.svc.cluster.local. A": {{why: "docs/decisions.md: an ExternalName answer takes its outside target's rcode (NXDOMAIN, RFC 6604)",
		mask: regexp.MustCompile(`^(NXDOMAIN|NOERROR)|\n  authority:\n.*SOA.*|\t\d+\tIN\t`), only: "operator"}, cacheTTL},
	// operator.Corefile serves ns1 only: 10.1.0.5 is also api-0 of ns2.
	"5.0.1.10.in-addr.arpa. PTR": {{why: "docs/decisions.md: namespaces not served have no PTRs", only: "operator"}},
	"ext-txt.ns1.svc.cluster.local. TXT": {{why: "docs/decisions.md: an ExternalName chain in the zone brings the last name's records of the asked type, " +
		"whatever the type (upstream follows it for addresses only and answers NODATA)"}},
}

// exceptionFor is the exception of question q that applies to the Corefile name.
func exceptionFor(q, name string) (stockException, bool) {
	for _, ex := range stockExceptions[q] {
		if ex.only == "" || ex.only == name {
			return ex, true
		}
	}
	return stockException{}, false
}

// TestStockCorefilesAnswerAsUpstream serves each Corefile of test/compat/testdata twice, as it is
// (upstream kubernetes) and renamed (k8sdiscovery), and compares every answer.
func TestStockCorefilesAnswerAsUpstream(t *testing.T) {
	recordsFixture(t)
	// operator.Corefile serves only namespaces labelled dns=served: ns1 is, ns2 is not.
	patch := []byte(`{"metadata":{"labels":{"dns":"served"}}}`)
	if _, err := harness.client.CoreV1().Namespaces().Patch(ctx(), "ns1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		harness.client.CoreV1().Namespaces().Patch(ctx(), "ns1", types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/labels/dns"}]`), metav1.PatchOptions{})
	})
	files, err := filepath.Glob(filepath.Join(harness.root, "test/compat/testdata/*.Corefile"))
	if err != nil || len(files) < 5 {
		t.Fatalf("stock Corefiles: %v %v", files, err)
	}
	var table []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".Corefile")
		t.Run(name, func(t *testing.T) {
			up := startCorefile(t, "stock-"+name+"-upstream", func(p, r int) string { return localized(string(b), p, r, false) })
			ours := startCorefile(t, "stock-"+name+"-k8sdiscovery", func(p, r int) string { return localized(string(b), p, r, true) })
			same, excepted := 0, 0
			for _, q := range stockQuestions {
				tu, to, err := bothReplies(up, ours, q)
				if err != nil {
					t.Error(err)
					continue
				}
				ex, ok := exceptionFor(q, name)
				switch {
				case tu == to:
					same++
				case ok && ex.mask != nil && ex.mask.ReplaceAllString(tu, "") != ex.mask.ReplaceAllString(to, ""),
					ok && ex.fold && !strings.EqualFold(tu, to):
					t.Errorf("%s: differs beyond what %q allows:\nupstream: %s\nk8sdiscovery: %s", q, ex.why, tu, to)
				case ok:
					excepted++
					t.Logf("%s differs, as decided (%s):\nupstream: %s\nk8sdiscovery: %s", q, ex.why, tu, to)
				default:
					t.Errorf("%s:\nupstream: %s\nk8sdiscovery: %s", q, tu, to)
				}
			}
			table = append(table, fmt.Sprintf("%-10s %3d questions: %3d the same, %d differ as documented, %d differ", name,
				len(stockQuestions), same, excepted, len(stockQuestions)-same-excepted))
		})
	}
	logf("stock Corefiles, upstream kubernetes vs k8sdiscovery on the same world:\n  %s", strings.Join(table, "\n  "))
}

// localized fits a stock Corefile to the harness: its ports on 127.0.0.1, the API server's
// kubeconfig, the test upstream in place of /etc/resolv.conf, and with rename, k8sdiscovery in
// place of kubernetes (as test/compat renames it).
func localized(conf string, port, readyPort int, rename bool) string {
	repl := []struct{ re, with string }{
		{`(?m)^\.:53 \{`, fmt.Sprintf(".:%d {\n    bind 127.0.0.1", port)},
		{`(?m)^(\s*)health(\s)`, fmt.Sprintf("${1}health 127.0.0.1:%d${2}", mustFreePort())},
		{`(?m)^(\s*)ready\s*$`, fmt.Sprintf("${1}ready 127.0.0.1:%d", readyPort)},
		{`(?m)^(\s*)prometheus .*$`, fmt.Sprintf("${1}prometheus 127.0.0.1:%d", mustFreePort())},
		{`forward \. /etc/resolv\.conf`, fmt.Sprintf("forward . 127.0.0.1:%d", harness.upstreamPort)},
		{`(?m)^(\s*)kubernetes (.*)\{$`, "${1}kubernetes ${2}{\n${1}    kubeconfig " + harness.cp.kubeconfig},
	}
	for _, r := range repl {
		conf = regexp.MustCompile(r.re).ReplaceAllString(conf, r.with)
	}
	if !regexp.MustCompile(`(?m)^\s*ready 127`).MatchString(conf) { // the test waits on /ready
		conf = strings.Replace(conf, "    bind 127.0.0.1\n", fmt.Sprintf("    bind 127.0.0.1\n    ready 127.0.0.1:%d\n", readyPort), 1)
	}
	if rename {
		conf = regexp.MustCompile(`(?m)^(\s*)kubernetes(\s)`).ReplaceAllString(conf, "${1}k8sdiscovery${2}")
		conf = regexp.MustCompile(`(?m)^(\s*)k8s_external(\s)`).ReplaceAllString(conf, "${1}k8sdiscovery_external${2}")
		conf = strings.ReplaceAll(conf, "@kubernetes", "@k8sdiscovery")
	}
	return conf
}
