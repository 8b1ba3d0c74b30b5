package nodecache

import (
	"context"
	"errors"
	"net"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/reuseport"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The fast path answers UDP cache hits before CoreDNS's server sees them.
//
// For each listen address the process opens UDP sockets of its own in the address's
// SO_REUSEPORT group (one per CPU the process may use) and takes the server's own socket out of
// the group (it connects it to the discard port, as a handover does: what is queued on it is
// still read and answered by the server). Each socket is read in batches (recvmmsg); a query of
// plain shape whose answer is in the cache, fresh, is answered from the wire-format entry (ID,
// flags, the asker's spelling, TTLs and OPT patched in, TC when it does not fit) and the answers
// go out in batches (sendmmsg). Every other datagram (misses, expired entries, other opcodes,
// EDNS options, malformed packets, zones of other plugins) is handed, as it came, to a miekg/dns
// server that runs CoreDNS's server handler (zone routing and the whole plugin chain) and
// writes through the same socket: the normal CoreDNS path.

// fastBatch is the number of datagrams read (and answers written) per system call.
const fastBatch = 64

// passivePlugins may stand above nodecache in a block served by the fast path: they watch
// queries but do not change answers. Fast-path hits do not go through them (see README).
var passivePlugins = map[string]bool{"errors": true, "log": true, "prometheus": true}

// nxdomainRewriter is a plugin that may stand above nodecache and changes an answer only when the
// asked name is NXDOMAIN (searchpath: a name that exists is answered as it is). With one above,
// the fast path answers every cache hit but NXDOMAIN, which goes to the plugin chain.
type nxdomainRewriter interface{ RewritesOnlyNXDOMAIN() bool }

// fastZone is one zone of a CoreDNS server: the nodecache block that answers it on the fast
// path, or nil when its queries must go through the server.
type fastZone struct {
	name         string // lower case, fully qualified
	nc           *NodeCache
	nxdomainSlow bool // NXDOMAIN hits go through the chain (a nxdomainRewriter stands above)
	hitSuccess   prometheus.Counter
	hitDenial    prometheus.Counter
	truncated    prometheus.Counter
	misses       prometheus.Counter
	inFlight     prometheus.Gauge
}

// fastRoute is what the fast path knows of the CoreDNS server on its address.
type fastRoute struct {
	srv      *dnsserver.Server
	label    string     // the server label of metrics (dns://ip:port)
	zones    []fastZone // longest first
	decorate dns.DecorateWriter
}

// zoneFor is the zone CoreDNS's server would route the lower-case name to.
func (r *fastRoute) zoneFor(name []byte) *fastZone {
	for i := range r.zones {
		if inZone(name, r.zones[i].name) {
			return &r.zones[i]
		}
	}
	return nil
}

// fastListener is the fast path of one listen address ("ip:port"), for the life of the process
// (reloads replace its route).
type fastListener struct {
	key   string
	node  *node
	route atomic.Pointer[fastRoute]
	conns []*net.UDPConn

	slow     *handoffConn
	slowSrv  *dns.Server
	closed   chan struct{}
	closeErr sync.Once
	wg       sync.WaitGroup
}

// batchConn is ipv4.PacketConn or ipv6.PacketConn (their Message is the same type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func startFastListener(n *node, key string) (*fastListener, error) {
	fl := &fastListener{key: key, node: n, closed: make(chan struct{})}
	count := min(runtime.GOMAXPROCS(0), 8)
	for range count {
		pc, err := reuseport.ListenPacket("udp", key)
		if err != nil {
			fl.closeConns()
			return nil, err
		}
		c := pc.(*net.UDPConn)
		if rc, err := c.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer) != nil {
					unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
				}
			})
		}
		fl.conns = append(fl.conns, c)
	}
	fl.slow = &handoffConn{in: make(chan slowPacket, 1024), closed: fl.closed, out: fl.conns[0], inFlight: &n.inFlight}
	fl.slowSrv = &dns.Server{PacketConn: fl.slow, Net: "udp",
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			rt := fl.route.Load()
			// As CoreDNS's server calls its handler (dnsserver.Server.ServePacket).
			ctx := context.WithValue(context.Background(), dnsserver.Key{}, rt.srv)
			ctx = context.WithValue(ctx, dnsserver.LoopKey{}, 0)
			rt.srv.ServeDNS(ctx, w, r)
		}),
		DecorateWriter: func(w dns.Writer) dns.Writer {
			if d := fl.route.Load().decorate; d != nil {
				return d(w)
			}
			return w
		},
	}
	for _, c := range fl.conns {
		var bc batchConn = ipv4.NewPacketConn(c)
		if c.LocalAddr().(*net.UDPAddr).IP.To4() == nil {
			bc = ipv6.NewPacketConn(c)
		}
		sender := newAnswerSender(bc, &n.inFlight, fl.closed)
		fl.wg.Add(2)
		go fl.serve(c, bc, sender)
		go func() {
			defer fl.wg.Done()
			sender.run()
		}()
	}
	go func() {
		if err := fl.slowSrv.ActivateAndServe(); err != nil && !fl.isClosed() {
			log.Errorf("fast path %s: hand-off server stopped: %v", key, err)
		}
	}()
	return fl, nil
}

func (fl *fastListener) isClosed() bool {
	select {
	case <-fl.closed:
		return true
	default:
		return false
	}
}

// fds are the descriptors of the fast path's sockets.
func (fl *fastListener) fds() map[int]bool {
	fds := map[int]bool{}
	for _, c := range fl.conns {
		if rc, err := c.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { fds[int(fd)] = true })
		}
	}
	return fds
}

func (fl *fastListener) closeConns() {
	for _, c := range fl.conns {
		c.Close()
	}
}

// close stops the readers and closes the sockets (what is still queued on them is lost: the
// process drains before it calls this).
func (fl *fastListener) close() {
	fl.closeErr.Do(func() {
		close(fl.closed)
		fl.closeConns()
		fl.wg.Wait()
	})
}

// serve reads datagrams in batches, answers the hits in one batch write, asks upstream for the
// misses (their answers leave through sender) and hands the rest on.
func (fl *fastListener) serve(c *net.UDPConn, bc batchConn, sender *answerSender) {
	defer fl.wg.Done()
	in := make([]ipv4.Message, fastBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	out := make([]ipv4.Message, fastBatch)
	outBufs := make([][]byte, fastBatch)
	for i := range out {
		out[i].Buffers = make([][]byte, 1)
		outBufs[i] = make([]byte, 0, 2048)
	}
	var q fastQuery
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if fl.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Warningf("fast path %s: read: %v", fl.key, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fl.node.inFlight.Add(int64(n))
		rt := fl.route.Load()
		now := time.Now()
		k := 0
		for i := range n {
			m := &in[i]
			p := m.Buffers[0][:m.N]
			b, verdict, z := answerFast(rt, fl.node.cache, p, &q, outBufs[k][:0], now)
			switch {
			case verdict == fastAnswered:
				if cap(b) > cap(outBufs[k]) {
					outBufs[k] = b[:0] // keep the larger buffer
				}
				out[k].Buffers[0] = b
				out[k].Addr = m.Addr
				k++
			case verdict == fastMiss && fl.askUpstream(z, &q, p, m.Addr, sender):
			default:
				fl.slow.handOff(p, m.Addr)
			}
		}
		writeBatch(bc, out[:k])
		for i := range k {
			out[i].Addr = nil
		}
		fl.node.inFlight.Add(-int64(n))
	}
}

// fastVerdict is what the fast path does with a datagram.
type fastVerdict int

const (
	fastSlow     fastVerdict = iota // hand it to the normal CoreDNS path
	fastAnswered                    // answered from the cache
	fastMiss                        // a plain query of a fast-path zone without a usable entry: ask upstream
)

// answerFast renders the answer to the query in p from the cache into buf when the fast path may
// answer it: a plain query for a zone a nodecache block serves on the fast path, with a fresh
// entry. It counts the hit and starts a prefetch as the slow path would. A miss (no entry, or
// one past its stale window) comes back as fastMiss with its zone; an expired entry that may
// still serve stale goes to the slow path, which asks again and serves stale if that fails.
func answerFast(rt *fastRoute, c *cache, p []byte, q *fastQuery, buf []byte, now time.Time) ([]byte, fastVerdict, *fastZone) {
	if rt == nil || !parseFastQuery(p, q) {
		return nil, fastSlow, nil
	}
	z := rt.zoneFor(q.name())
	if z == nil || z.nc == nil {
		return nil, fastSlow, nil
	}
	key := cacheKey{hash: q.hash, qtype: q.qtype, qclass: dns.ClassINET, do: q.do, cd: q.cd}
	e := c.getFast(key, q.name())
	if e == nil || now.After(e.staleUntil) {
		return nil, fastMiss, z
	}
	if z.nxdomainSlow && e.answer.rcode == dns.RcodeNameError {
		return nil, fastSlow, nil // the plugin above may turn it into its search list's answer
	}
	ttl := e.remaining(now)
	if ttl == 0 {
		return nil, fastSlow, nil // expired: asked again (or served stale) by the slow path
	}
	out, ok := e.answer.render(buf, q.reply(), ttl)
	if !ok {
		return nil, fastSlow, nil
	}
	if e.answer.denial {
		z.hitDenial.Inc()
	} else {
		z.hitSuccess.Inc()
	}
	if len(out) > 2 && out[2]&(flagTC>>8) != 0 && len(e.answer.wire) > len(out) {
		z.truncated.Inc()
	}
	if z.nc.shouldPrefetch(e, now) {
		prefetches.WithLabelValues(rt.label).Inc()
		qs := dns.Question{Name: string(q.name()), Qtype: q.qtype, Qclass: dns.ClassINET}
		go z.nc.refresh(key, qs, q.do, q.cd, e)
	}
	return out, fastAnswered, z
}

// slowPacket is a datagram on its way to the normal CoreDNS path.
type slowPacket struct {
	b    []byte
	addr net.Addr
}

// handoffConn is the net.PacketConn of the hand-off server: it reads what the fast path passes
// on and writes through the fast path's socket.
type handoffConn struct {
	in       chan slowPacket
	closed   chan struct{}
	out      *net.UDPConn
	inFlight *atomic.Int64 // the node's: a drain waits for handed-off datagrams too
}

func (h *handoffConn) handOff(p []byte, addr net.Addr) {
	h.inFlight.Add(1)
	select {
	case h.in <- slowPacket{b: append([]byte(nil), p...), addr: addr}:
	case <-h.closed:
		h.inFlight.Add(-1)
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

func (h *handoffConn) WriteTo(b []byte, addr net.Addr) (int, error) { return h.out.WriteTo(b, addr) }
func (h *handoffConn) Close() error                                 { return nil }
func (h *handoffConn) LocalAddr() net.Addr                          { return h.out.LocalAddr() }
func (h *handoffConn) SetDeadline(time.Time) error                  { return nil }
func (h *handoffConn) SetReadDeadline(time.Time) error              { return nil }
func (h *handoffConn) SetWriteDeadline(time.Time) error             { return nil }

// fastBlock is a nodecache server block as the fast path sees it.
type fastBlock struct {
	nc     *NodeCache
	cfg    *dnsserver.Config
	zones  []string // lower case, fully qualified
	listen map[string]bool
}

// eligible reports whether the block's queries may be answered before its plugin chain: no
// plugin above nodecache changes answers (but for NXDOMAIN, then nxdomainSlow), no views, no
// TSIG. why says what stands in the way.
func (b *fastBlock) eligible() (ok, nxdomainSlow bool, why string) {
	if len(b.cfg.FilterFuncs) > 0 {
		return false, false, "the block has filters (view)"
	}
	if len(b.cfg.TsigSecret) > 0 {
		return false, false, "the block has TSIG secrets"
	}
	return handlersAllowFastPath(b.cfg.Handlers())
}

// handlersAllowFastPath reads the handlers of a block down to nodecache.
func handlersAllowFastPath(handlers []plugin.Handler) (ok, nxdomainSlow bool, why string) {
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

// serverZones reads which zones CoreDNS's server routes and how many blocks share each (the
// server keeps them private; read-only reflection, checked by a test against the pinned version).
func serverZones(s *dnsserver.Server) (map[string]int, bool) {
	v := reflect.ValueOf(s).Elem().FieldByName("zones")
	if !v.IsValid() || v.Kind() != reflect.Map || v.Type().Key().Kind() != reflect.String {
		return nil, false
	}
	zones := map[string]int{}
	for it := v.MapRange(); it.Next(); {
		zones[strings.ToLower(it.Key().String())] = it.Value().Len()
	}
	return zones, true
}

// serverPlain reports whether the server reads plain DNS datagrams with the default accept
// policy: no PROXY protocol on its socket and no extra opcodes allowed.
func serverPlain(s *dnsserver.Server) bool {
	v := reflect.ValueOf(s).Elem()
	pp, ops := v.FieldByName("connPolicy"), v.FieldByName("allowedOpcodes")
	if !pp.IsValid() || pp.Kind() != reflect.Func || !ops.IsValid() || ops.Kind() != reflect.Map {
		return false
	}
	return pp.IsNil() && ops.Len() == 0
}

// buildRoute works out, for each zone of the server, whether the fast path answers it.
func buildRoute(s *dnsserver.Server, key string, blocks []*fastBlock, dw dns.DecorateWriter) (*fastRoute, []string) {
	zones, ok := serverZones(s)
	if !ok {
		return nil, []string{"cannot read the server's zones"}
	}
	rt := &fastRoute{srv: s, label: s.Addr, decorate: dw}
	var notes []string
	for z, count := range zones {
		fz := fastZone{name: z}
		for _, b := range blocks {
			if !b.listen[key] || !containsString(b.zones, z) {
				continue
			}
			if ok, nxdomainSlow, why := b.eligible(); !ok {
				notes = append(notes, z+": "+why)
			} else if count != 1 {
				notes = append(notes, z+": several blocks serve it")
			} else {
				fz.nc = b.nc
				fz.nxdomainSlow = nxdomainSlow
				fz.hitSuccess = cacheHits.WithLabelValues(s.Addr, "success")
				fz.hitDenial = cacheHits.WithLabelValues(s.Addr, "denial")
				fz.truncated = truncated.WithLabelValues(s.Addr)
				fz.misses = cacheMisses.WithLabelValues(s.Addr)
				fz.inFlight = inFlight.WithLabelValues(s.Addr)
			}
			break
		}
		rt.zones = append(rt.zones, fz)
	}
	sort.Slice(rt.zones, func(i, j int) bool { return len(rt.zones[i].name) > len(rt.zones[j].name) })
	return rt, notes
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
