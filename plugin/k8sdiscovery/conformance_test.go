package k8sdiscovery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/test/conformance"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"k8s.io/client-go/kubernetes"
)

// outsideWorld answers the ExternalName target as the rest of a server's chain would.
type outsideWorld struct{}

func (outsideWorld) Lookup(_ context.Context, _ request.Request, name string, typ uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, typ)
	if strings.EqualFold(name, "www.example.com.") && typ == dns.TypeA {
		rr, _ := dns.NewRR(conformance.OutsideA)
		m.Answer = []dns.RR{rr}
	}
	return m, nil
}

// startFromManifests runs the plugin on a folder of manifests, through the informer path, and
// waits for the first sync.
func startFromManifests(t testing.TB, cfg config, dir string) *K8sDiscovery {
	t.Helper()
	cfg.manifests = dir
	if len(cfg.zones) == 0 {
		cfg.zones = []string{"cluster.local.", "in-addr.arpa."}
	}
	k := newK8sDiscovery(cfg)
	k.upstream = outsideWorld{}
	client, err := newManifestSource(dir, k.stopCh)
	if err != nil {
		t.Fatal(err)
	}
	startWithClient(t, k, client)
	return k
}

func startWithClient(t testing.TB, k *K8sDiscovery, client kubernetes.Interface) {
	t.Helper()
	newWatcher(k, client).run(k.stopCh)
	t.Cleanup(k.stop)
	waitFor(t, "first sync", k.synced.Load)
}

// waitFor polls cond until it holds or five seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func conformanceConfig() config {
	cfg := defaultConfig()
	cfg.zones = []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}
	cfg.podMode = podsVerified
	return cfg
}

func ask(k *K8sDiscovery, qname string, qtype uint16) *dns.Msg { return askHandler(k, qname, qtype) }

// askHandler asks a handler one question and returns what it wrote, or the error reply the
// server would write for the rcode it returned.
func askHandler(h plugin.Handler, qname string, qtype uint16) *dns.Msg {
	r := new(dns.Msg)
	r.SetQuestion(qname, qtype)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, _ := h.ServeDNS(context.Background(), rec, r)
	if rec.Msg == nil { // the server would have written this error reply
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		return m
	}
	return rec.Msg
}

func TestConformance(t *testing.T) {
	k := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	for _, c := range conformance.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if err := conformance.Check(ask(k, c.Qname, c.Qtype), c); err != nil {
				t.Error(err)
			}
			// the same question in other letters gets the same answer, owners in the asked case
			upper := conformance.WithCase(c, strings.ToUpper(c.Qname))
			if err := conformance.Check(ask(k, upper.Qname, upper.Qtype), upper); err != nil {
				t.Errorf("upper case: %v", err)
			}
		})
	}
}

// TestAAndAAAAAgree: an A and an AAAA query for one name never disagree on NXDOMAIN vs NOERROR.
func TestAAndAAAAAgree(t *testing.T) {
	k := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	for _, c := range conformance.Cases {
		if c.Qtype != dns.TypeA && c.Qtype != dns.TypeAAAA {
			continue
		}
		a, aaaa := ask(k, c.Qname, dns.TypeA), ask(k, c.Qname, dns.TypeAAAA)
		if (a.Rcode == dns.RcodeNameError) != (aaaa.Rcode == dns.RcodeNameError) {
			t.Errorf("%s: A says %s, AAAA says %s", c.Qname, dns.RcodeToString[a.Rcode], dns.RcodeToString[aaaa.Rcode])
		}
	}
}

func waitShort() { time.Sleep(5 * time.Millisecond) }
