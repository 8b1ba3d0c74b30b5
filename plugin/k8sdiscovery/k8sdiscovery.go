// Package k8sdiscovery serves the Kubernetes DNS-based service discovery records from a compact
// store (store.go) that the plugin's own list and watch of the API server keep up to date
// (watch.go); each answer is built from the store when its query comes (answers.go,
// k8sdiscovery.go), and the packet door keeps it in wire form until the store changes (door.go).
package k8sdiscovery

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/labels"
)

// maxCNAMEChain bounds how many CNAMEs (ExternalName hops) an answer holds: 11, as many as
// upstream's kubernetes plugin writes (it follows while fewer than 11 precede). A longer chain is
// answered with its first 11 CNAMEs and nothing more.
const maxCNAMEChain = 11

// resolver looks a name up through the whole server (upstream.Upstream), for ExternalName targets
// outside our zones.
type resolver interface {
	Lookup(ctx context.Context, state request.Request, name string, typ uint16) (*dns.Msg, error)
}

// K8sDiscovery is the k8sdiscovery plugin.
type K8sDiscovery struct {
	Next plugin.Handler

	cfg      config
	zones    []string // all zones, lower case
	primary  string   // first forward zone but multicluster ones: PTR targets are written in it
	fall     fall.F
	store    *store
	upstream resolver
	synced   atomic.Bool

	wire wireCache // the packet door's answers of the store's current generation

	podIndexWanted atomic.Bool
	hostSearch     []string // the server's own search domains, for AutoPath

	stopOnce sync.Once
	stopCh   chan struct{}
}

func newK8sDiscovery(cfg config) *K8sDiscovery {
	k := &K8sDiscovery{cfg: cfg, zones: cfg.zones, store: newStore(cfg.ptrHostnameOnly, cfg.podMode == podsVerified), stopCh: make(chan struct{})}
	if cfg.namespaceLabels != "" {
		k.store.nsLabels, _ = labels.Parse(cfg.namespaceLabels) // checked when the stanza was read
	}
	for _, z := range cfg.zones {
		if !isReverseZone(z) && !slices.Contains(cfg.multicluster, z) {
			k.primary = z
			break
		}
	}
	if k.primary == "" { // only multicluster zones: PTR targets (of the cluster's own names) go in the first
		for _, z := range cfg.zones {
			if !isReverseZone(z) {
				k.primary = z
				break
			}
		}
	}
	if cfg.fall {
		k.fall.SetZonesFromArgs(cfg.fallthroughZones)
	}
	return k
}

// Name implements plugin.Handler.
func (k *K8sDiscovery) Name() string { return pluginName }

// Ready implements ready.Readiness: ready once the first sync with the API server is done.
func (k *K8sDiscovery) Ready() bool { return k.synced.Load() }

// ServeDNS implements plugin.Handler.
func (k *K8sDiscovery) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	zone := k.matchZone(qname)
	if zone == "" {
		return plugin.NextOrFailure(k.Name(), k.Next, ctx, w, r)
	}
	if t := state.QType(); t == dns.TypeAXFR || t == dns.TypeIXFR {
		// No zone transfers here: they would enumerate every service. The transfer plugin, when a
		// block has it above us, answers them for the addresses it allows (transfer.go).
		requestCount.WithLabelValues(metricsServer(ctx), "refused").Inc()
		return dns.RcodeRefused, nil
	}
	if !k.synced.Load() {
		requestCount.WithLabelValues(metricsServer(ctx), "not_synced").Inc()
		return dns.RcodeServerFailure, nil
	}

	m, kind, _, ok := k.build(ctx, state, zone, true)
	if !ok {
		return plugin.NextOrFailure(k.Name(), k.Next, ctx, w, r)
	}
	requestCount.WithLabelValues(metricsServer(ctx), kind).Inc()
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// build is the reply to the query of state, a name in zone, as ServeDNS writes it, the kind of
// answer for metrics and the store's generation it was read in. ok is false (gen still set) when
// the query goes on down the chain (fallthrough), and, with outside false, when the answer needs
// a name resolved outside our zones (the packet door hands those to the chain).
func (k *K8sDiscovery) build(ctx context.Context, state request.Request, zone string, outside bool) (m *dns.Msg, kind string, gen uint64, ok bool) {
	m = new(dns.Msg)
	m.SetReply(state.Req)
	m.Authoritative = true

	// One view of the store for the whole answer (ended early only to resolve a name outside).
	v := k.store.read()
	defer v.end()
	if isReverseZone(zone) {
		kind = k.answerReverse(v, m, state, zone)
	} else if kind, ok = k.answerForward(ctx, v, m, state, zone, outside); !ok {
		return nil, "", v.gen, false
	}
	v.end() // the answer is built: nothing below reads the store (the SOA's serial is the view's)
	if m.Rcode == dns.RcodeNameError && k.fall.Through(state.Name()) {
		return nil, "", v.gen, false
	}
	if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
		m.Ns = []dns.RR{k.soaWithName(zone, zone, v.serial)}
	}
	return m, kind, v.gen, true
}

// answerForward fills m for a name in a forward zone and returns the kind of answer for metrics;
// with outside false, ok is false for an ExternalName chain that leaves our zones (m unfinished).
func (k *K8sDiscovery) answerForward(ctx context.Context, v *view, m *dns.Msg, state request.Request, zone string, outside bool) (kind string, ok bool) {
	qname, qtype := state.QName(), state.QType()
	rel := relativeName(state.Name(), zone)
	rec, found := k.lookup(v, zone, rel, qtype)
	if !found {
		m.Rcode = dns.RcodeNameError
		return "nxdomain", true
	}
	if rec.cname != "" {
		return "externalname", k.answerCNAME(ctx, v, m, state, qname, rec, zone, outside)
	}
	if rel == "" && (qtype == dns.TypeSOA || qtype == dns.TypeNS) {
		k.writeRecords(v, m, qname, rel, rec, qtype, zone)
		return "apex", true
	}
	if rec.empty() {
		return "nodata", true
	}
	k.writeRecords(v, m, qname, rel, rec, qtype, zone)
	if len(m.Answer) == 0 {
		return "nodata", true
	}
	return recordKind(rel, qtype), true
}

// writeRecords adds the records of type qtype that a name of a forward zone holds (rel relative
// to zone, rec its records, not a CNAME), written under owner: the answer of a name asked, or of
// the last name of an ExternalName chain.
func (k *K8sDiscovery) writeRecords(v *view, m *dns.Msg, owner, rel string, rec *rrset, qtype uint16, zone string) {
	switch {
	case rel == "" && qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, k.soaWithName(owner, zone, v.serial))
		return
	case rel == "" && qtype == dns.TypeNS:
		m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(owner, dns.TypeNS, k.cfg.ttl), Ns: "ns.dns." + zone})
		if ns, ok := k.lookup(v, zone, "ns.dns", dns.TypeA); ok {
			m.Extra = append(m.Extra, k.addressRRs("ns.dns."+zone, ns, dns.TypeA)...)
			m.Extra = append(m.Extra, k.addressRRs("ns.dns."+zone, ns, dns.TypeAAAA)...)
		}
		return
	}
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		m.Answer = append(m.Answer, k.addressRRs(owner, rec, qtype)...)
	case dns.TypeSRV:
		srv, extra := k.srvRRs(owner, rec, zone)
		m.Answer, m.Extra = append(m.Answer, srv...), append(m.Extra, extra...)
	case dns.TypeTXT:
		for _, t := range rec.txt {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(owner, dns.TypeTXT, rec.ttl), Txt: []string{t}})
		}
	}
}

// answerCNAME answers an ExternalName service: the CNAME, followed inside our zones through the
// store, and resolved through the server for a target outside them (with outside false, it stops
// there and returns false).
func (k *K8sDiscovery) answerCNAME(ctx context.Context, v *view, m *dns.Msg, state request.Request, owner string, rec *rrset, zone string, outside bool) bool {
	qtype := state.QType()
	seen := map[string]bool{strings.ToLower(owner): true}
	for hop := 0; hop < maxCNAMEChain; hop++ {
		target := rec.cname
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, rec.ttl), Target: target})
		if qtype == dns.TypeCNAME || seen[target] {
			return true
		}
		seen[target] = true
		tzone := k.matchZone(target)
		if tzone == "" || isReverseZone(tzone) {
			if !outside {
				return false
			}
			v.end() // nothing more is read from the store; do not hold it while the server resolves
			k.resolveOutside(ctx, m, state, target, qtype)
			return true
		}
		next, ok := k.lookup(v, tzone, relativeName(target, tzone), qtype)
		if !ok {
			m.Rcode = dns.RcodeNameError
			return true
		}
		if next.cname != "" {
			owner, rec = target, next
			continue
		}
		// Whatever the target holds of the asked type (addresses, SRV, TXT, the apex's SOA).
		k.writeRecords(v, m, target, relativeName(target, tzone), next, qtype, tzone)
		return true
	}
	return true
}

// resolveOutside asks the server (and so the rest of its plugin chain) for a name outside our zones.
func (k *K8sDiscovery) resolveOutside(ctx context.Context, m *dns.Msg, state request.Request, target string, qtype uint16) {
	if k.upstream == nil {
		return
	}
	resp, err := k.upstream.Lookup(ctx, state, target, qtype)
	if err != nil {
		log.Debugf("resolve ExternalName target %s: %v", target, err)
		return
	}
	m.Answer = append(m.Answer, resp.Answer...)
	if resp.Rcode == dns.RcodeNameError {
		m.Rcode = dns.RcodeNameError
	}
}

// answerReverse fills m for a name under in-addr.arpa or ip6.arpa.
func (k *K8sDiscovery) answerReverse(v *view, m *dns.Msg, state request.Request, zone string) string {
	qname, qtype := state.QName(), state.QType()
	if state.Name() == zone {
		switch qtype {
		case dns.TypeSOA:
			m.Answer = []dns.RR{k.soaWithName(qname, zone, v.serial)}
		case dns.TypeNS:
			m.Answer = []dns.RR{&dns.NS{Hdr: hdr(qname, dns.TypeNS, k.cfg.ttl), Ns: "ns.dns." + k.primary}}
		}
		return "apex"
	}
	addr, ok := addressFromReverse(state.Name())
	var targets []string
	if ok {
		targets = v.reverse(addr)
	}
	if len(targets) == 0 {
		m.Rcode = dns.RcodeNameError
		return "nxdomain"
	}
	if qtype != dns.TypePTR {
		return "nodata"
	}
	for _, t := range targets {
		m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr(qname, dns.TypePTR, k.cfg.ttl), Ptr: t + "." + k.primary})
	}
	return "ptr"
}

// lookup resolves a name relative to a forward zone through the query's view.
func (k *K8sDiscovery) lookup(v *view, zone, rel string, qtype uint16) (*rrset, bool) {
	return k.resolveIn(v, zone, rel, qtype == dns.TypeSRV)
}

// resolveIn is resolve, or resolveClusterset in a multicluster zone.
func (k *K8sDiscovery) resolveIn(v *view, zone, rel string, withSRV bool) (*rrset, bool) {
	if k.isClusterset(zone) {
		return k.resolveClusterset(v, rel, withSRV)
	}
	return k.resolve(v, rel, withSRV)
}

func (k *K8sDiscovery) addressRRs(owner string, rec *rrset, qtype uint16) []dns.RR {
	if rec == nil {
		return nil
	}
	var out []dns.RR
	switch qtype {
	case dns.TypeA:
		out = make([]dns.RR, 0, len(rec.a))
		for _, ip := range rec.a {
			out = append(out, &dns.A{Hdr: hdr(owner, dns.TypeA, rec.ttl), A: ip.AsSlice()})
		}
	case dns.TypeAAAA:
		out = make([]dns.RR, 0, len(rec.aaaa))
		for _, ip := range rec.aaaa {
			out = append(out, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, rec.ttl), AAAA: ip.AsSlice()})
		}
	}
	return out
}

// srvRRs writes the SRV records of a name and the addresses of their targets for the additional section.
func (k *K8sDiscovery) srvRRs(owner string, rec *rrset, zone string) (answer, extra []dns.RR) {
	if rec == nil || len(rec.srv) == 0 {
		return nil, nil
	}
	weight := uint16(100 / len(rec.srv))
	if weight == 0 {
		weight = 1
	}
	for _, s := range rec.srv {
		answer = append(answer, &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, rec.ttl), Priority: 0, Weight: weight, Port: s.port, Target: s.target + "." + zone})
	}
	for _, t := range rec.extra {
		name := t.target + "." + zone
		if t.addr.Is4() {
			extra = append(extra, &dns.A{Hdr: hdr(name, dns.TypeA, rec.ttl), A: t.addr.AsSlice()})
		} else {
			extra = append(extra, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, rec.ttl), AAAA: t.addr.AsSlice()})
		}
	}
	return answer, extra
}

// soaWithName is the zone's SOA with the owner written as asked; its names are those of the zone
// (ns.dns.<zone>, hostmaster.<zone>), reverse zones included, as upstream writes them.
func (k *K8sDiscovery) soaWithName(owner, zone string, serial uint32) dns.RR {
	return &dns.SOA{
		Hdr:     hdr(owner, dns.TypeSOA, k.cfg.ttl),
		Ns:      "ns.dns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  k.cfg.ttl,
	}
}

func hdr(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// matchZone is the longest of our zones that holds the lower-case name, or "". A suffix test:
// plugin.Zones.Matches splits both names into labels, the biggest cost of a query.
func (k *K8sDiscovery) matchZone(name string) string {
	best := ""
	for _, z := range k.zones {
		if len(z) <= len(best) {
			continue
		}
		if z == "." || name == z || (strings.HasSuffix(name, z) && name[len(name)-len(z)-1] == '.') {
			best = z
		}
	}
	return best
}

// relativeName strips the zone from a lower-case fully qualified name: "web.ns1.svc".
func relativeName(name, zone string) string {
	if len(name) <= len(zone) {
		return ""
	}
	return name[:len(name)-len(zone)-1]
}

// recordKind names what answered, for the request counter.
func recordKind(rel string, qtype uint16) string {
	switch {
	case rel == "dns-version":
		return "dns_version"
	case qtype == dns.TypeSRV:
		return "srv"
	case strings.HasSuffix(rel, ".pod"):
		return "pod"
	case strings.Count(rel, ".") == 2:
		return "service"
	default:
		return "endpoint"
	}
}

func isReverseZone(zone string) bool {
	return strings.HasSuffix(zone, "in-addr.arpa.") || strings.HasSuffix(zone, "ip6.arpa.")
}

// addressFromReverse reads the address of a full reverse name (4 labels for IPv4, 32 nibbles for IPv6).
func addressFromReverse(name string) (netip.Addr, bool) {
	var s string
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa."):
		labels := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
			labels[i], labels[j] = labels[j], labels[i]
		}
		s = strings.Join(labels, ".")
	case strings.HasSuffix(name, ".ip6.arpa."):
		nibbles := strings.Split(strings.TrimSuffix(name, ".ip6.arpa."), ".")
		if len(nibbles) != 32 {
			return netip.Addr{}, false
		}
		var b strings.Builder
		for i := len(nibbles) - 1; i >= 0; i-- {
			if len(nibbles[i]) != 1 {
				return netip.Addr{}, false
			}
			b.WriteString(nibbles[i])
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		s = b.String()
	default:
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}
