package k8sdiscovery

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/clusterdns/clusterdns/internal/door"
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

// FuzzDoorAnswer sends arbitrary datagrams through the packet door's parse and answer over the
// conformance world: never a panic; an answer the door gives itself unpacks and is a reply to the
// question asked, with the query's ID.
func FuzzDoorAnswer(f *testing.F) {
	for _, c := range conformance.Cases {
		m := new(dns.Msg)
		m.SetQuestion(c.Qname, c.Qtype)
		m.SetEdns0(1232, true)
		if b, err := m.Pack(); err == nil {
			f.Add(b)
		}
	}
	from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzOnce.Do(func() {
			cfg := conformanceConfig()
			cfg.podMode = podsInsecure
			fuzzPlugin = startFromManifests(t, cfg, conformance.WorldDir())
		})
		var q door.Query
		if !door.ParseQuery(p, &q) {
			return // handed to CoreDNS's server as it came
		}
		zone := fuzzPlugin.matchZone(string(q.Name()))
		if zone == "" {
			return
		}
		a := &doorAnswerer{k: fuzzPlugin, zone: zone, label: "dns://fuzz"}
		out, v := a.answer(nil, &q, p, from, make([]byte, 0, 512))
		if v != door.Answered {
			return
		}
		r, m := new(dns.Msg), new(dns.Msg)
		if err := r.Unpack(p); err != nil {
			t.Fatalf("the door took a query that does not unpack: %v", err)
		}
		if err := m.Unpack(out); err != nil {
			t.Fatalf("the door's answer does not unpack: %v", err)
		}
		if m.Id != r.Id || len(m.Question) != 1 || m.Question[0] != r.Question[0] || !m.Response {
			t.Fatalf("answer %v does not answer %v", m, r)
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
