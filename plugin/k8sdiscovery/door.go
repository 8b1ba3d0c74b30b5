package k8sdiscovery

import (
	"cmp"
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The packet door (internal/door): for each address a k8sdiscovery block listens on, the plugin
// opens UDP sockets of its own, read and written in batches, and TCP listeners that answer the
// queries pipelined on one connection concurrently (through the chain). A UDP query of plain
// shape for one of the plugin's zones is answered there, from the bytes CoreDNS's server writes
// for the same question (as asked) to the same shape of client (EDNS size and DO, family), kept
// per store generation: a hit is a copy with the ID, RD and CD put in, never a pack of a dns.Msg.
// Everything else (other shapes, TCP, ANY, fallthrough, ExternalName targets outside the zones,
// blocks where a plugin above k8sdiscovery would see or change the answer) goes to CoreDNS's
// server.

// doorPassive are the plugins that may stand above k8sdiscovery in a block the door answers:
// they change no answer of our zones (any answers only ANY queries, which the door hands on;
// loop only its own probe), and what prometheus would count of a door answer the door counts.
// `log` is not among them: it must see every answer, so a block with log is answered through the
// chain, as is a block with rewrite and the like. loadbalance is a case of its own (reorders).
var doorPassive = map[string]bool{"errors": true, "prometheus": true, "any": true, "loop": true}

// reorderer is loadbalance: above k8sdiscovery it reorders the records of a section (whatever its
// policy: round_robin, weighted, prefer), so the door answers only what no policy reorders
// (loadbalanceStable) and hands the rest to the chain.
const reorderer = "loadbalance"

// doorRules is what the plugins above k8sdiscovery in a block ask of the door.
type doorRules struct {
	nxdomainSlow bool // NXDOMAIN goes to the chain (a door.NXDOMAINRewriter stands above)
	stableOnly   bool // only answers loadbalance leaves as they are (loadbalance stands above)
}

// judgeAbove judges the plugins above k8sdiscovery in a block (door.HandlersAbove): whether the
// door may answer for it, the rules it answers by, and, when it may not, why.
func judgeAbove(others []string, nxdomainSlow bool) (ok bool, rules doorRules, why string) {
	rules.nxdomainSlow = nxdomainSlow
	var blocking []string
	for _, name := range others {
		switch {
		case name == reorderer:
			rules.stableOnly = true
		case !doorPassive[name]:
			blocking = append(blocking, name)
		}
	}
	if len(blocking) > 0 {
		return false, doorRules{}, "plugins above k8sdiscovery: " + strings.Join(blocking, ", ")
	}
	return true, rules, ""
}

// loadbalanceStable reports whether every policy of loadbalance leaves m as it is: a reply
// other than NOERROR, or one where no section holds two address (A, AAAA) or MX records, a
// section with one holds no record of another kind but CNAMEs, and CNAMEs come first. (Each
// policy puts CNAMEs first and reorders address and MX records among themselves; round_robin
// puts other records before them, prefer after them.)
func loadbalanceStable(m *dns.Msg) bool {
	if m.Rcode != dns.RcodeSuccess {
		return true
	}
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		reordered, other := 0, 0
		for i, rr := range section {
			switch rr.Header().Rrtype {
			case dns.TypeCNAME:
				if i > 0 && section[i-1].Header().Rrtype != dns.TypeCNAME {
					return false
				}
			case dns.TypeA, dns.TypeAAAA, dns.TypeMX:
				reordered++
			default:
				other++
			}
		}
		if reordered > 1 || reordered == 1 && other > 0 {
			return false
		}
	}
	return true
}

// doorBlock is a k8sdiscovery server block as the door sees it.
type doorBlock struct {
	k     *K8sDiscovery
	cfg   *dnsserver.Config
	hosts []string  // the block's listen addresses: an IP, or "" for every address
	keys  []keyZone // the zones of the block's keys, each on its port
}

// keyZone is a zone of a server block key and the port it is served on.
type keyZone struct{ zone, port string }

// blockKeyZones are the zones of a server block's keys (lower case, fully qualified; a reverse
// CIDR key gives several) with their ports (CoreDNS's default port when a key has none).
func blockKeyZones(keys []string) []keyZone {
	var out []keyZone
	for _, key := range keys {
		port := dnsserver.Port
		rest := key
		if scheme, after, ok := strings.Cut(rest, "://"); ok {
			if scheme != "dns" {
				continue // a key of another transport (tls://, https://...): not on a door's address
			}
			rest = after
		}
		if i := strings.LastIndexByte(rest, ':'); i >= 0 && i+1 < len(rest) && strings.Trim(rest[i+1:], "0123456789") == "" {
			port = rest[i+1:]
		}
		for _, z := range plugin.Host(key).NormalizeExact() {
			out = append(out, keyZone{zone: strings.ToLower(z), port: port})
		}
	}
	return out
}

// on reports whether the block's zone kz is served at the listen key.
func (b *doorBlock) on(key string, kz keyZone) bool {
	for _, h := range b.hosts {
		l := ":" + kz.port
		if h != "" {
			l = net.JoinHostPort(h, kz.port)
		}
		if l == key {
			return true
		}
	}
	return false
}

// doors are the process's packet doors, by listen key, and the blocks of each caddy instance.
var doors = struct {
	mu       sync.Mutex
	open     map[string]*openDoor
	blocks   map[any][]*doorBlock
	inFlight atomic.Int64
}{open: map[string]*openDoor{}, blocks: map[any][]*doorBlock{}}

// openDoor is a door and the instance whose server it routes to.
type openDoor struct {
	d        *door.Door
	instance any
}

// registerDoor records the block for the doors and hooks CoreDNS's server as it starts serving
// UDP (the exported hook of its config; the first start and every reload).
func registerDoor(instance any, k *K8sDiscovery, cfg *dnsserver.Config, keys []string) {
	if cfg.Transport != "dns" && cfg.Transport != "" {
		return
	}
	b := &doorBlock{k: k, cfg: cfg, keys: blockKeyZones(keys)}
	for _, h := range cfg.ListenHosts {
		if h == "" {
			b.hosts = append(b.hosts, "")
		} else if ip := net.ParseIP(h); ip != nil {
			b.hosts = append(b.hosts, ip.String())
		}
	}
	doors.mu.Lock()
	doors.blocks[instance] = append(doors.blocks[instance], b)
	doors.mu.Unlock()
	door.OnServerStart(cfg, func(s *dnsserver.Server, dw dns.DecorateWriter) { serverStarting(instance, s, cfg, dw) })
}

// serverStarting routes the address's door to the server, opening the door the first time.
func serverStarting(instance any, s *dnsserver.Server, cfg *dnsserver.Config, dw dns.DecorateWriter) {
	key, why, ok := door.KeyFor(s, cfg)
	if !ok {
		if why != "" {
			log.Infof("packet door %s: %s", key, why)
		}
		return
	}
	doors.mu.Lock()
	defer doors.mu.Unlock()
	rt, notes, answers := doorRoute(s, key, doors.blocks[instance], dw)
	for _, note := range notes {
		log.Infof("packet door %s: %s through the plugin chain", key, note)
	}
	if od := doors.open[key]; od != nil {
		od.d.SetRoute(rt)
		od.instance = instance
		return
	}
	if !answers {
		// A door that would hand every datagram on only slows CoreDNS's server down.
		log.Infof("packet door %s: not opened: it would answer nothing itself", key)
		return
	}
	d, err := door.Open(key, rt, &doors.inFlight, log)
	if err != nil {
		log.Warningf("packet door %s: %v; CoreDNS's server answers alone", key, err)
		return
	}
	doors.open[key] = &openDoor{d: d, instance: instance}
	log.Infof("packet door %s: %d sockets (one per CPU), batches of up to %d", key, d.Sockets(), packetio.Batch)
}

// instanceStopped closes the doors that still route to a stopped instance (a reload whose new
// Corefile has no k8sdiscovery on the address, or the process leaving) and forgets its blocks.
func instanceStopped(instance any) {
	doors.mu.Lock()
	delete(doors.blocks, instance)
	var closing []*door.Door
	for key, od := range doors.open {
		if od.instance == instance {
			closing = append(closing, od.d)
			delete(doors.open, key)
		}
	}
	doors.mu.Unlock()
	// Leave the SO_REUSEPORT group first (CoreDNS's own sockets take new datagrams), answer what
	// is queued, then close; outside the lock, which a starting server's hook takes.
	for _, d := range closing {
		if err := d.Detach(closeQuiet); err != nil {
			log.Warningf("packet door %s: leave the SO_REUSEPORT group: %v", d.Key, err)
		}
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		quiet := doors.inFlight.Load() == 0
		for _, d := range closing {
			quiet = quiet && d.Queued() == 0 && d.OpenConns() == 0
		}
		if quiet {
			break
		}
	}
	for _, d := range closing {
		d.Close()
	}
}

// closeQuiet: as a door closes, a TCP connection that brings no query for this long stops being
// read, and closes once the queries it brought are answered.
const closeQuiet = 200 * time.Millisecond

// doorRoute works out, for each zone of the k8sdiscovery blocks on the address, whether the door
// answers it, and whether it answers any. A zone goes to the block CoreDNS routes its names to:
// the one whose key is the longest that holds the zone.
func doorRoute(s *dnsserver.Server, key string, blocks []*doorBlock, dw dns.DecorateWriter) (*door.Route, []string, bool) {
	type keyOf struct {
		b  *doorBlock
		kz keyZone
	}
	var keys []keyOf
	for _, b := range blocks {
		for _, kz := range b.keys {
			if b.on(key, kz) {
				keys = append(keys, keyOf{b, kz})
			}
		}
	}
	// routedTo is the key CoreDNS routes a name of zone z to (nil: none of ours).
	routedTo := func(z string) *keyOf {
		var best *keyOf
		for i := range keys {
			if dns.IsSubDomain(keys[i].kz.zone, z) && (best == nil || len(keys[i].kz.zone) > len(best.kz.zone)) {
				best = &keys[i]
			}
		}
		return best
	}
	var zones []door.Zone
	var notes []string
	has := map[string]bool{}
	answers := false
	for _, ko := range keys {
		b := ko.b
		ok, rules, why := b.eligible()
		if ok && dw != nil {
			ok, why = false, "the server decorates its UDP writer"
		}
		for _, z := range b.k.zones {
			if has[z] || !dns.IsSubDomain(ko.kz.zone, z) {
				continue
			}
			if r := routedTo(z); r.b != b || r.kz != ko.kz {
				continue // another key holds the zone more closely: that block answers it
			}
			has[z] = true
			dz := door.Zone{Name: z}
			if ok {
				a := &doorAnswerer{k: b.k, zone: z, keyZone: ko.kz.zone, rules: rules, report: b.cfg.Handler("prometheus") != nil,
					label: s.Addr, plugin: cmp.Or(door.ReportingPlugin(b.cfg.Handlers()), pluginName)}
				dz.Answer = a.answer
				answers = true
			} else {
				notes = append(notes, z+": "+why)
			}
			zones = append(zones, dz)
		}
	}
	// The blocks' own zones, for their names outside k8sdiscovery's zones: the chain.
	for _, ko := range keys {
		if !has[ko.kz.zone] {
			has[ko.kz.zone] = true
			zones = append(zones, door.Zone{Name: ko.kz.zone})
		}
	}
	return door.NewRoute(s, dw, zones, nil), notes, answers
}

// eligible reports whether the block's queries may be answered before its plugin chain.
func (b *doorBlock) eligible() (ok bool, rules doorRules, why string) {
	others, nxdomainSlow, why := door.Above(b.cfg, pluginName)
	if why != "" {
		return false, rules, why
	}
	return judgeAbove(others, nxdomainSlow)
}

// doorAnswerer answers a zone of a block at the door.
type doorAnswerer struct {
	k        *K8sDiscovery
	zone     string // the k8sdiscovery zone
	keyZone  string // the zone of the block's key that holds it: the standard metrics' zone label
	rules    doorRules
	report   bool     // the block has prometheus: door answers count in coredns_dns_*
	label    string   // the server's metrics label (dns://ip:port)
	plugin   string   // the plugin label of the rcode metric (door.ReportingPlugin)
	counters sync.Map // kind → coredns_k8sdiscovery_requests_total{server=label, kind}
}

// count counts an answer of the kind in coredns_k8sdiscovery_requests_total, as ServeDNS does.
func (a *doorAnswerer) count(kind string) {
	c, ok := a.counters.Load(kind)
	if !ok {
		c, _ = a.counters.LoadOrStore(kind, requestCount.WithLabelValues(a.label, kind))
	}
	c.(prometheus.Counter).Inc()
}

// answer answers a datagram from the wire-form answers of the store's generation, building the
// answer (as CoreDNS's server writes it) when the generation has none for the question yet.
func (a *doorAnswerer) answer(_ *packetio.Socket, q *door.Query, p []byte, from net.Addr, buf []byte) ([]byte, door.Verdict) {
	k := a.k
	if q.QType == dns.TypeANY || !k.synced.Load() {
		return nil, door.Chain
	}
	var start time.Time
	if a.report {
		start = time.Now() // for the standard metrics' duration only
	}
	// The question as asked (its case is the owners'), and what shapes the bytes CoreDNS's
	// server writes for it: the client's EDNS (size and DO: its OPT record is put on the answer,
	// and the size truncates it) and address family (a large answer is compressed for IPv6 from
	// 1,220 bytes, for IPv4 from 1,480).
	var keyBuf [256 + 7]byte
	key := append(append(keyBuf[:0], q.QName...), byte(q.QType>>8), byte(q.QType),
		byte(q.Advertised>>8), byte(q.Advertised), flagByte(q.EDNS, q.DO), door.Family(from))
	w := k.wire.get(key, k.store.gen.Load())
	if w == nil {
		var ok bool
		if w, ok = a.build(p, from, key); !ok {
			return nil, door.Chain
		}
	}
	if w.chain || w.rcode == dns.RcodeNameError && a.rules.nxdomainSlow || a.rules.stableOnly && !w.stable {
		return nil, door.Chain
	}
	out := append(buf[:0], w.wire...)
	binary.BigEndian.PutUint16(out, q.ID)
	flags := binary.BigEndian.Uint16(out[2:])
	if q.RD {
		flags |= dnswire.FlagRD
	}
	if q.CD {
		flags |= dnswire.FlagCD
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	a.count(w.kind)
	if a.report {
		// As the prometheus plugin counts: the block key's zone, and the size of the reply as the
		// plugins wrote it (before the server's OPT record, truncation and compression).
		door.Report(door.StandardKey{Server: a.label, Zone: a.keyZone, Plugin: a.plugin, Fam: door.Family(from), QType: q.QType, Rcode: w.rcode, DO: q.DO},
			len(p), w.written, start)
	}
	return out, door.Answered
}

func flagByte(edns, do bool) byte {
	var b byte
	if edns {
		b |= 1
	}
	if do {
		b |= 2
	}
	return b
}

// build makes the answer to the datagram p as CoreDNS's server writes it (k8sdiscovery's reply,
// then the server's ScrubWriter: the request's OPT record, truncation to the client's size,
// compression of a large UDP answer), with ID 0 and RD and CD clear, and keeps it for the store
// generation it was read in. ok is false when the chain answers it.
func (a *doorAnswerer) build(p []byte, from net.Addr, key []byte) (*wireAnswer, bool) {
	r := new(dns.Msg)
	if err := r.Unpack(p); err != nil || len(r.Question) != 1 {
		return nil, false
	}
	r.Id, r.RecursionDesired, r.CheckingDisabled = 0, false, false
	state := request.Request{W: &doorWriter{from: from}, Req: r}
	m, kind, gen, ok := a.k.build(context.Background(), state, a.zone, false)
	if !ok {
		// Fallthrough, or a target outside: the chain answers this question in this generation
		// (remembered, so that each query pays one build, the chain's).
		w := &wireAnswer{chain: true}
		a.k.wire.put(key, gen, w)
		return w, true
	}
	w := &wireAnswer{kind: kind, rcode: m.Rcode, stable: loadbalanceStable(m), written: m.Len()}
	state.SizeAndDo(m)
	state.Scrub(m)
	b, err := m.Pack()
	if err != nil {
		return nil, false
	}
	w.wire = b
	a.k.wire.put(key, gen, w)
	return w, true
}

// doorWriter is the ResponseWriter a door answer is built for: what request.Request reads of the
// client (its address, hence family and transport).
type doorWriter struct {
	dns.ResponseWriter
	from net.Addr
}

func (w *doorWriter) RemoteAddr() net.Addr { return w.from }

// wireAnswer is the answer to one question (as asked, in its case) for one shape of client, in
// wire form, as CoreDNS's server writes it (ID 0, RD and CD clear).
type wireAnswer struct {
	wire    []byte
	kind    string // for coredns_k8sdiscovery_requests_total
	rcode   int
	stable  bool // loadbalanceStable
	written int  // the reply's length as k8sdiscovery wrote it, for coredns_dns_response_size_bytes
	chain   bool // the chain answers it (fallthrough, a target outside the zones)
}

// wireCache holds the wire-form answers of one store generation: a write to the store makes a
// new generation, and the first answer read in it empties the cache.
type wireCache struct {
	mu    sync.RWMutex
	gen   uint64
	m     map[string]*wireAnswer
	bytes int
}

// wireCacheBytes bounds the bytes of one generation's answers; past it the cache starts over.
const wireCacheBytes = 8 << 20

func (c *wireCache) get(key []byte, gen uint64) *wireAnswer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.gen != gen {
		return nil
	}
	return c.m[string(key)]
}

func (c *wireCache) put(key []byte, gen uint64, w *wireAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case gen < c.gen:
		return // read in an older generation: the store has changed since
	case gen > c.gen || c.m == nil || c.bytes > wireCacheBytes:
		c.gen, c.m, c.bytes = gen, map[string]*wireAnswer{}, 0
	}
	c.m[string(key)] = w
	c.bytes += len(key) + len(w.wire) + 64
}
