package nodecache

import (
	"net"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
)

// The packet door (internal/door): the plugin's own UDP sockets for each listen address. A query
// of plain shape for a zone a nodecache block serves goes straight into the query path: a hit is
// rendered from the wire-format entry into the batch being written, and a miss is answered when
// its flight ends, queued on the socket's sender. Every other datagram (other opcodes, flags
// such as TC or Z, EDNS options, malformed packets, DS, zones of other plugins, blocks with
// plugins above nodecache that change answers) is handed, as it came, to CoreDNS's server.

// passivePlugins may stand above nodecache in a block served by the packet door: they do not
// change answers, and what they would record of a door answer the door records itself
// (prometheus: the standard metrics; errors: a door answer is never a plugin error). `log` is
// not among them: it must see every answer, so a block with log is answered through the chain.
var passivePlugins = map[string]bool{"errors": true, "prometheus": true}

// doorZone is a zone of a nodecache block on the address, as the door's Answer function sees it.
type doorZone struct {
	name         string // lower case, fully qualified
	nc           *NodeCache
	nxdomainSlow bool           // NXDOMAIN goes through the chain (a door.NXDOMAINRewriter stands above)
	report       bool           // the block has prometheus: door answers count in coredns_dns_*
	label        string         // the server's metrics label (dns://ip:port)
	plugin       string         // the plugin label of the rcode metric (door.ReportingPlugin)
	m            *serverMetrics // under that label
	d            *door.Door     // the door of the address (set as the door opens)
}

// tcpDrainQuiet: after a handover starts, a TCP connection that brings no query for this long
// stops being read, and closes once the queries it brought are answered.
const tcpDrainQuiet = 200 * time.Millisecond

// answer answers one datagram of the zone: into buf now (a hit), later through the socket (a
// miss), or through the chain.
func (z *doorZone) answer(s *packetio.Socket, fq *door.Query, p []byte, from net.Addr, buf []byte) ([]byte, door.Verdict) {
	q := question{key: cacheKey{hash: fq.Hash, qtype: fq.QType, qclass: dns.ClassINET, do: fq.DO, cd: fq.CD},
		lower: fq.Name(), qwire: fq.QName, qtype: fq.QType, qclass: dns.ClassINET, nxdomainToChain: z.nxdomainSlow}
	now := time.Now()
	f := z.nc.lookup(&q, z.m, now)
	switch f.v {
	case verdictChain:
		return nil, door.Chain
	case verdictMiss:
		s.Hold()
		z.m.inFlight.Inc()
		pkt := append([]byte(nil), p...)
		w := &doorAsker{z: z, s: s, pkt: pkt, addr: from, reply: replyTo(fq), start: now}
		w.reply.qwire = pkt[12 : 12+len(fq.QName)]
		z.nc.miss(&q, z.m, f.stale, w)
		return nil, door.Later
	}
	out, ok := f.a.render(buf, replyTo(fq), f.ttl)
	if !ok {
		out = door.Servfail(buf, p)
	} else if dnswire.Flags(out)&dnswire.FlagTC != 0 {
		z.m.truncated.Inc()
	}
	if z.report {
		door.Report(door.StandardKey{Server: z.label, Zone: z.name, Plugin: z.plugin, Fam: door.Family(from), QType: fq.QType, Rcode: dnswire.Rcode(out), DO: fq.DO},
			len(p), len(out), now)
	}
	return out, door.Answered
}

// replyTo is what render needs to answer q, the same as ServeDNS derives from the dns.Msg.
func replyTo(q *door.Query) reply {
	return reply{id: q.ID, qwire: q.QName, qtype: q.QType, rd: q.RD, cd: q.CD, ad: q.AD, edns: q.EDNS, do: q.DO, maxSize: q.Size}
}

// doorAsker is a door query waiting for its flight.
type doorAsker struct {
	z     *doorZone
	s     *packetio.Socket
	pkt   []byte // the query as it came
	addr  net.Addr
	reply reply // its qwire is in pkt
	start time.Time
}

// answered writes the outcome to the asker as ServeDNS would: the answer, or the SERVFAIL
// CoreDNS's server writes when no upstream answered. With a plugin above that rewrites NXDOMAIN,
// an NXDOMAIN goes to the plugin chain instead, which finds it in the cache.
func (w *doorAsker) answered(a *answer, ttl uint32, err error) {
	w.z.m.inFlight.Dec()
	if err == nil && a.rcode == dns.RcodeNameError && w.z.nxdomainSlow {
		// Never block the goroutine that ends the flight on a full hand-off queue.
		if !w.z.d.TryHandOff(w.pkt, w.addr) {
			go w.z.d.HandOff(w.pkt, w.addr)
		}
		w.s.Release()
		return
	}
	bp := packetio.Buffers.Get().(*[]byte)
	var out []byte
	ok := false
	if err == nil {
		out, ok = a.render(*bp, w.reply, ttl)
	}
	if !ok {
		out = door.Servfail(*bp, w.pkt)
	} else if dnswire.Flags(out)&dnswire.FlagTC != 0 {
		w.z.m.truncated.Inc()
	}
	if w.z.report {
		door.Report(door.StandardKey{Server: w.z.label, Zone: w.z.name, Plugin: w.z.plugin, Fam: door.Family(w.addr), QType: w.reply.qtype, Rcode: dnswire.Rcode(out), DO: w.reply.do},
			len(w.pkt), len(out), w.start)
	}
	*bp = out
	w.s.Send(bp, w.addr)
}

// doorBlock is a nodecache server block as the door sees it.
type doorBlock struct {
	nc     *NodeCache
	cfg    *dnsserver.Config
	zones  []string // lower case, fully qualified
	listen map[string]bool
}

// eligible reports whether the block's queries may be answered before its plugin chain: no
// plugin above nodecache changes answers (but for NXDOMAIN, then nxdomainSlow), no views, no
// TSIG. why says what stands in the way.
func (b *doorBlock) eligible() (ok, nxdomainSlow bool, why string) {
	others, nxdomainSlow, why := door.Above(b.cfg, pluginName)
	if why != "" {
		return false, false, why
	}
	return judgeAbove(others, nxdomainSlow)
}

// judgeAbove judges the plugins above nodecache (door.HandlersAbove): only passive ones may
// stand there.
func judgeAbove(others []string, nxdomainSlow bool) (ok, slow bool, why string) {
	var blocking []string
	for _, name := range others {
		if !passivePlugins[name] {
			blocking = append(blocking, name)
		}
	}
	if len(blocking) > 0 {
		return false, false, "plugins above nodecache: " + strings.Join(blocking, ", ")
	}
	return true, nxdomainSlow, ""
}

// buildRoute works out, for each zone of the nodecache blocks on the address, whether the door
// answers it. The zones' door is set once the door is open (routeTo).
func buildRoute(s *dnsserver.Server, key string, blocks []*doorBlock, dw dns.DecorateWriter) (*door.Route, []*doorZone, []string) {
	m := metricsFor(s.Addr)
	var zones []door.Zone
	var ours []*doorZone
	var notes []string
	for _, b := range blocks {
		if !b.listen[key] {
			continue
		}
		ok, nxdomainSlow, why := b.eligible()
		for _, z := range b.zones {
			dz := door.Zone{Name: z}
			if ok {
				oz := &doorZone{name: z, nc: b.nc, nxdomainSlow: nxdomainSlow, report: b.cfg.Handler("prometheus") != nil, label: s.Addr, m: m,
					plugin: door.ReportingPlugin(b.cfg.Handlers())}
				dz.Answer = oz.answer
				ours = append(ours, oz)
			} else {
				notes = append(notes, z+": "+why)
			}
			zones = append(zones, dz)
		}
	}
	return door.NewRoute(s, dw, zones, m.doorDatagrams), ours, notes
}
