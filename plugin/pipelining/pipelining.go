// Package pipelining answers DNS over TCP on an address of its own, with the queries pipelined on
// one connection answered concurrently and in the order their answers are ready (RFC 7766
// §6.2.1.1). CoreDNS's own TCP server answers one connection's queries one at a time, so a query
// that waits on a slow upstream holds back every query behind it.
//
// The address is the plugin's alone, not the server block's: the block's own TCP listener belongs
// to CoreDNS's server, and two listeners on one address share its connections as the kernel
// hashes them, so some would still be answered one at a time. A client that pipelines (the node
// cache, to the cluster DNS) is pointed at this address; every other client keeps the block's.
//
// As its server starts (an exported hook of the server's config, the one the node cache's packet
// door uses) the plugin opens its listeners (internal/packetio.ListenStream: one per CPU, in an
// SO_REUSEPORT group, so a reload or a second process can open the address beside them) and
// serves them with internal/packetio.StreamServer, which hands each query to the server's
// exported ServeDNS (zone routing and the whole plugin chain of the block) on a goroutine of its
// own. The plugin is not in the plugin chain itself.
package pipelining

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/miekg/dns"
)

const pluginName = "pipelining"

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

// drainQuiet: after the plugin's listeners close (shutdown or reload), an accepted connection is
// served until its client has been quiet this long.
const drainQuiet = 200 * time.Millisecond

// instance is the plugin in one server block of one Corefile instance.
type instance struct {
	addr        string // ip:port
	maxInFlight int

	mu      sync.Mutex
	stream  *packetio.StreamListener
	serving bool // the hook ran
	closed  bool // shut down
}

func setup(c *caddy.Controller) error {
	p, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	cfg := dnsserver.GetConfig(c)
	if cfg.Transport != "" && cfg.Transport != "dns" {
		return plugin.Error(pluginName, c.Errf("answers plain DNS over TCP; this block's transport is %q", cfg.Transport))
	}
	for _, h := range cfg.ListenHosts {
		if own := net.JoinHostPort(h, cfg.Port); own == p.addr {
			return plugin.Error(pluginName, c.Errf("%s is this block's own address, whose TCP listener is CoreDNS's: give pipelining an address of its own (another port)", p.addr))
		}
	}
	// Opened as the block's server starts serving (the hook), so that an instance that never
	// serves (a reload that failed) holds no listeners; a block whose hook another block on the
	// same address replaced is reported.
	c.OnStartup(func() error {
		time.AfterFunc(hookWait, p.checkServing)
		return nil
	})
	prev := cfg.UDPDecorateWriterFunc
	cfg.UDPDecorateWriterFunc = func(s *dnsserver.Server) dns.DecorateWriter {
		p.serve(s)
		if prev != nil {
			return prev(s)
		}
		return nil
	}
	c.OnShutdown(func() error {
		p.close()
		return nil
	})
	return nil
}

// parse reads `pipelining ADDRESS [MAX]`.
func parse(c *caddy.Controller) (*instance, error) {
	p := &instance{maxInFlight: packetio.DefaultMaxInFlight}
	c.Next() // pipelining
	args := c.RemainingArgs()
	if len(args) < 1 || len(args) > 2 || c.NextBlock() {
		return nil, c.Errf("want `pipelining ADDRESS:PORT [MAX]` (MAX: the most queries of one connection answered at once, 1 to 65535)")
	}
	host, port, err := net.SplitHostPort(args[0])
	ip := net.ParseIP(host)
	if err != nil || ip == nil || port == "" || port == "0" {
		return nil, c.Errf("ADDRESS: want an IP address and a port such as 10.96.0.10:5353, got %q", args[0])
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, c.Errf("ADDRESS: port %q is not a number from 1 to 65535", port)
	}
	p.addr = net.JoinHostPort(ip.String(), port)
	if len(args) == 2 {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 || n > 65535 {
			return nil, c.Errf("MAX: want a number of queries from 1 to 65535, got %q", args[1])
		}
		p.maxInFlight = n
	}
	return p, nil
}

// hookWait: a block whose server has not started serving this long after startup is reported.
const hookWait = 10 * time.Second

// checkServing reports a block whose listeners were never opened: its server's hook belongs to
// another block on the same address (CoreDNS keeps one per address) or its server never started.
func (p *instance) checkServing() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.serving && !p.closed {
		log.Errorf("%s: not serving: its block's server did not start, or another block on the same address replaced the server's hook "+
			"(give pipelining to one block per address)", p.addr)
	}
}

// serve opens the listeners and answers on them through the block's server as it starts serving
// UDP (once: with multisocket the hook runs once per UDP socket).
func (p *instance) serve(s *dnsserver.Server) {
	if !strings.HasPrefix(s.Addr, "dns://") {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serving || p.closed {
		return
	}
	p.serving = true
	sl, err := packetio.ListenStream(p.addr)
	if err != nil {
		log.Errorf("%s: %v: pipelined queries are not answered there", p.addr, err)
		return
	}
	p.stream = sl
	srv := &packetio.StreamServer{
		MaxInFlight: p.maxInFlight, ReadTimeout: s.ReadTimeout, IdleTimeout: s.IdleTimeout, WriteTimeout: s.WriteTimeout,
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			// As CoreDNS's server calls its handler (dnsserver.Server.Serve).
			ctx := context.WithValue(context.Background(), dnsserver.Key{}, s)
			ctx = context.WithValue(ctx, dnsserver.LoopKey{}, 0)
			s.ServeDNS(ctx, w, r)
		}),
	}
	for _, l := range sl.Listeners() {
		go func() {
			if err := srv.Serve(l); err != nil {
				log.Errorf("%s: TCP server stopped: %v", p.addr, err)
			}
		}()
	}
	log.Infof("%s: TCP for %s, %d listeners, up to %d queries of a connection answered at once", p.addr, s.Addr, len(sl.Listeners()), p.maxInFlight)
}

// close stops taking connections (the kernel moves queued ones to another listener of the group:
// the next instance's on a reload); accepted ones are served until their clients fall quiet.
func (p *instance) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.stream != nil {
		p.stream.Drain(drainQuiet)
		p.stream = nil
	}
}
