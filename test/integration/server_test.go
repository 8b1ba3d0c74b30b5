// Package integration runs whole Corefiles in-process through CoreDNS's server, with the
// directive order of plugin.cfg, and asks them over real UDP and TCP sockets.
package integration

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/clusterdns/clusterdns/internal/plugincfg"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"

	// the plugins these tests' Corefiles use
	_ "github.com/clusterdns/clusterdns/plugin/k8sdiscovery"
	_ "github.com/clusterdns/clusterdns/plugin/searchpath"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/template"
)

var startMu sync.Mutex

func TestMain(m *testing.M) {
	f, err := os.Open("../../plugin.cfg")
	if err != nil {
		panic(err)
	}
	plugins, err := plugincfg.Parse(f)
	f.Close()
	if err != nil {
		panic(err)
	}
	dnsserver.Directives = dnsserver.Directives[:0]
	for _, p := range plugins {
		dnsserver.Directives = append(dnsserver.Directives, p.Name)
	}
	caddy.Quiet, dnsserver.Quiet = true, true
	os.Exit(m.Run())
}

// startServer runs a Corefile and returns its UDP and TCP addresses; it stops with the test.
func startServer(t *testing.T, corefile string) (udp, tcp string) {
	t.Helper()
	startMu.Lock()
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	startMu.Unlock()
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { inst.Stop() })
	srv := inst.Servers()[0]
	return srv.LocalAddr().String(), srv.Addr().String()
}

func normalizeRR(rr dns.RR) string { return strings.Join(strings.Fields(rr.String()), " ") }
