package nodecache

import (
	"context"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// The packet door: the plugin's own UDP sockets for each listen address (internal/packetio: a
// socket per CPU in the address's SO_REUSEPORT group, read and written in batches). A query of
// plain shape for a zone a nodecache block serves goes straight into the query path: a hit is
// rendered from the wire-format entry into the batch being written, and a miss is answered
// when its flight ends, queued on the socket's sender. Every other datagram (other opcodes,
// flags such as TC or Z, EDNS options, malformed packets, DS, zones of other plugins, blocks
// with plugins above nodecache that change answers) is handed, as it came, to a miekg/dns server
// that calls CoreDNS's server (its exported ServeDNS: zone routing and the whole plugin chain)
// and writes through the door's socket.
//
// CoreDNS's server binds its own UDP socket to the address too; the door's sockets set
// SO_INCOMING_CPU, so from Linux 6.1 the kernel gives that socket nothing while the door is
// open (see internal/packetio and the README's Bugs for older kernels).

// passivePlugins may stand above nodecache in a block served by the packet door: they do not
// change answers, and what they would record of a door answer the door records itself
// (prometheus: the standard metrics; errors: a door answer is never a plugin error). `log` is
// not among them: it must see every answer, so a block with log is answered through the chain.
var passivePlugins = map[string]bool{"errors": true, "prometheus": true}

// nxdomainRewriter is a plugin that may stand above nodecache and changes an answer only when the
// asked name is NXDOMAIN (searchpath: a name that exists is answered as it is). With one above,
// the door answers everything but NXDOMAIN, which goes to the plugin chain.
type nxdomainRewriter interface{ RewritesOnlyNXDOMAIN() bool }

// doorZone is a zone of a nodecache block on the address, and whether the door answers it.
type doorZone struct {
	name         string     // lower case, fully qualified
	nc           *NodeCache // nil: through the server
	nxdomainSlow bool       // NXDOMAIN goes through the chain (a nxdomainRewriter stands above)
	report       bool       // the block has prometheus: door answers count in coredns_dns_*
}

// doorRoute is what the door knows of the CoreDNS server on its address.
type doorRoute struct {
	srv      *dnsserver.Server
	zones    []doorZone // longest first
	decorate dns.DecorateWriter
	label    string         // the server's metrics label (dns://ip:port)
	m        *serverMetrics // under that label
}

// zoneFor is the longest nodecache zone that holds the lower-case name.
func (r *doorRoute) zoneFor(name []byte) *doorZone {
	for i := range r.zones {
		if inZone(name, r.zones[i].name) {
			return &r.zones[i]
		}
	}
	return nil
}

// packetDoor is the door of one listen address ("ip:port"), for the life of the process (reloads
// replace its route).
type packetDoor struct {
	key   string
	node  *node
	route atomic.Pointer[doorRoute]
	ln    *packetio.Listener

	slow    *handoffConn
	slowSrv *dns.Server
	closed  chan struct{}

	// The TCP side: the door's own listeners (nil when they could not be opened; CoreDNS's
	// server then takes TCP alone), served by a packetio.StreamServer that calls CoreDNS's
	// server as CoreDNS's own TCP server does, but answers the queries pipelined on one
	// connection concurrently. Owning them is what lets a handover stop taking connections and
	// still answer the ones it took.
	stream *packetio.StreamListener
}

// TCP timeouts of the door's connections, CoreDNS's defaults: the first query must arrive
// within tcpReadTimeout, each later one within tcpIdleTimeout of the query before it.
const (
	tcpReadTimeout  = 3 * time.Second
	tcpWriteTimeout = 5 * time.Second
	tcpIdleTimeout  = 10 * time.Second
)

// serveChain answers a query through CoreDNS's server: zone routing and the whole plugin chain.
func (d *packetDoor) serveChain(w dns.ResponseWriter, r *dns.Msg) {
	srv := d.route.Load().srv
	// As CoreDNS's server calls its handler (dnsserver.Server.ServePacket and ServeTCP).
	ctx := context.WithValue(context.Background(), dnsserver.Key{}, srv)
	ctx = context.WithValue(ctx, dnsserver.LoopKey{}, 0)
	srv.ServeDNS(ctx, w, r)
}

// openDoor opens the sockets of key and serves them with rt; the route is in place before the
// first datagram is read.
func openDoor(n *node, key string, rt *doorRoute) (*packetDoor, error) {
	ln, err := packetio.Listen(key, &n.inFlight)
	if err != nil {
		return nil, err
	}
	d := &packetDoor{key: key, node: n, ln: ln, closed: make(chan struct{})}
	d.route.Store(rt)
	d.slow = &handoffConn{in: make(chan handoffPacket, 1024), closed: d.closed, ln: ln, inFlight: &n.inFlight}
	d.slowSrv = &dns.Server{PacketConn: d.slow, Net: "udp",
		Handler: dns.HandlerFunc(d.serveChain),
		DecorateWriter: func(w dns.Writer) dns.Writer {
			if dw := d.route.Load().decorate; dw != nil {
				return dw(w)
			}
			return w
		},
	}
	go func() {
		if err := d.slowSrv.ActivateAndServe(); err != nil && !isClosed(d.closed) {
			log.Errorf("packet door %s: hand-off server stopped: %v", key, err)
		}
	}()
	ln.Serve(d.handle)
	d.openStream()
	return d, nil
}

// openStream opens and serves the TCP listeners; without them CoreDNS's server takes TCP alone.
func (d *packetDoor) openStream() {
	sl, err := packetio.ListenStream(d.key)
	if err != nil {
		log.Warningf("packet door %s: TCP listeners: %v; CoreDNS's server takes TCP alone", d.key, err)
		return
	}
	d.stream = sl
	srv := &packetio.StreamServer{Handler: dns.HandlerFunc(d.serveChain),
		ReadTimeout: tcpReadTimeout, WriteTimeout: tcpWriteTimeout, IdleTimeout: tcpIdleTimeout}
	for _, l := range sl.Listeners() {
		go func() {
			if err := srv.Serve(l); err != nil && !isClosed(d.closed) {
				log.Errorf("packet door %s: TCP server stopped: %v", d.key, err)
			}
		}()
	}
}

// detach starts the handover: the UDP sockets leave their SO_REUSEPORT group, the TCP listeners
// close (their queued connections move to another listener of the group), and each accepted TCP
// connection closes once its client has been quiet for tcpDrainQuiet.
func (d *packetDoor) detach() error {
	err := d.ln.Detach()
	if d.stream != nil {
		d.stream.Drain(tcpDrainQuiet)
	}
	return err
}

// tcpDrainQuiet: after a handover starts, a TCP connection that brings no query for this long
// stops being read, and closes once the queries it brought are answered.
const tcpDrainQuiet = 200 * time.Millisecond

// openConns is the number of TCP connections the door still holds.
func (d *packetDoor) openConns() int64 {
	if d.stream == nil {
		return 0
	}
	return d.stream.Open()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// close stops the door (the process is leaving and has drained).
func (d *packetDoor) close() {
	if !isClosed(d.closed) {
		close(d.closed)
	}
	d.ln.Close()
	if d.stream != nil {
		d.stream.Close()
	}
}

// handle answers one datagram: into buf now (a hit), later through the socket (a miss), or
// through the chain.
func (d *packetDoor) handle(s *packetio.Socket, p []byte, from net.Addr, buf []byte) []byte {
	rt := d.route.Load()
	rt.m.doorDatagrams.Inc()
	var fq fastQuery
	if !parseFastQuery(p, &fq) {
		d.slow.handOff(p, from)
		return nil
	}
	z := rt.zoneFor(fq.name())
	if z == nil || z.nc == nil {
		d.slow.handOff(p, from)
		return nil
	}
	q := question{key: cacheKey{hash: fq.hash, qtype: fq.qtype, qclass: dns.ClassINET, do: fq.do, cd: fq.cd},
		lower: fq.name(), qwire: fq.qname, qtype: fq.qtype, qclass: dns.ClassINET, nxdomainToChain: z.nxdomainSlow}
	now := time.Now()
	f := z.nc.lookup(&q, rt.m, now)
	switch f.v {
	case verdictChain:
		d.slow.handOff(p, from)
		return nil
	case verdictMiss:
		s.Hold()
		rt.m.inFlight.Inc()
		pkt := append([]byte(nil), p...)
		w := &doorAsker{d: d, s: s, z: z, rt: rt, pkt: pkt, addr: from, reply: fq.reply(), start: now}
		w.reply.qwire = pkt[12 : 12+len(fq.qname)]
		z.nc.miss(&q, rt.m, f.stale, w)
		return nil
	}
	out, ok := f.a.render(buf, fq.reply(), f.ttl)
	if !ok {
		out = servfail(buf, p)
	} else if dnswire.Flags(out)&dnswire.FlagTC != 0 {
		rt.m.truncated.Inc()
	}
	if z.report {
		reportStandard(standardKey{server: rt.label, zone: z.name, fam: family(from), qtype: fq.qtype, rcode: dnswire.Rcode(out), do: fq.do},
			len(p), len(out), now)
	}
	return out
}

// family is the address family of a client as the standard metrics label it: 1 IPv4, 2 IPv6.
func family(a net.Addr) byte {
	if u, ok := a.(*net.UDPAddr); ok && u.IP.To4() == nil {
		return 2
	}
	return 1
}

// doorAsker is a door query waiting for its flight.
type doorAsker struct {
	d     *packetDoor
	s     *packetio.Socket
	z     *doorZone
	rt    *doorRoute
	pkt   []byte // the query as it came
	addr  net.Addr
	reply reply // its qwire is in pkt
	start time.Time
}

// answered writes the outcome to the asker as ServeDNS would: the answer, or the SERVFAIL
// CoreDNS's server writes when no upstream answered. With a plugin above that rewrites NXDOMAIN,
// an NXDOMAIN goes to the plugin chain instead, which finds it in the cache.
func (w *doorAsker) answered(a *answer, ttl uint32, err error) {
	w.rt.m.inFlight.Dec()
	if err == nil && a.rcode == dns.RcodeNameError && w.z.nxdomainSlow {
		// Never block the goroutine that ends the flight on a full hand-off queue.
		if !w.d.slow.tryHandOff(w.pkt, w.addr) {
			go w.d.slow.handOff(w.pkt, w.addr)
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
		out = servfail(*bp, w.pkt)
	} else if dnswire.Flags(out)&dnswire.FlagTC != 0 {
		w.rt.m.truncated.Inc()
	}
	if w.z.report {
		reportStandard(standardKey{server: w.rt.label, zone: w.z.name, fam: family(w.addr), qtype: w.reply.qtype, rcode: dnswire.Rcode(out), do: w.reply.do},
			len(w.pkt), len(out), w.start)
	}
	*bp = out
	w.s.Send(bp, w.addr)
}

// servfail is the SERVFAIL CoreDNS's server writes when a plugin fails (dnsserver's errorFunc):
// the query with QR and the rcode set, RD and CD kept, AD cleared, and the client's OPT record as
// it came (the door takes only OPT records without options whose flags are at most DO, which
// errorFunc keeps).
func servfail(buf, p []byte) []byte {
	out := append(buf[:0], p...)
	out[2] = out[2]&byte(dnswire.FlagRD>>8) | byte(dnswire.FlagQR>>8)
	out[3] = out[3]&byte(dnswire.FlagCD) | dns.RcodeServerFailure
	return out
}

// handoffPacket is a datagram on its way to CoreDNS's server.
type handoffPacket struct {
	b    []byte
	addr net.Addr
}

// handoffConn is the net.PacketConn of the hand-off server: it reads what the door passes on
// and writes through the door's socket.
type handoffConn struct {
	in       chan handoffPacket
	closed   chan struct{}
	ln       *packetio.Listener
	inFlight *atomic.Int64 // the node's: a drain waits for handed-off datagrams too
}

// handOff queues a copy of p for the server, waiting while the queue is full.
func (h *handoffConn) handOff(p []byte, addr net.Addr) {
	h.inFlight.Add(1)
	select {
	case h.in <- handoffPacket{b: append([]byte(nil), p...), addr: addr}:
	case <-h.closed:
		h.inFlight.Add(-1)
	}
}

// tryHandOff queues p (kept as it is) unless the queue is full.
func (h *handoffConn) tryHandOff(p []byte, addr net.Addr) bool {
	h.inFlight.Add(1)
	select {
	case h.in <- handoffPacket{b: p, addr: addr}:
		return true
	default:
		h.inFlight.Add(-1)
		return false
	}
}

func (h *handoffConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-h.in:
		h.inFlight.Add(-1)
		return copy(b, p.b), p.addr, nil
	case <-h.closed:
		return 0, nil, net.ErrClosed
	}
}

func (h *handoffConn) WriteTo(b []byte, addr net.Addr) (int, error) { return h.ln.WriteTo(b, addr) }
func (h *handoffConn) Close() error                                 { return nil }
func (h *handoffConn) LocalAddr() net.Addr                          { return h.ln.LocalAddr() }
func (h *handoffConn) SetDeadline(time.Time) error                  { return nil }
func (h *handoffConn) SetReadDeadline(time.Time) error              { return nil }
func (h *handoffConn) SetWriteDeadline(time.Time) error             { return nil }

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
	if len(b.cfg.FilterFuncs) > 0 {
		return false, false, "the block has filters (view)"
	}
	if len(b.cfg.TsigSecret) > 0 {
		return false, false, "the block has TSIG secrets"
	}
	return handlersAllowDoor(b.cfg.Handlers())
}

// handlersAllowDoor reads the handlers of a block down to nodecache.
func handlersAllowDoor(handlers []plugin.Handler) (ok, nxdomainSlow bool, why string) {
	var above []string
	for _, h := range handlers {
		if h.Name() == pluginName {
			break
		}
		if r, isRewriter := h.(nxdomainRewriter); isRewriter && r.RewritesOnlyNXDOMAIN() {
			nxdomainSlow = true
			continue
		}
		if !passivePlugins[h.Name()] {
			above = append(above, h.Name())
		}
	}
	if len(above) > 0 {
		return false, false, "plugins above nodecache: " + strings.Join(above, ", ")
	}
	return true, nxdomainSlow, ""
}

// buildRoute works out, for each zone of the nodecache blocks on the address, whether the door
// answers it.
func buildRoute(s *dnsserver.Server, key string, blocks []*doorBlock, dw dns.DecorateWriter) (*doorRoute, []string) {
	rt := &doorRoute{srv: s, decorate: dw, label: s.Addr, m: metricsFor(s.Addr)}
	var notes []string
	for _, b := range blocks {
		if !b.listen[key] {
			continue
		}
		ok, nxdomainSlow, why := b.eligible()
		for _, z := range b.zones {
			dz := doorZone{name: z}
			if ok {
				dz.nc, dz.nxdomainSlow = b.nc, nxdomainSlow
				dz.report = b.cfg.Handler("prometheus") != nil
			} else {
				notes = append(notes, z+": "+why)
			}
			rt.zones = append(rt.zones, dz)
		}
	}
	sort.SliceStable(rt.zones, func(i, j int) bool { return len(rt.zones[i].name) > len(rt.zones[j].name) })
	return rt, notes
}

// listenKey turns a server address (dns://host:port) into a listen key ("ip:port").
func listenKey(addr string) (string, bool) {
	rest, ok := strings.CutPrefix(addr, "dns://")
	if !ok {
		return "", false
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return "", false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", false
	}
	return net.JoinHostPort(ip.String(), port), true
}
