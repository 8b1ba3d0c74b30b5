package nodecache

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/plugin/nodecache/nodesetup"
	"github.com/clusterdns/clusterdns/plugin/nodecache/transport"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/plugin/pkg/parse"
	"github.com/miekg/dns"
)

const pluginName = "nodecache"

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

func setup(c *caddy.Controller) error {
	cfg, err := parseStanza(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	srv := dnsserver.GetConfig(c)
	port, err := strconv.ParseUint(srv.Port, 10, 16)
	if err != nil {
		return plugin.Error(pluginName, c.Errf("server port %q is not a number", srv.Port))
	}
	// The node cache owns the listen addresses of its server block, as the bind plugin does.
	srv.ListenHosts = cfg.listen

	tcfg := cfg.transport()
	tcfg.HealthZone = healthZone(cfg, blockZones(c.ServerBlockKeys))
	n := &NodeCache{config: cfg, node: theNode(cfg), upstreams: transport.NewGroup(cfg.upstreams, tcfg)}
	reloading := false
	c.OnStartup(func() error {
		if err := n.node.prepare(cfg, uint16(port)); err != nil {
			return plugin.Error(pluginName, err)
		}
		n.upstreams.Start()
		return nil
	})
	c.OnRestart(func() error { reloading = true; return nil })
	c.OnRestartFailed(func() error { reloading = false; return nil })
	c.OnShutdown(func() error {
		// On reload the new instance already serves and keeps the node as it is; on a real stop
		// the process first hands over or drains (once, whichever block gets here first).
		n.closing.Store(true)
		if !reloading {
			n.node.exit()
		}
		n.upstreams.Close() // its connections close once the queries in flight are answered
		return nil
	})
	// The packet door: CoreDNS's server hands itself over (an exported hook of its config) as
	// it starts serving UDP.
	instance := c.Context()
	n.node.addBlock(instance, &doorBlock{nc: n, cfg: srv, zones: blockZones(c.ServerBlockKeys), listen: listenKeys(cfg.listen, srv.Port)})
	door.OnServerStart(srv, func(s *dnsserver.Server, dw dns.DecorateWriter) { n.node.serverStarting(instance, s, srv, dw) })
	c.OnShutdown(func() error { n.node.dropBlocks(instance); return nil })
	srv.AddPlugin(func(next plugin.Handler) plugin.Handler {
		n.Next = next
		return n
	})
	return nil
}

// blockZones are the zones of a server block's keys, lower case and fully qualified.
func blockZones(keys []string) []string {
	var zones []string
	for _, k := range keys {
		for _, z := range plugin.Host(k).NormalizeExact() {
			zones = append(zones, strings.ToLower(z))
		}
	}
	return zones
}

// listenKeys are the "ip:port" keys of the listen addresses.
func listenKeys(listen []string, port string) map[string]bool {
	keys := map[string]bool{}
	for _, a := range listen {
		keys[net.JoinHostPort(net.ParseIP(a).String(), port)] = true
	}
	return keys
}

// config is the parsed nodecache stanza.
type config struct {
	listen       []string
	iface        string
	packetFilter string
	keepOnExit   bool
	upstreams    []transport.Line

	successCap, denialCap int
	successTTL, denialTTL time.Duration

	prefetchAmount   int
	prefetchDuration time.Duration
	prefetchPercent  int
	serveStale       time.Duration
	maxMemory        int64 // bytes, for the whole process

	timeout       time.Duration // one upstream attempt
	healthCheck   time.Duration // interval between upstream health checks
	healthZone    string        // the zone whose SOA the health checks ask ("": the block's)
	maxConcurrent int           // TCP connections (queries in flight) per upstream
	maxAge        time.Duration // a TCP connection to an upstream older than this is not reused
	maxFlights    int           // distinct questions of the block on their way upstream at once
	repairEvery   time.Duration // how often the interface and addresses are checked and put back
}

// healthZone is the zone whose SOA the block's health checks ask: health_zone's, else the
// block's first zone (cluster.local: the cluster DNS answers it itself); "" (`. NS`) for a root
// block without health_zone.
func healthZone(cfg config, zones []string) string {
	if cfg.healthZone != "" {
		return cfg.healthZone
	}
	if len(zones) > 0 && zones[0] != "." {
		return zones[0]
	}
	return ""
}

// defaultMaxFlights bounds a block's misses in flight: each holds a goroutine and an upstream
// socket (or TCP connection) until answered or timed out.
const defaultMaxFlights = 4096

// transport is the configuration of the block's upstream group.
func (c config) transport() transport.Config {
	return transport.Config{Timeout: c.timeout, HealthEvery: c.healthCheck, MaxConcurrent: c.maxConcurrent,
		MaxAge: c.maxAge, IdleTimeout: min(transport.DefaultIdleTimeout, c.maxAge), CloseGrace: transport.DefaultCloseGrace}
}

// defaultMaxMemory bounds the cache when no block says max_memory.
const defaultMaxMemory = 64 << 20

func defaultConfig() config {
	return config{
		iface:        "clusterdns0",
		packetFilter: nodesetup.FilterNftables,
		successCap:   9984, successTTL: 30 * time.Second,
		denialCap: 9984, denialTTL: 5 * time.Second,
		prefetchDuration: time.Minute, prefetchPercent: 10,
		timeout: transport.DefaultTimeout, healthCheck: transport.DefaultHealthEvery,
		maxConcurrent: transport.DefaultMaxConcurrent, maxAge: transport.DefaultMaxAge,
		maxFlights: defaultMaxFlights, repairEvery: nodesetup.RepairEvery,
	}
}

func parseStanza(c *caddy.Controller) (config, error) {
	cfg := defaultConfig()
	c.Next() // nodecache
	if args := c.RemainingArgs(); len(args) > 0 {
		return cfg, c.Errf("nodecache takes no arguments on its first line, got %q; options go in the block", args[0])
	}
	for c.NextBlock() {
		switch opt := c.Val(); opt {
		case "listen":
			// One argument may hold several addresses ("{$LOCAL_IPS}" expands to a single token).
			var args []string
			for _, a := range c.RemainingArgs() {
				args = append(args, strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })...)
			}
			if len(args) == 0 {
				return cfg, c.Errf("listen: want one or more IP addresses")
			}
			for _, a := range args {
				if net.ParseIP(a) == nil {
					return cfg, c.Errf("listen: %q is not an IP address", a)
				}
			}
			cfg.listen = append(cfg.listen, args...)
		case "interface":
			if !c.NextArg() {
				return cfg, c.Errf("interface: want an interface name")
			}
			cfg.iface = c.Val()
			if c.NextArg() {
				return cfg, c.Errf("interface: want one interface name, got more")
			}
		case "packet_filter":
			if !c.NextArg() {
				return cfg, c.Errf("packet_filter: want nftables, iptables or none")
			}
			switch m := c.Val(); m {
			case nodesetup.FilterNftables, nodesetup.FilterIptables, nodesetup.FilterNone:
				cfg.packetFilter = m
			default:
				return cfg, c.Errf("packet_filter: want nftables, iptables or none, got %q", m)
			}
		case "keep_on_exit":
			if c.NextArg() {
				return cfg, c.Errf("keep_on_exit takes no arguments")
			}
			cfg.keepOnExit = true
		case "upstream":
			u, err := parseUpstream(c)
			if err != nil {
				return cfg, err
			}
			cfg.upstreams = append(cfg.upstreams, u)
		case "success", "denial":
			capacity, ttl, err := parseCapacity(c, opt)
			if err != nil {
				return cfg, err
			}
			if opt == "success" {
				cfg.successCap = capacity
				if ttl > 0 {
					cfg.successTTL = ttl
				}
			} else {
				cfg.denialCap = capacity
				if ttl > 0 {
					cfg.denialTTL = ttl
				}
			}
		case "prefetch":
			if err := parsePrefetch(c, &cfg); err != nil {
				return cfg, err
			}
		case "serve_stale":
			d, err := oneDuration(c, opt)
			if err != nil {
				return cfg, err
			}
			cfg.serveStale = d
		case "max_concurrent":
			args := c.RemainingArgs()
			if len(args) != 1 {
				return cfg, c.Errf("max_concurrent: want one positive integer")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return cfg, c.Errf("max_concurrent: %q is not a positive integer", args[0])
			}
			cfg.maxConcurrent = n
		case "timeout", "health_check", "max_age", "repair":
			d, err := oneDuration(c, opt)
			if err != nil {
				return cfg, err
			}
			if d <= 0 {
				return cfg, c.Errf("%s: want a positive duration", opt)
			}
			switch opt {
			case "timeout":
				cfg.timeout = d
			case "health_check":
				cfg.healthCheck = d
			case "repair":
				cfg.repairEvery = d
			default:
				cfg.maxAge = d
			}
		case "health_zone":
			args := c.RemainingArgs()
			if len(args) != 1 {
				return cfg, c.Errf("health_zone: want one zone such as cluster.local")
			}
			zone := dns.Fqdn(strings.ToLower(args[0]))
			if _, ok := dns.IsDomainName(zone); !ok || zone == "." {
				return cfg, c.Errf("health_zone: %q is not a zone name (the root is the default of a root block)", args[0])
			}
			cfg.healthZone = zone
		case "max_memory":
			if !c.NextArg() {
				return cfg, c.Errf("max_memory: want a size such as 256MiB")
			}
			n, err := parseSize(c.Val())
			if err != nil {
				return cfg, c.Errf("max_memory: %v", err)
			}
			cfg.maxMemory = n
		default:
			return cfg, c.Errf("unknown option %q (want listen, interface, packet_filter, keep_on_exit, upstream, success, denial, prefetch, serve_stale, max_memory, timeout, health_check, max_concurrent, max_age or repair)", opt)
		}
	}
	if len(cfg.listen) == 0 {
		return cfg, c.Errf("want at least one `listen` address")
	}
	if len(cfg.upstreams) == 0 {
		return cfg, c.Errf("want at least one `upstream`")
	}
	return cfg, nil
}

// parseUpstream reads `upstream [tcp|udp] ADDR...`; an address may be a resolv.conf path.
func parseUpstream(c *caddy.Controller) (transport.Line, error) {
	args := c.RemainingArgs()
	u := transport.Line{Proto: "tcp"}
	if len(args) > 0 && (args[0] == "tcp" || args[0] == "udp" || args[0] == "pipelined") {
		u.Proto, args = args[0], args[1:]
	}
	if len(args) == 0 {
		return u, c.Errf("upstream: want [tcp|udp|pipelined] ADDRESS... (host[:port] or a resolv.conf path)")
	}
	addrs, err := parse.HostPortOrFile(args...)
	if err != nil {
		return u, c.Errf("upstream: %v", err)
	}
	// One spelling per address for the metrics' labels: "[10.96.0.10]:5353" (brackets make an
	// IPv6 address and a port from one variable) becomes "10.96.0.10:5353".
	for i, a := range addrs {
		if host, port, err := net.SplitHostPort(a); err == nil {
			addrs[i] = net.JoinHostPort(host, port)
		}
	}
	u.Addrs = addrs
	return u, nil
}

func parseCapacity(c *caddy.Controller, opt string) (int, time.Duration, error) {
	args := c.RemainingArgs()
	if len(args) == 0 || len(args) > 2 {
		return 0, 0, c.Errf("%s: want CAPACITY [TTL]", opt)
	}
	capacity, err := strconv.Atoi(args[0])
	if err != nil || capacity < 1 {
		return 0, 0, c.Errf("%s: capacity %q is not a positive integer", opt, args[0])
	}
	var ttl time.Duration
	if len(args) == 2 {
		secs, err := strconv.Atoi(args[1])
		if err != nil || secs < 1 {
			return 0, 0, c.Errf("%s: TTL %q is not a positive number of seconds", opt, args[1])
		}
		ttl = time.Duration(secs) * time.Second
	}
	return capacity, ttl, nil
}

func parsePrefetch(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) == 0 || len(args) > 3 {
		return c.Errf("prefetch: want AMOUNT [DURATION [PERCENTAGE%%]]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return c.Errf("prefetch: amount %q is not a positive integer", args[0])
	}
	cfg.prefetchAmount = n
	if len(args) > 1 {
		d, err := time.ParseDuration(args[1])
		if err != nil || d <= 0 {
			return c.Errf("prefetch: %q is not a positive duration", args[1])
		}
		cfg.prefetchDuration = d
	}
	if len(args) > 2 {
		p, err := strconv.Atoi(strings.TrimSuffix(args[2], "%"))
		if err != nil || p < 0 || p > 100 || !strings.HasSuffix(args[2], "%") {
			return c.Errf("prefetch: %q is not a percentage such as 10%%", args[2])
		}
		cfg.prefetchPercent = p
	}
	return nil
}

func oneDuration(c *caddy.Controller, opt string) (time.Duration, error) {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return 0, c.Errf("%s: want one duration such as 1h", opt)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil || d < 0 {
		return 0, c.Errf("%s: %q is not a duration such as 1h", opt, args[0])
	}
	return d, nil
}

// parseSize reads sizes such as 256MiB, 512MB, 1GiB or a plain byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		factor int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("%q is not a size such as 256MiB", s)
			}
			return n * u.factor, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a size such as 256MiB", s)
	}
	return n, nil
}
