package door

import (
	"context"
	"testing"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

type named string

func (n named) Name() string { return string(n) }
func (n named) ServeDNS(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	return 0, nil
}

func TestReportingPlugin(t *testing.T) {
	for _, tc := range []struct {
		chain []string
		want  string
	}{
		{[]string{"prometheus", "errors", "k8sdiscovery"}, "errors"},
		{[]string{"errors", "prometheus", "nodecache"}, "nodecache"},
		{[]string{"errors", "nodecache"}, ""},
		{[]string{"prometheus"}, ""},
	} {
		var hs []plugin.Handler
		for _, n := range tc.chain {
			hs = append(hs, named(n))
		}
		if got := ReportingPlugin(hs); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.chain, got, tc.want)
		}
	}
}

// A server that checks TSIG gets no door: its hand-off and TCP servers would not check the MAC.
func TestKeyForRefusesTSIG(t *testing.T) {
	for _, tc := range []struct {
		name string
		tsig map[string]string
		ok   bool
	}{
		{"plain", nil, true},
		{"TSIG", map[string]string{"key.": "c2VjcmV0"}, false},
	} {
		cfg := &dnsserver.Config{Zone: ".", Port: "1053", ListenHosts: []string{"127.0.0.1"}, Transport: "dns", TsigSecret: tc.tsig}
		s, err := dnsserver.NewServer("dns://127.0.0.1:1053", []*dnsserver.Config{cfg})
		if err != nil {
			t.Fatal(err)
		}
		key, why, ok := KeyFor(s, cfg)
		if ok != tc.ok || key != "127.0.0.1:1053" || (ok && why != "") {
			t.Errorf("%s: %q %q %v, want ok %v", tc.name, key, why, ok, tc.ok)
		}
	}
}

func TestListenKey(t *testing.T) {
	for addr, want := range map[string]string{
		"dns://127.0.0.1:53":  "127.0.0.1:53",
		"dns://:53":           ":53",
		"dns://[fd00::1]:53":  "[fd00::1]:53",
		"tls://127.0.0.1:853": "",
	} {
		got, ok := ListenKey(addr)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", addr, got, ok, want)
		}
	}
}
