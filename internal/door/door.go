package door

import (
	"cmp"
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
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Verdict is what an Answer function did with a datagram.
type Verdict int

const (
	// Answered: the answer is the returned bytes, written in the batch being written.
	Answered Verdict = iota
	// Later: the function holds the query (Socket.Hold) and answers through Socket.Send.
	Later
	// Chain: CoreDNS's server answers it (the door hands the datagram on as it came).
	Chain
)

// AnswerFunc answers a parsed datagram of its zone. p and from are valid only during the call;
// buf is where an Answered answer may be built (it may be replaced by a larger one).
type AnswerFunc func(s *packetio.Socket, q *Query, p []byte, from net.Addr, buf []byte) ([]byte, Verdict)

// NXDOMAINRewriter is a plugin that may stand above the one a door answers for and changes an
// answer only when the asked name is NXDOMAIN (searchpath): with one above, a door hands NXDOMAIN
// to the chain.
type NXDOMAINRewriter interface{ RewritesOnlyNXDOMAIN() bool }

// Above reads a block for a door that answers before the plugin self: why the door may answer
// none of the block's queries ("" when nothing in the configuration stands in the way: views and
// TSIG do), whether a NXDOMAINRewriter stands above self, and the names of the other plugins
// above it, in chain order, for the owner to judge.
func Above(cfg *dnsserver.Config, self string) (others []string, nxdomainSlow bool, why string) {
	if len(cfg.FilterFuncs) > 0 {
		return nil, false, "the block has filters (view)"
	}
	if len(cfg.TsigSecret) > 0 {
		return nil, false, "the block has TSIG secrets"
	}
	others, nxdomainSlow = HandlersAbove(cfg.Handlers(), self)
	return others, nxdomainSlow, ""
}

// HandlersAbove is Above's reading of a chain's handlers down to the plugin self.
func HandlersAbove(handlers []plugin.Handler, self string) (others []string, nxdomainSlow bool) {
	for _, h := range handlers {
		if h.Name() == self {
			break
		}
		if r, isRewriter := h.(NXDOMAINRewriter); isRewriter && r.RewritesOnlyNXDOMAIN() {
			nxdomainSlow = true
			continue
		}
		others = append(others, h.Name())
	}
	return others, nxdomainSlow
}

// Zone is a zone of the address and who answers it: Answer, or CoreDNS's server when nil.
type Zone struct {
	Name   string // lower case, fully qualified
	Answer AnswerFunc
}

// Route is what a door knows of the CoreDNS server on its address. A reload gives the door a
// new one (SetRoute).
type Route struct {
	Srv       *dnsserver.Server
	Decorate  dns.DecorateWriter // the server's UDP writer decoration, for what it answers
	Zones     []Zone             // sorted by NewRoute: longest first
	Datagrams prometheus.Counter // optional: counts every datagram read
}

// NewRoute sorts the zones so that the longest match comes first.
func NewRoute(srv *dnsserver.Server, dw dns.DecorateWriter, zones []Zone, datagrams prometheus.Counter) *Route {
	sort.SliceStable(zones, func(i, j int) bool { return len(zones[i].Name) > len(zones[j].Name) })
	return &Route{Srv: srv, Decorate: dw, Zones: zones, Datagrams: datagrams}
}

// ZoneFor is the longest zone that holds the lower-case name (nil: none).
func (r *Route) ZoneFor(name []byte) *Zone {
	for i := range r.Zones {
		if InZone(name, r.Zones[i].Name) {
			return &r.Zones[i]
		}
	}
	return nil
}

// Door is the door of one listen address ("ip:port", or ":port" for every address), for as long
// as its owner keeps it open (reloads replace its route).
type Door struct {
	Key   string
	route atomic.Pointer[Route]
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
	log    clog.P // the owner's: messages read "packet door KEY: ..."
}

// TCP timeouts of the door's connections where its server has none: CoreDNS's defaults (the
// first query must arrive within tcpReadTimeout, each later one within tcpIdleTimeout of the
// query before it).
const (
	tcpReadTimeout  = 3 * time.Second
	tcpWriteTimeout = 5 * time.Second
	tcpIdleTimeout  = 10 * time.Second
)

// Open opens the sockets of key and serves them with rt (New, then Serve).
func Open(key string, rt *Route, inFlight *atomic.Int64, logger clog.P) (*Door, error) {
	d, err := New(key, inFlight, logger)
	if err != nil {
		return nil, err
	}
	d.Serve(rt)
	return d, nil
}

// New opens the sockets of key without reading them: an owner whose Answer functions need the
// door sets it before Serve. inFlight counts what the door holds (a drain waits for it to reach
// zero); the door logs as its owner, with logger.
func New(key string, inFlight *atomic.Int64, logger clog.P) (*Door, error) {
	ln, err := packetio.Listen(key, inFlight)
	if err != nil {
		return nil, err
	}
	d := &Door{Key: key, ln: ln, closed: make(chan struct{}), log: logger}
	d.slow = &handoffConn{in: make(chan handoffPacket, 1024), closed: d.closed, ln: ln, inFlight: inFlight}
	d.slowSrv = &dns.Server{PacketConn: d.slow, Net: "udp",
		Handler: dns.HandlerFunc(d.serveChain),
		DecorateWriter: func(w dns.Writer) dns.Writer {
			if dw := d.route.Load().Decorate; dw != nil {
				return dw(w)
			}
			return w
		},
	}
	return d, nil
}

// Serve starts reading the sockets with rt in place, and opens the TCP listeners.
func (d *Door) Serve(rt *Route) {
	d.route.Store(rt)
	go func() {
		if err := d.slowSrv.ActivateAndServe(); err != nil && !isClosed(d.closed) {
			d.log.Errorf("packet door %s: hand-off server stopped: %v", d.Key, err)
		}
	}()
	d.ln.Serve(d.handle)
	d.openStream()
}

// SetRoute routes the door to a new server (a reload).
func (d *Door) SetRoute(rt *Route) { d.route.Store(rt) }

// Sockets is the number of UDP sockets (one per CPU).
func (d *Door) Sockets() int { return d.ln.Sockets() }

// Queued is the number of bytes waiting to be read on the UDP sockets.
func (d *Door) Queued() int { return d.ln.Queued() }

// serveChain answers a query through CoreDNS's server: zone routing and the whole plugin chain.
func (d *Door) serveChain(w dns.ResponseWriter, r *dns.Msg) {
	srv := d.route.Load().Srv
	// As CoreDNS's server calls its handler (dnsserver.Server.ServePacket and ServeTCP).
	ctx := context.WithValue(context.Background(), dnsserver.Key{}, srv)
	ctx = context.WithValue(ctx, dnsserver.LoopKey{}, 0)
	srv.ServeDNS(ctx, w, r)
}

// openStream opens and serves the TCP listeners; without them CoreDNS's server takes TCP alone.
func (d *Door) openStream() {
	sl, err := packetio.ListenStream(d.Key)
	if err != nil {
		d.log.Warningf("packet door %s: TCP listeners: %v; CoreDNS's server takes TCP alone", d.Key, err)
		return
	}
	d.stream = sl
	srv := &packetio.StreamServer{Handler: dns.HandlerFunc(d.serveChain),
		Limits: func() (read, idle, write time.Duration, maxQueries int) {
			// CoreDNS's server's own (its defaults, or the timeouts plugin's), as it reads them.
			s := d.route.Load().Srv
			if s == nil {
				return tcpReadTimeout, tcpIdleTimeout, tcpWriteTimeout, 0
			}
			return cmp.Or(s.ReadTimeout, tcpReadTimeout), cmp.Or(s.IdleTimeout, tcpIdleTimeout),
				cmp.Or(s.WriteTimeout, tcpWriteTimeout), s.MaxTCPQueries
		}}
	for _, l := range sl.Listeners() {
		go func() {
			if err := srv.Serve(l); err != nil && !isClosed(d.closed) {
				d.log.Errorf("packet door %s: TCP server stopped: %v", d.Key, err)
			}
		}()
	}
}

// Detach starts a handover: the UDP sockets leave their SO_REUSEPORT group, the TCP listeners
// close (their queued connections move to another listener of the group), and each accepted TCP
// connection closes once its client has been quiet for quiet.
func (d *Door) Detach(quiet time.Duration) error {
	err := d.ln.Detach()
	if d.stream != nil {
		d.stream.Drain(quiet)
	}
	return err
}

// OpenConns is the number of TCP connections the door still holds.
func (d *Door) OpenConns() int64 {
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

// Close stops the door (what is queued is lost: detach and drain first when that matters).
func (d *Door) Close() {
	if !isClosed(d.closed) {
		close(d.closed)
	}
	d.ln.Close()
	if d.stream != nil {
		d.stream.Close()
	}
}

// handle answers one datagram through its zone's Answer function or through the chain.
func (d *Door) handle(s *packetio.Socket, p []byte, from net.Addr, buf []byte) []byte {
	rt := d.route.Load()
	if rt.Datagrams != nil {
		rt.Datagrams.Inc()
	}
	var q Query
	if !ParseQuery(p, &q) {
		d.slow.handOff(p, from)
		return nil
	}
	z := rt.ZoneFor(q.Name())
	if z == nil || z.Answer == nil {
		d.slow.handOff(p, from)
		return nil
	}
	out, v := z.Answer(s, &q, p, from, buf)
	switch v {
	case Answered:
		return out
	case Chain:
		d.slow.handOff(p, from)
	}
	return nil
}

// HandOff passes a copy of a datagram to CoreDNS's server, waiting while its queue is full.
func (d *Door) HandOff(p []byte, from net.Addr) { d.slow.handOff(p, from) }

// TryHandOff passes p (kept as it is: the caller gives it up) unless the queue is full.
func (d *Door) TryHandOff(p []byte, from net.Addr) bool { return d.slow.tryHandOff(p, from) }

// Servfail is the SERVFAIL CoreDNS's server writes when a plugin fails (dnsserver's errorFunc):
// the query with QR and the rcode set, RD and CD kept, AD cleared, and the client's OPT record as
// it came (a door takes only OPT records without options whose flags are at most DO, which
// errorFunc keeps).
func Servfail(buf, p []byte) []byte {
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
	inFlight *atomic.Int64 // the owner's: a drain waits for handed-off datagrams too
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

// ListenKey turns a server address (dns://host:port) into a listen key: "ip:port", or ":port"
// for a server on every address (CoreDNS binds the same, so the door joins its SO_REUSEPORT
// group).
func ListenKey(addr string) (string, bool) {
	rest, ok := strings.CutPrefix(addr, "dns://")
	if !ok {
		return "", false
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return "", false
	}
	if host == "" {
		return ":" + port, true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", false
	}
	return net.JoinHostPort(ip.String(), port), true
}

// Family is the address family of a client as the standard metrics label it: 1 IPv4, 2 IPv6.
func Family(a net.Addr) byte {
	if u, ok := a.(*net.UDPAddr); ok && u.IP.To4() == nil {
		return 2
	}
	return 1
}

// OnServerStart calls started each time CoreDNS's server of a block starts serving UDP (its first
// start and every reload) with the server and the UDP writer decoration the block's config asks
// for: the exported hook of the config (UDPDecorateWriterFunc), chained after any hook set
// before.
func OnServerStart(cfg *dnsserver.Config, started func(s *dnsserver.Server, dw dns.DecorateWriter)) {
	prev := cfg.UDPDecorateWriterFunc
	cfg.UDPDecorateWriterFunc = func(s *dnsserver.Server) dns.DecorateWriter {
		var dw dns.DecorateWriter
		if prev != nil {
			dw = prev(s)
		}
		started(s, dw)
		return dw
	}
}

// KeyFor is the listen key of a server for a door, or why the server gets none (logged by the
// caller when not empty).
func KeyFor(s *dnsserver.Server, cfg *dnsserver.Config) (key, why string, ok bool) {
	key, ok = ListenKey(s.Addr)
	if !ok {
		return "", "", false
	}
	if cfg.ProxyProtoConnPolicy != nil {
		return key, "not opened: the block reads the PROXY protocol; CoreDNS's server answers alone", false
	}
	if len(s.TsigSecret) > 0 {
		// The hand-off and TCP servers do not check TSIG: a request with a made-up MAC would
		// pass the tsig plugin of any block on the address.
		return key, "not opened: the server checks TSIG; CoreDNS's server answers alone", false
	}
	return key, "", true
}

// ReportingPlugin is the plugin name CoreDNS's prometheus plugin puts on the rcode of every
// answer of a block (coredns_dns_responses_total{plugin}): the handler right after prometheus in
// the chain (only that one's writer tells the recorder its name). "" without prometheus.
func ReportingPlugin(handlers []plugin.Handler) string {
	for i, h := range handlers {
		if h.Name() == "prometheus" && i+1 < len(handlers) {
			return handlers[i+1].Name()
		}
	}
	return ""
}
