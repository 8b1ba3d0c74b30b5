// Package nodecache is the per-node DNS cache of clusterdns: it listens on link-local addresses,
// caches answers and sends misses to the cluster DNS over TCP and to the node's resolvers.
//
// Layout: the query path (query.go) and the cache (cache.go, wire.go) are here, with the two
// doors a query comes in by: ServeDNS (CoreDNS's server and the plugins above) and the packet
// door (door.go: the plugin's own batched UDP sockets, internal/packetio). The transport to the
// upstreams is in transport/, the node's interface, addresses, packet filter and the handover
// between instances in nodesetup/.
package nodecache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/plugin/nodecache/transport"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/pkg/nonwriter"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// NodeCache answers from the process-wide cache and sends misses to its upstreams.
type NodeCache struct {
	Next   plugin.Handler
	config config

	node      *node // process-wide: cache, flights, in-flight count, link state
	upstreams *transport.Group
	closing   atomic.Bool // a reload replaced this instance: its flights take no new askers

	flightsOpen atomic.Int64 // this block's questions on their way upstream (at most config.maxFlights)
}

var renderBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// ServeDNS implements plugin.Handler: the query path's door for CoreDNS's server (TCP, queries
// the packet door hands on) and for the plugins above (searchpath's lookups).
func (n *NodeCache) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery || r.Response {
		return n.passThrough(ctx, w, r)
	}
	q := r.Question[0]
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		return n.passThrough(ctx, w, r)
	}
	n.node.inFlight.Add(1)
	defer n.node.inFlight.Add(-1)
	m := metricsFor(metrics.WithServer(ctx))
	m.inFlight.Inc()
	defer m.inFlight.Dec()

	state := request.Request{W: w, Req: r}
	do := state.Do()
	c := reply{id: r.Id, qname: q.Name, rd: r.RecursionDesired, cd: r.CheckingDisabled, ad: r.AuthenticatedData,
		edns: r.IsEdns0() != nil, do: do, maxSize: dns.MaxMsgSize}
	if _, lookup := w.(*nonwriter.Writer); !lookup && state.Proto() == "udp" {
		// A plugin's lookup (searchpath's candidates) gets the whole answer; a UDP client what fits.
		c.maxSize = door.UDPSize(state.Size())
	}
	var name [256]byte
	end, err := dns.PackDomainName(q.Name, name[:], 0, nil, false)
	if err != nil {
		return dns.RcodeFormatError, plugin.Error(pluginName, err)
	}
	lower := []byte(dns.CanonicalName(q.Name))
	qq := question{key: newCacheKey(lower, q.Qtype, q.Qclass, do, r.CheckingDisabled), lower: lower,
		qwire: name[:end], qtype: q.Qtype, qclass: q.Qclass}

	f := n.lookup(&qq, m, time.Now())
	if f.v == verdictMiss {
		wait := make(waitAsker, 1)
		n.miss(&qq, m, f.stale, wait)
		o := <-wait
		if o.err != nil {
			return dns.RcodeServerFailure, plugin.Error(pluginName, o.err)
		}
		f.a, f.ttl = o.a, o.ttl
	}
	return n.write(w, m, f.a, c, f.ttl)
}

// waitAsker is ServeDNS's asker: it waits for the flight on its own goroutine.
type waitAsker chan outcome

type outcome struct {
	a   *answer
	ttl uint32
	err error
}

func (w waitAsker) answered(a *answer, ttl uint32, err error) { w <- outcome{a, ttl, err} }

// write renders a for the client and writes it as a message, so that every writer (the
// client's connection, searchpath's, the recorders of log and prometheus) sees the same. Once
// written, whatever the answer's rcode, it returns RcodeSuccess: a SERVFAIL or REFUSED returned
// would make the server write a second answer.
func (n *NodeCache) write(w dns.ResponseWriter, m *serverMetrics, a *answer, c reply, ttl uint32) (int, error) {
	bp := renderBufs.Get().(*[]byte)
	defer renderBufs.Put(bp)
	out, ok := a.render(*bp, c, ttl)
	if !ok {
		return dns.RcodeServerFailure, plugin.Error(pluginName, errors.New("cannot render cached answer"))
	}
	*bp = out[:0]
	if dnswire.Flags(out)&dnswire.FlagTC != 0 {
		m.truncated.Inc()
	}
	msg := new(dns.Msg)
	if err := msg.Unpack(out); err != nil {
		return dns.RcodeServerFailure, plugin.Error(pluginName, err)
	}
	msg.Compress = true // as rendered: what fit the client compressed must fit it again
	if err := w.WriteMsg(msg); err != nil {
		return dns.RcodeServerFailure, plugin.Error(pluginName, err)
	}
	return dns.RcodeSuccess, nil
}

// passThrough sends what the cache does not handle (other opcodes, zone transfers, several
// questions) to the next plugin.
func (n *NodeCache) passThrough(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(n.Name(), n.Next, ctx, w, r)
}

// Name implements plugin.Handler.
func (n *NodeCache) Name() string { return pluginName }

// Ready implements ready.Readiness: the link and packet filter are set up and an upstream has
// answered since start.
func (n *NodeCache) Ready() bool { return n.node.isSetUp() && n.upstreams.ReachedAny() }
