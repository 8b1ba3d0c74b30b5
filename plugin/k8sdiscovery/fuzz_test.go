package k8sdiscovery

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/clusterdns/clusterdns/test/conformance"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

var (
	fuzzOnce   sync.Once
	fuzzPlugin *K8sDiscovery
)

// FuzzServeDNS sends arbitrary messages through the handler over the conformance world: it must
// never panic, and whatever it writes must be a reply to the question asked.
func FuzzServeDNS(f *testing.F) {
	for _, c := range conformance.Cases {
		m := new(dns.Msg)
		m.SetQuestion(c.Qname, c.Qtype)
		if b, err := m.Pack(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		fuzzOnce.Do(func() {
			cfg := conformanceConfig()
			cfg.podMode = podsInsecure
			fuzzPlugin = startFromManifests(t, cfg, conformance.WorldDir())
		})
		r := new(dns.Msg)
		if err := r.Unpack(wire); err != nil || len(r.Question) != 1 {
			return // the server answers FORMERR before any plugin sees these
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		fuzzPlugin.ServeDNS(context.Background(), rec, r)
		if rec.Msg != nil {
			if len(rec.Msg.Question) != 1 || rec.Msg.Question[0] != r.Question[0] || rec.Msg.Id != r.Id {
				t.Fatalf("reply %v does not answer %v", rec.Msg.Question, r.Question)
			}
			if _, err := rec.Msg.Pack(); err != nil {
				t.Fatalf("reply does not pack: %v", err)
			}
		}
	})
}

// FuzzParseStanza: any stanza text either parses or fails with an error; never a panic.
func FuzzParseStanza(f *testing.F) {
	f.Add("k8sdiscovery cluster.local {\n pods verified\n ttl 30\n fallthrough in-addr.arpa\n}")
	f.Add("k8sdiscovery {\nkubeconfig a b c\n}")
	f.Add("k8sdiscovery {\nlabels a in (b,c)\n}")
	f.Fuzz(func(t *testing.T, input string) {
		c := caddy.NewTestController("dns", input)
		c.ServerBlockKeys = []string{"cluster.local:53"}
		parseStanza(c)
	})
}

// FuzzManifests: a manifests file of any content loads or fails with an error; never a panic.
func FuzzManifests(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(conformance.WorldDir(), "*.yaml"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: []\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), "m.yaml")
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifestFile(path)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.obj.GetName() == "" {
				t.Fatalf("%s loaded without a name", o.gvr.Resource)
			}
		}
	})
}

// FuzzNames: reverse and dashed-IP names parse or are rejected; an accepted one round-trips.
func FuzzNames(f *testing.F) {
	f.Add("10-1-0-5")
	f.Add("fd00-1--0")
	f.Add("5.0.1.10.in-addr.arpa.")
	f.Fuzz(func(t *testing.T, s string) {
		if ip, ok := parseDashedIP(s); ok {
			if back, ok2 := parseDashedIP(dashedIP(ip)); !ok2 || back != ip {
				t.Fatalf("%q → %v → %q does not round-trip", s, ip, dashedIP(ip))
			}
		}
		addressFromReverse(s)
	})
}
