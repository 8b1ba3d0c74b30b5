package pipelining

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
)

func TestSetup(t *testing.T) {
	for _, tc := range []struct {
		input, wantErr string
		addr           string
		max            int
	}{
		{input: "pipelining 10.96.0.10:5353", addr: "10.96.0.10:5353", max: 128},
		{input: "pipelining [fd00::a]:5353 16", addr: "[fd00::a]:5353", max: 16},
		{input: "pipelining", wantErr: "want `pipelining ADDRESS:PORT [MAX]`"},
		{input: "pipelining 10.96.0.10", wantErr: "want an IP address and a port"},
		{input: "pipelining dns.local:53", wantErr: "want an IP address and a port"},
		{input: "pipelining 10.96.0.10:0", wantErr: "want an IP address and a port"},
		{input: "pipelining 10.96.0.10:70000", wantErr: "not a number from 1 to 65535"},
		{input: "pipelining 10.96.0.10:5353 0", wantErr: "MAX: want a number of queries from 1 to 65535"},
		{input: "pipelining 10.96.0.10:5353 {\nmax 3\n}", wantErr: "want `pipelining ADDRESS:PORT [MAX]`"},
		{input: "pipelining 127.0.0.1:53", wantErr: "is this block's own address"},
	} {
		c := caddy.NewTestController("dns", tc.input)
		cfg := dnsserver.GetConfig(c)
		cfg.ListenHosts, cfg.Port = []string{"127.0.0.1"}, "53"
		err := setup(c)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tc.input, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.input, err)
			continue
		}
		c2 := caddy.NewTestController("dns", tc.input)
		p, err := parse(c2)
		if err != nil || p.addr != tc.addr || p.maxInFlight != tc.max {
			t.Errorf("%q: parsed %+v, %v; want %s, %d", tc.input, p, err, tc.addr, tc.max)
		}
	}
}
