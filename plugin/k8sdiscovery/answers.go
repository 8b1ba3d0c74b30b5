package k8sdiscovery

// Names to answers: the records of a name relative to a zone, built from the store through a
// query's view (k8sdiscovery.go writes them into the reply).

import (
	"net/netip"
	"slices"
	"strings"
)

// DNSSchemaVersion is the version of the Kubernetes DNS specification we serve.
const DNSSchemaVersion = "1.1.0"

// rrset is an answer being built: the records of one owner name, relative to the zone.
type rrset struct {
	a, aaaa []netip.Addr
	srv     []srvRecord
	extra   []targetAddr // addresses of the SRV targets, for the additional section
	txt     []string
	cname   string // fully qualified ExternalName target
	ttl     uint32
}

type srvRecord struct {
	port   uint16
	target string // relative name
}

type targetAddr struct {
	target string
	addr   netip.Addr
}

func (r *rrset) empty() bool {
	return r == nil || (len(r.a) == 0 && len(r.aaaa) == 0 && len(r.srv) == 0 && len(r.txt) == 0 && r.cname == "")
}

// addAddr, addSRV and addExtra append; sort removes the duplicates.
func (r *rrset) addAddr(ip netip.Addr) {
	if ip.Is4() {
		r.a = append(r.a, ip)
	} else {
		r.aaaa = append(r.aaaa, ip)
	}
}

func (r *rrset) addSRV(p uint16, target string) {
	r.srv = append(r.srv, srvRecord{port: p, target: target})
}

func (r *rrset) addExtra(target string, addrs ...netip.Addr) {
	for _, a := range addrs {
		r.extra = append(r.extra, targetAddr{target, a})
	}
}

// sort gives every answer a stable order, each record once.
func (r *rrset) sort() *rrset {
	if !slices.IsSortedFunc(r.a, netip.Addr.Compare) {
		slices.SortFunc(r.a, netip.Addr.Compare)
	}
	r.a = slices.Compact(r.a)
	slices.SortFunc(r.aaaa, netip.Addr.Compare)
	r.aaaa = slices.Compact(r.aaaa)
	return r.sortSRV()
}

// sortSRV orders the SRV records and their targets' addresses only (the addresses may be a
// Service's own, shared with other queries).
func (r *rrset) sortSRV() *rrset {
	slices.SortFunc(r.srv, func(x, y srvRecord) int {
		if c := strings.Compare(x.target, y.target); c != 0 {
			return c
		}
		return int(x.port) - int(y.port)
	})
	r.srv = slices.Compact(r.srv)
	slices.SortFunc(r.extra, func(x, y targetAddr) int {
		if c := strings.Compare(x.target, y.target); c != 0 {
			return c
		}
		return x.addr.Compare(y.addr)
	})
	r.extra = slices.Compact(r.extra)
	return r
}

// dnsVersionTTL is the TTL of dns-version's TXT record: it changes only with the schema (upstream
// writes the same 8 hours).
const dnsVersionTTL = 28800

// resolve builds the records of a relative name; ok is false when the name does not exist.
// An existing name without records of any type is an empty rrset (NODATA). SRV records of a
// Service's own name are built only withSRV (they cost a walk over the endpoints).
func (k *K8sDiscovery) resolve(v *view, rel string, withSRV bool) (r *rrset, ok bool) {
	s := v.s
	if rel == "" {
		return &rrset{}, true
	}
	if k.cfg.zonal {
		if before, after, found := strings.Cut(rel, "._zone."); found {
			return k.resolveZonal(v, before, after, withSRV)
		}
	}
	var buf [5]string
	l, fits := splitLabels(rel, &buf)
	if !fits {
		return nil, false
	}
	last := l[len(l)-1]
	switch len(l) {
	case 1:
		switch last {
		case "dns-version":
			return &rrset{txt: []string{DNSSchemaVersion}, ttl: dnsVersionTTL}, true
		case "svc", "pod", "dns":
			return &rrset{}, true
		}
		return nil, false
	case 2:
		switch last {
		case "dns":
			if l[0] != "ns" {
				return nil, false
			}
			r := &rrset{ttl: k.cfg.ttl}
			ns, name, _ := strings.Cut(k.cfg.dnsService, "/")
			if n := s.namespaces[ns]; n != nil {
				if e := n.services[name]; e != nil && e.svc != nil && e.svc.kind == kindClusterIP {
					for _, ip := range e.svc.ips {
						r.addAddr(ip)
					}
				}
			}
			return r.sort(), true
		case "svc":
			n := s.namespaces[l[0]]
			return &rrset{}, s.visible(n) && n.svcExists()
		case "pod":
			n := s.namespaces[l[0]]
			return &rrset{}, k.cfg.podMode != podsDisabled && s.visible(n) && k.podNamespaceExists(n)
		}
		return nil, false
	}
	if last == "pod" {
		if len(l) != 3 || k.cfg.podMode == podsDisabled {
			return nil, false
		}
		n := s.namespaces[l[1]]
		// verified: the spelling dashedIP writes, as the records were named; insecure: any
		// spelling of the address (fd00-0-0-0-0-0-0-7 as fd00--7), as CoreDNS reads it.
		parse := canonicalDashedIP
		if k.cfg.podMode == podsInsecure {
			parse = parseDashedIP
		}
		ip, isIP := parse(l[0])
		if !s.visible(n) || !isIP || !k.podNamespaceExists(n) {
			return nil, false
		}
		if k.cfg.podMode == podsVerified && !s.podAt(n.name, ip) {
			return nil, false
		}
		r := &rrset{ttl: k.cfg.ttl}
		r.addAddr(ip)
		return r, true
	}
	if last != "svc" {
		return nil, false
	}
	svcLabel, nsLabel := l[len(l)-3], l[len(l)-2]
	n := s.namespaces[nsLabel]
	if !s.visible(n) {
		return nil, false
	}
	e := n.services[svcLabel]
	if !e.published() || (k.cfg.ignoreEmptyService && e.svc.kind == kindClusterIP && !e.hasEndpoints()) {
		return nil, false
	}
	switch len(l) {
	case 3:
		return k.serviceRecords(e, withSRV), true
	case 4:
		if strings.HasPrefix(l[0], "_") { // _<proto>.<svc>: exists while a named port of that protocol does
			return &rrset{}, len(k.namedSRV(e, "", l[0][1:], true).srv) > 0
		}
		r := k.endpointRecords(e, l[0])
		return r, !r.empty()
	default:
		if !strings.HasPrefix(l[0], "_") || !strings.HasPrefix(l[1], "_") {
			return nil, false
		}
		r := k.namedSRV(e, l[0][1:], l[1][1:], false)
		return r, len(r.srv) > 0
	}
}

// podNamespaceExists: <ns>.pod exists for a Namespace object, and with pods verified while a pod lives there.
func (k *K8sDiscovery) podNamespaceExists(n *nsData) bool {
	return k.namespaceAllowed(n.name) && (n.exists || (k.cfg.podMode == podsVerified && len(n.pods) > 0))
}

// serviceRecords is <svc>.<ns>.svc: cluster IPs, or a headless Service's endpoints, and (when
// withSRV) SRV records for every port.
func (k *K8sDiscovery) serviceRecords(e *svcEntry, withSRV bool) *rrset {
	svc := e.svc
	switch svc.kind {
	case kindExternalName:
		return &rrset{cname: svc.target, ttl: k.cfg.ttl}
	case kindExternalIP:
		r := &rrset{ttl: k.cfg.ttl}
		r.addAddr(svc.ips[0])
		return r
	case kindHeadless:
		r := &rrset{ttl: k.cfg.headlessTTL}
		if !withSRV {
			n := 0
			for _, sl := range e.slices {
				n += len(sl.eps)
			}
			r.a = make([]netip.Addr, 0, n)
			for _, sl := range e.slices {
				for i := range sl.eps {
					r.addAddr(sl.eps[i].addr)
				}
			}
			return r.sort()
		}
		k.eachEndpointPort(e, func(ep *endpoint, p port, label string) {
			r.addAddr(ep.addr)
			if p.port != 0 {
				r.addSRV(p.port, label+"."+svc.base)
			}
		})
		addTargetAddrs(e, r)
		return r.sort()
	}
	r := &rrset{ttl: k.cfg.ttl, a: svc.a, aaaa: svc.aaaa}
	if withSRV {
		for _, p := range svc.ports {
			r.addSRV(p.port, svc.base)
		}
		if len(svc.ports) > 0 {
			r.addExtra(svc.base, svc.ips...)
		}
	}
	return r.sortSRV()
}

// namedSRV is _<port>._<proto>.<svc>.<ns>.svc (name "" with anyName: every named port of the protocol).
func (k *K8sDiscovery) namedSRV(e *svcEntry, name, proto string, anyName bool) *rrset {
	svc := e.svc
	match := func(p port) bool { return p.name != "" && p.proto == proto && (anyName || p.name == name) }
	switch svc.kind {
	case kindHeadless:
		r := &rrset{ttl: k.cfg.headlessTTL}
		k.eachEndpointPort(e, func(ep *endpoint, p port, label string) {
			if match(p) {
				r.addSRV(p.port, label+"."+svc.base)
			}
		})
		addTargetAddrs(e, r)
		return r.sort()
	case kindClusterIP:
		r := &rrset{ttl: k.cfg.ttl}
		for _, p := range svc.ports {
			if match(p) {
				r.addSRV(p.port, svc.base)
				r.addExtra(svc.base, svc.ips...)
			}
		}
		return r.sort()
	}
	return &rrset{}
}

// endpointRecords is <endpoint>.<svc>.<ns>.svc (<endpoint>.<cluster>.<svc>.<ns>.svc for a
// multicluster Service): the ready addresses published under that label.
func (k *K8sDiscovery) endpointRecords(e *svcEntry, label string) *rrset {
	r := &rrset{ttl: k.cfg.headlessTTL}
	if k := e.svc.kind; k != kindClusterIP && k != kindHeadless {
		return r
	}
	label, cluster, _ := strings.Cut(label, ".")
	ip, isIP := canonicalDashedIP(label)
	for _, sl := range e.slices {
		if sl.cluster != cluster {
			continue
		}
		for i := range sl.eps {
			if ep := &sl.eps[i]; ep.matches(label, ip, isIP) {
				r.addAddr(ep.addr)
			}
		}
	}
	return r.sort()
}

// addTargetAddrs adds, for the additional section, every ready address published under each SRV
// target of a headless Service (an endpoint name may have addresses in slices without that port).
func addTargetAddrs(e *svcEntry, r *rrset) {
	if len(r.srv) == 0 {
		return
	}
	suffix := "." + e.svc.base
	targets := make(map[string]string, len(r.srv)) // label → target
	for _, s := range r.srv {
		targets[strings.TrimSuffix(s.target, suffix)] = s.target
	}
	for _, sl := range e.slices {
		for i := range sl.eps {
			if t, ok := targets[sl.label(&sl.eps[i])]; ok {
				r.addExtra(t, sl.eps[i].addr)
			}
		}
	}
}

// eachEndpointPort calls fn for every ready endpoint with each port of its slice (with a zero
// port for a slice without ports), and the endpoint's label.
func (k *K8sDiscovery) eachEndpointPort(e *svcEntry, fn func(ep *endpoint, p port, label string)) {
	for _, sl := range e.slices {
		for i := range sl.eps {
			ep := &sl.eps[i]
			label := sl.label(ep)
			if len(sl.ports) == 0 {
				fn(ep, port{}, label)
			}
			for _, p := range sl.ports {
				fn(ep, p, label)
			}
		}
	}
}

// splitLabels splits a relative name into buf; fits is false for more than len(buf) labels
// (no name we serve has more).
func splitLabels(rel string, buf *[5]string) (l []string, fits bool) {
	n := 0
	for {
		if n == len(buf) {
			return nil, false
		}
		i := strings.IndexByte(rel, '.')
		if i < 0 {
			buf[n] = rel
			return buf[:n+1], true
		}
		buf[n], rel = rel[:i], rel[i+1:]
		n++
	}
}

// canonicalDashedIP reads a label written as dashedIP writes an address, and only that spelling.
func canonicalDashedIP(label string) (netip.Addr, bool) {
	ip, ok := parseDashedIP(label)
	if !ok || dashedIP(ip) != label {
		return netip.Addr{}, false
	}
	return ip, true
}

// dashedIP writes an address as one DNS label: dots and colons become dashes; an IPv6 label that
// would start or end with a dash gets a 0 there.
func dashedIP(ip netip.Addr) string {
	if ip.Is4() {
		return strings.ReplaceAll(ip.String(), ".", "-")
	}
	s := strings.ReplaceAll(ip.String(), ":", "-")
	if strings.HasPrefix(s, "-") {
		s = "0" + s
	}
	if strings.HasSuffix(s, "-") {
		s += "0"
	}
	return s
}

// parseDashedIP reverses dashedIP; ok is false when the label is not an address.
func parseDashedIP(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 {
		if ip, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && ip.Is4() {
			return ip, true
		}
	}
	ip, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":"))
	return ip, err == nil && ip.Is6() && !ip.Is4In6() && ip.Zone() == ""
}

// resolveZonal answers <zone>.pin|prefer._zone.<svc>.<ns>.svc (before is "<zone>.<directive>",
// after "<svc>.<ns>.svc"): a headless Service's records restricted to the endpoints whose
// EndpointSlice zone is <zone> (every label left of the directive, dots included). pin: none
// there is NODATA; prefer: none there gives every endpoint. Other Services, unknown directives
// and malformed names are NXDOMAIN.
func (k *K8sDiscovery) resolveZonal(v *view, before, after string, withSRV bool) (*rrset, bool) {
	i := strings.LastIndexByte(before, '.')
	svcName, rest, ok1 := strings.Cut(after, ".")
	nsName, last, ok2 := strings.Cut(rest, ".")
	if i <= 0 || !ok1 || !ok2 || last != "svc" {
		return nil, false
	}
	zone, directive := before[:i], before[i+1:]
	if directive != "pin" && directive != "prefer" {
		return nil, false
	}
	n := v.s.namespaces[nsName]
	if !v.s.visible(n) {
		return nil, false
	}
	e := n.services[svcName]
	if !e.published() || e.svc.kind != kindHeadless {
		return nil, false
	}
	in := func(sl *endpointSlice, ep *endpoint) bool { return ep.zone > 0 && sl.zones[ep.zone-1] == zone }
	r := &rrset{ttl: k.cfg.headlessTTL}
	for _, sl := range e.slices {
		for i := range sl.eps {
			ep := &sl.eps[i]
			if !in(sl, ep) {
				continue
			}
			r.addAddr(ep.addr)
			if withSRV {
				target := ep.label() + "." + e.svc.base
				for _, p := range sl.ports {
					r.addSRV(p.port, target)
				}
				if len(sl.ports) > 0 {
					r.addExtra(target, ep.addr)
				}
			}
		}
	}
	if r.empty() && directive == "prefer" {
		return k.serviceRecords(e, withSRV), true
	}
	return r.sort(), true
}
