package nodecache

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/plugin/nodecache/nodesetup"
	"github.com/clusterdns/clusterdns/plugin/nodecache/transport"
	"github.com/coredns/caddy"
)

// check is the one assertion helper of the package's tests.
func check(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func TestParseStanza(t *testing.T) {
	tests := []struct {
		name  string
		input string
		check func(t *testing.T, cfg config)
	}{
		{"defaults", "nodecache {\n listen 169.254.20.10\n upstream 10.96.0.10\n}", func(t *testing.T, cfg config) {
			check(t, "listen", cfg.listen, []string{"169.254.20.10"})
			check(t, "iface", cfg.iface, "clusterdns0")
			check(t, "filter", cfg.packetFilter, nodesetup.FilterNftables)
			check(t, "upstreams", cfg.upstreams, []transport.Line{{Proto: "tcp", Addrs: []string{"10.96.0.10:53"}}})
			check(t, "success", []any{cfg.successCap, cfg.successTTL}, []any{9984, 30 * time.Second})
			check(t, "denial", []any{cfg.denialCap, cfg.denialTTL}, []any{9984, 5 * time.Second})
			check(t, "timeout", cfg.timeout, transport.DefaultTimeout)
			check(t, "pool", []any{cfg.maxConcurrent, cfg.maxAge}, []any{transport.DefaultMaxConcurrent, transport.DefaultMaxAge})
			check(t, "memory", combineLimits(limits{}, cfg).memoryBound(), int64(defaultMaxMemory))
		}},
		{"pipelined upstream", "nodecache {\n listen 169.254.20.10\n upstream pipelined 10.96.0.20:5353\n upstream tcp 10.96.0.20\n}", func(t *testing.T, cfg config) {
			check(t, "upstreams", cfg.upstreams, []transport.Line{{Proto: "pipelined", Addrs: []string{"10.96.0.20:5353"}}, {Proto: "tcp", Addrs: []string{"10.96.0.20:53"}}})
		}},
		{"bracketed addresses", "nodecache {\n listen 169.254.20.10\n upstream pipelined [10.96.0.20]:5353 [fd00::20]:5353\n}", func(t *testing.T, cfg config) {
			check(t, "upstreams", cfg.upstreams, []transport.Line{{Proto: "pipelined", Addrs: []string{"10.96.0.20:5353", "[fd00::20]:5353"}}})
		}},
		{"v4 and v6 in one token", "nodecache {\n listen \"169.254.20.10 fd00::a9fe:140a\"\n upstream udp 1.1.1.1 8.8.8.8:5353\n}", func(t *testing.T, cfg config) {
			check(t, "listen", cfg.listen, []string{"169.254.20.10", "fd00::a9fe:140a"})
			check(t, "upstreams", cfg.upstreams, []transport.Line{{Proto: "udp", Addrs: []string{"1.1.1.1:53", "8.8.8.8:5353"}}})
		}},
		{"everything", `nodecache {
			listen 169.254.20.10,fd00::a
			interface lo
			packet_filter iptables
			keep_on_exit
			upstream tcp 10.96.0.10:53
			upstream udp 10.0.0.2
			success 100 10
			denial 50 2
			prefetch 5 30s 20%
			serve_stale 1h
			max_memory 16MiB
			timeout 500ms
			health_check 250ms
			health_zone Cluster.Local
			max_concurrent 64
			max_age 10s
			repair 5s
		}`, func(t *testing.T, cfg config) {
			check(t, "listen", cfg.listen, []string{"169.254.20.10", "fd00::a"})
			check(t, "iface/filter/keep", []any{cfg.iface, cfg.packetFilter, cfg.keepOnExit}, []any{"lo", nodesetup.FilterIptables, true})
			check(t, "upstream lines", len(cfg.upstreams), 2)
			check(t, "success", []any{cfg.successCap, cfg.successTTL}, []any{100, 10 * time.Second})
			check(t, "denial", []any{cfg.denialCap, cfg.denialTTL}, []any{50, 2 * time.Second})
			check(t, "prefetch", []any{cfg.prefetchAmount, cfg.prefetchDuration, cfg.prefetchPercent}, []any{5, 30 * time.Second, 20})
			check(t, "serve_stale", cfg.serveStale, time.Hour)
			check(t, "max_memory", cfg.maxMemory, int64(16<<20))
			check(t, "timeouts", []any{cfg.timeout, cfg.healthCheck}, []any{500 * time.Millisecond, 250 * time.Millisecond})
			check(t, "health_zone", cfg.healthZone, "cluster.local.")
			check(t, "pool", []any{cfg.maxConcurrent, cfg.maxAge}, []any{64, 10 * time.Second})
			check(t, "repair", cfg.repairEvery, 5*time.Second)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseStanza(caddy.NewTestController("dns", tc.input))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

// The health checks ask health_zone's SOA when given, else the block's zone's; a root block
// without it asks `. NS` ("").
func TestHealthZoneOfBlock(t *testing.T) {
	check(t, "cluster block", healthZone(config{}, []string{"cluster.local.", "in-addr.arpa."}), "cluster.local.")
	check(t, "root block", healthZone(config{}, []string{"."}), "")
	check(t, "root block with health_zone", healthZone(config{healthZone: "cluster.local."}, []string{"."}), "cluster.local.")
}

// A malformed stanza fails setup with the plugin's name, the file and the line.
func TestSetupErrors(t *testing.T) {
	tests := []struct {
		name, input, line, says string
	}{
		{"argument on first line", "nodecache extra {\n listen 127.0.0.1\n}", "Testfile:1", "no arguments"},
		{"no listen", "nodecache {\n upstream 10.0.0.1\n}", "Testfile:3", "listen"},
		{"no upstream", "nodecache {\n listen 127.0.0.1\n}", "Testfile:3", "upstream"},
		{"bad listen", "nodecache {\n listen 127.0.0.1\n listen nope\n}", "Testfile:3", "not an IP"},
		{"unknown option", "nodecache {\n listen 127.0.0.1\n upstream 10.0.0.1\n frobnicate\n}", "Testfile:4", "unknown option"},
		{"bad filter", "nodecache {\n listen 127.0.0.1\n packet_filter pf\n}", "Testfile:3", "nftables, iptables or none"},
		{"bad capacity", "nodecache {\n listen 127.0.0.1\n success -1\n}", "Testfile:3", "positive integer"},
		{"bad prefetch", "nodecache {\n listen 127.0.0.1\n prefetch 10 1m 10\n}", "Testfile:3", "percentage"},
		{"bad stale", "nodecache {\n listen 127.0.0.1\n serve_stale forever\n}", "Testfile:3", "duration"},
		{"bad memory", "nodecache {\n listen 127.0.0.1\n max_memory lots\n}", "Testfile:3", "size"},
		{"bad timeout", "nodecache {\n listen 127.0.0.1\n timeout 0s\n}", "Testfile:3", "positive"},
		{"empty upstream", "nodecache {\n listen 127.0.0.1\n upstream tcp\n}", "Testfile:3", "ADDRESS"},
		{"bad max_concurrent", "nodecache {\n listen 127.0.0.1\n max_concurrent 0\n}", "Testfile:3", "positive integer"},
		{"bad max_age", "nodecache {\n listen 127.0.0.1\n max_age -1s\n}", "Testfile:3", "duration"},
		{"health_zone root", "nodecache {\n listen 127.0.0.1\n health_zone .\n}", "Testfile:3", "not a zone name"},
		{"health_zone twice", "nodecache {\n listen 127.0.0.1\n health_zone a b\n}", "Testfile:3", "want one zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := setup(caddy.NewTestController("dns", tc.input))
			if err == nil {
				t.Fatal("setup accepted a malformed stanza")
			}
			msg := err.Error()
			check(t, "names the plugin: "+msg, strings.Contains(msg, "plugin/nodecache"), true)
			check(t, "names file and line: "+msg, strings.Contains(msg, tc.line), true)
			check(t, "says what is wrong: "+msg, strings.Contains(msg, tc.says), true)
		})
	}
}

// Corefile.nodelocal's nodecache stanzas parse once the documented environment is set.
func TestCorefileNodelocalParses(t *testing.T) {
	b, err := os.ReadFile("../../Corefile.nodelocal")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LOCAL_IPS": "169.254.20.10 fd00::a9fe:140a", "CLUSTER_DNS": "10.96.0.10:53", "CLUSTER_DNS_PIPELINED": "[10.96.0.10]:5353", "NODE_NAME": "n1"}
	text := regexp.MustCompile(`\{\$(\w+)\}`).ReplaceAllStringFunc(string(b), func(s string) string {
		return `"` + env[s[2:len(s)-1]] + `"`
	})
	stanzas := 0
	for i := strings.Index(text, "nodecache {"); i >= 0; i = strings.Index(text, "nodecache {") {
		text = text[i:]
		end := strings.Index(text, "}")
		stanza := text[:end+1]
		text = text[end+1:]
		if _, err := parseStanza(caddy.NewTestController("dns", stanza)); err != nil {
			t.Errorf("stanza %d: %v\n%s", stanzas+1, err, stanza)
		}
		stanzas++
	}
	check(t, "nodecache stanzas in Corefile.nodelocal", stanzas, 2)
}

// The process cache takes the largest capacities and the smallest max_memory a block sets; a
// block that does not set max_memory does not shrink another's.
func TestCombineLimits(t *testing.T) {
	cluster, dot := defaultConfig(), defaultConfig()
	cluster.maxMemory = 256 << 20
	for _, tc := range []struct {
		name   string
		blocks []config
		want   int64
	}{
		{"cluster block first", []config{cluster, dot}, 256 << 20},
		{"cluster block last", []config{dot, cluster}, 256 << 20},
		{"none sets it", []config{dot, dot}, defaultMaxMemory},
		{"two set it: the smaller", []config{cluster, func() config { c := cluster; c.maxMemory = 32 << 20; return c }()}, 32 << 20},
	} {
		var l limits
		for _, b := range tc.blocks {
			l = combineLimits(l, b)
		}
		check(t, tc.name, l.memoryBound(), tc.want)
	}
}
