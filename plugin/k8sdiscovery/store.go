package k8sdiscovery

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/kube"
	"k8s.io/apimachinery/pkg/labels"
)

// The store keeps what DNS needs of each API object, in small structs, and nothing else: no
// copy of the objects, no precomputed names. Answers are built from it when a query comes
// (a map lookup for the namespace and one for the Service, then a walk over that Service's
// ready endpoints). At 10,000 Services with 150,000 endpoints this is about a tenth of the memory
// that informer caches plus a name index took.
//
// Every object carries the epoch of the list or watch event that last wrote it; after a relist,
// what the new list did not name is swept, so a relist updates the store in place.

type svcKind uint8

const (
	kindClusterIP svcKind = iota
	kindHeadless
	kindExternalName // target is a domain name
	kindExternalIP   // an ExternalName that is an address (externalname_ip)
	kindUnpublished  // no cluster IP yet, or an ExternalName we do not answer: the name does not exist
)

// port is a named or unnamed port of a Service or of an EndpointSlice.
type port struct {
	name  string // lower case; "" for an unnamed port (no SRV name of its own)
	proto string // lower case: tcp, udp, sctp
	port  uint16
}

// service is one Service: its addresses, ports and the EndpointSlices that name it.
type service struct {
	name   string // lower case
	base   string // "<name>.<ns>.svc", relative to the zone
	kind   svcKind
	ips    []netip.Addr // cluster IPs (sorted), or the ExternalName address
	a      []netip.Addr // the IPv4 and IPv6 ones among ips, shared by answers: never modified
	aaaa   []netip.Addr
	ports  []port
	target string // ExternalName, fully qualified, lower case
	epoch  uint32

	// For k8sdiscovery_external: spec.externalIPs and the load balancer's ingress addresses
	// (sorted), and its ingress hostnames (fully qualified). Nil for most Services.
	external      []netip.Addr
	externalHosts []string
}

// endpointSlice is the ready endpoints of one EndpointSlice, with the slice's ports.
type endpointSlice struct {
	service string // the kubernetes.io/service-name label
	ports   []port
	eps     []endpoint
	zones   []string // with zonal: the endpoints' topology zones, lower case (endpoint.zone indexes it)
	cluster string   // multicluster: the source cluster (an endpoint is <hostname>.<cluster>); "" for the cluster's own
	trigger int64    // last-change-trigger-time, Unix ns (programming latency)
	epoch   uint32
}

// endpoint is one ready address. name is the hostname (or, with endpoint_pod_names, the pod's
// name); empty means the dashed address.
type endpoint struct {
	addr     netip.Addr
	name     string
	hostname bool  // name came from the hostname field (ptr_hostname_only)
	zone     uint8 // with zonal: 1 + the index of its zone in the slice's zones; 0 for none
}

// pod is a live pod with an address (pods verified, and the client index for searchpath).
type podData struct {
	ns    *nsData
	name  string
	ips   []netip.Addr
	spec  *kube.DNSClient // only when searchpath asked for the pod index
	epoch uint32
}

// svcEntry is a Service name of a namespace: the Service (nil until it is seen) and its slices.
type svcEntry struct {
	svc    *service
	slices []*endpointSlice
}

type nsData struct {
	name     string
	exists   bool // a Namespace object
	selected bool // its labels match namespace_labels
	nsEpoch  uint32
	services map[string]*svcEntry
	slices   map[string]*endpointSlice // by slice name
	pods     map[string]*podData       // by pod name

	// multicluster: ServiceImports and their slices (nil until one is seen).
	imports  map[string]*svcEntry
	mcSlices map[string]*endpointSlice
}

// addrIndex maps an address to the values that hold it. Most addresses have one holder, kept in
// one; the rest spill into more.
type addrIndex[T comparable] struct {
	one  map[[16]byte]T
	more map[[16]byte][]T
}

func newAddrIndex[T comparable]() addrIndex[T] {
	return addrIndex[T]{one: map[[16]byte]T{}, more: map[[16]byte][]T{}}
}

func (x *addrIndex[T]) add(a netip.Addr, v T) {
	k := a.As16()
	cur, ok := x.one[k]
	switch {
	case !ok:
		x.one[k] = v
	case cur != v && !slices.Contains(x.more[k], v):
		x.more[k] = append(x.more[k], v)
	}
}

func (x *addrIndex[T]) remove(a netip.Addr, v T) {
	k := a.As16()
	cur, ok := x.one[k]
	if !ok {
		return
	}
	more := x.more[k]
	if cur == v {
		if len(more) == 0 {
			delete(x.one, k)
			return
		}
		x.one[k] = more[0]
		more = more[1:]
	} else if i := slices.Index(more, v); i >= 0 {
		more = slices.Delete(more, i, i+1)
	}
	if len(more) == 0 {
		delete(x.more, k)
	} else {
		x.more[k] = more
	}
}

// each calls fn for every holder of a.
func (x *addrIndex[T]) each(a netip.Addr, fn func(T)) {
	k := a.As16()
	if v, ok := x.one[k]; ok {
		fn(v)
		for _, m := range x.more[k] {
			fn(m)
		}
	}
}

func (x *addrIndex[T]) len() int { return len(x.one) }

// store is the plugin's view of the cluster. Writers hold mu for one object at a time.
type store struct {
	mu         sync.RWMutex
	namespaces map[string]*nsData
	ptrs       addrIndex[*svcEntry] // addresses with PTR records → the Service names that own them
	podIPs     addrIndex[*podData]
	counts     struct{ services, slices, namespaces, pods, imports int }
	serial     uint32
	changes    uint64        // writes that changed DNS data (each bumped the serial)
	gen        atomic.Uint64 // changes, read without mu (the packet door's answers are per generation)

	ptrHostnameOnly bool
	podRecords      bool            // pods verified: a pod's addresses are DNS data
	nsLabels        labels.Selector // namespace_labels: nil, or the labels a served namespace has
}

func newStore(ptrHostnameOnly, podRecords bool) *store {
	return &store{
		namespaces:      map[string]*nsData{},
		ptrs:            newAddrIndex[*svcEntry](),
		podIPs:          newAddrIndex[*podData](),
		serial:          uint32(time.Now().Unix()),
		ptrHostnameOnly: ptrHostnameOnly,
		podRecords:      podRecords,
	}
}

// changed bumps the SOA serial; the caller holds mu.
func (s *store) changed() {
	s.changes++
	s.gen.Store(s.changes)
	if now := uint32(time.Now().Unix()); now > s.serial {
		s.serial = now
	} else {
		s.serial++
	}
}

func (s *store) soaSerial() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.serial
}

// view is one consistent look at the store: the boundary between watching and answering. A query
// takes one view, reads everything it answers from through it (names, reverse addresses, the
// serial as it was when the view began) and ends it before it waits on anything outside the
// plugin (an ExternalName target resolved through the server), so no write lands in the middle
// of an answer and no write waits on a slow lookup.
type view struct {
	s      *store
	serial uint32
	gen    uint64 // the store's changes when the view began: answers read in it hold while it holds
	open   bool
}

// read begins a view; end it with end (a second end does nothing).
func (s *store) read() *view {
	s.mu.RLock()
	return &view{s: s, serial: s.serial, gen: s.changes, open: true}
}

func (v *view) end() {
	if v.open {
		v.open = false
		v.s.mu.RUnlock()
	}
}

func (s *store) changeCount() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changes
}

// ns returns the namespace, creating it; the caller holds mu.
func (s *store) ns(name string) *nsData {
	n := s.namespaces[name]
	if n == nil {
		n = &nsData{name: name, services: map[string]*svcEntry{}, slices: map[string]*endpointSlice{}, pods: map[string]*podData{}}
		s.namespaces[name] = n
	}
	return n
}

// gc drops a namespace that holds nothing; the caller holds mu.
func (s *store) gc(n *nsData) {
	if !n.exists && len(n.services) == 0 && len(n.slices) == 0 && len(n.pods) == 0 && len(n.imports) == 0 && len(n.mcSlices) == 0 {
		delete(s.namespaces, n.name)
	}
}

func (s *store) entry(n *nsData, svc string) *svcEntry {
	e := n.services[svc]
	if e == nil {
		e = &svcEntry{}
		n.services[svc] = e
	}
	return e
}

func (s *store) dropEntry(n *nsData, name string, e *svcEntry) {
	if e.svc == nil && len(e.slices) == 0 {
		delete(n.services, name)
	}
}

// ptrAddrs is the set of addresses with a PTR record for a Service name.
func (s *store) ptrAddrs(e *svcEntry) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	if e.svc == nil || e.svc.kind == kindUnpublished || e.svc.kind == kindExternalName || e.svc.kind == kindExternalIP {
		return out
	}
	if e.svc.kind == kindClusterIP {
		for _, ip := range e.svc.ips {
			out[ip] = true
		}
	}
	for _, sl := range e.slices {
		for _, ep := range sl.eps {
			if !s.ptrHostnameOnly || ep.hostname {
				out[ep.addr] = true
			}
		}
	}
	return out
}

// updateEntry runs fn, which changes one Service name, and moves its reverse addresses.
func (s *store) updateEntry(e *svcEntry, fn func()) {
	before := s.ptrAddrs(e)
	fn()
	after := s.ptrAddrs(e)
	for a := range before {
		if !after[a] {
			s.ptrs.remove(a, e)
		}
	}
	for a := range after {
		if !before[a] {
			s.ptrs.add(a, e)
		}
	}
}

// putService stores a Service (nil svc: deleted). It reports whether DNS data changed.
func (s *store) putService(ns, name string, svc *service) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(ns)
	e := n.services[name]
	if svc == nil {
		if e == nil || e.svc == nil {
			s.gc(n)
			return false
		}
		s.updateEntry(e, func() { e.svc = nil })
		s.counts.services--
		s.dropEntry(n, name, e)
		s.gc(n)
		s.changed()
		return true
	}
	e = s.entry(n, name)
	if e.svc != nil && e.svc.equal(svc) {
		e.svc.epoch = svc.epoch
		return false
	}
	if e.svc == nil {
		s.counts.services++
	}
	s.updateEntry(e, func() { e.svc = svc })
	s.changed()
	return true
}

// putSlice stores an EndpointSlice (nil sl: deleted). It reports whether DNS data changed and
// the trigger time of the previous version (0 if none).
func (s *store) putSlice(ns, name string, sl *endpointSlice) (changed bool, prevTrigger int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(ns)
	old := n.slices[name]
	if old != nil {
		prevTrigger = old.trigger
	}
	if sl != nil && old != nil && old.equal(sl) {
		old.epoch, old.trigger = sl.epoch, sl.trigger
		return false, prevTrigger
	}
	if old == nil && sl == nil {
		s.gc(n)
		return false, 0
	}
	if old != nil {
		e := n.services[old.service]
		s.updateEntry(e, func() { e.slices = slices.DeleteFunc(e.slices, func(x *endpointSlice) bool { return x == old }) })
		s.dropEntry(n, old.service, e)
		delete(n.slices, name)
		s.counts.slices--
	}
	if sl != nil {
		e := s.entry(n, sl.service)
		s.updateEntry(e, func() { e.slices = append(e.slices, sl) })
		n.slices[name] = sl
		s.counts.slices++
	}
	s.gc(n)
	s.changed()
	return true, prevTrigger
}

// putNamespace records whether a Namespace object exists.
func (s *store) putNamespace(name string, exists bool, epoch uint32, nsLabels map[string]string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(name)
	n.nsEpoch = epoch
	selected := exists && s.nsLabels != nil && s.nsLabels.Matches(labels.Set(nsLabels))
	if n.exists == exists && n.selected == selected {
		s.gc(n)
		return false
	}
	if n.exists == exists { // only the labels changed what is served
		n.selected = selected
		s.gc(n)
		s.changed()
		return true
	}
	n.exists, n.selected = exists, selected
	if exists {
		s.counts.namespaces++
	} else {
		s.counts.namespaces--
	}
	s.gc(n)
	s.changed()
	return true
}

// putPod stores a live pod with addresses (nil p: deleted, finished or without an address). It
// reports whether pod records changed (never without pods verified).
func (s *store) putPod(ns, name string, p *podData) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(ns)
	old := n.pods[name]
	if p != nil && old != nil && old.equal(p) {
		old.epoch = p.epoch
		return false
	}
	if old == nil && p == nil {
		s.gc(n)
		return false
	}
	if old != nil {
		for _, ip := range old.ips {
			s.podIPs.remove(ip, old)
		}
		delete(n.pods, name)
		s.counts.pods--
	}
	if p != nil {
		p.ns, p.name = n, name
		n.pods[name] = p
		for _, ip := range p.ips {
			s.podIPs.add(ip, p)
		}
		s.counts.pods++
	}
	s.gc(n)
	// Only pod records are DNS data: the details searchpath reads are not.
	if !s.podRecords || (old != nil && p != nil && slices.Equal(old.ips, p.ips)) {
		return false
	}
	s.changed()
	return true
}

// sweep removes the objects of one resource that the list of epoch did not name.
func (s *store) sweep(resource string, epoch uint32) int {
	type victim struct {
		ns, name string
		mc       bool // a multicluster slice
	}
	var gone []victim
	s.mu.RLock()
	for _, n := range s.namespaces {
		switch resource {
		case resServices:
			for name, e := range n.services {
				if e.svc != nil && e.svc.epoch != epoch {
					gone = append(gone, victim{n.name, name, false})
				}
			}
		case resSlices:
			for name, sl := range n.slices {
				if sl.epoch != epoch {
					gone = append(gone, victim{n.name, name, false})
				}
			}
			for name, sl := range n.mcSlices {
				if sl.epoch != epoch {
					gone = append(gone, victim{n.name, name, true})
				}
			}
		case resImports:
			for name, e := range n.imports {
				if e.svc != nil && e.svc.epoch != epoch {
					gone = append(gone, victim{n.name, name, false})
				}
			}
		case resNamespaces:
			if n.exists && n.nsEpoch != epoch {
				gone = append(gone, victim{n.name, "", false})
			}
		case resPods:
			for name, p := range n.pods {
				if p.epoch != epoch {
					gone = append(gone, victim{n.name, name, false})
				}
			}
		}
	}
	s.mu.RUnlock()
	for _, v := range gone {
		switch resource {
		case resServices:
			s.putService(v.ns, v.name, nil)
		case resSlices:
			if v.mc {
				s.putMCSlice(v.ns, v.name, nil)
			} else {
				s.putSlice(v.ns, v.name, nil)
			}
		case resImports:
			s.putImport(v.ns, v.name, nil)
		case resNamespaces:
			s.putNamespace(v.ns, false, epoch, nil)
		case resPods:
			s.putPod(v.ns, v.name, nil)
		}
	}
	return len(gone)
}

func (a *service) equal(b *service) bool {
	return a.name == b.name && a.base == b.base && a.kind == b.kind && a.target == b.target &&
		slices.Equal(a.ips, b.ips) && slices.Equal(a.ports, b.ports) &&
		slices.Equal(a.external, b.external) && slices.Equal(a.externalHosts, b.externalHosts)
}

func (a *endpointSlice) equal(b *endpointSlice) bool {
	return a.service == b.service && a.cluster == b.cluster && slices.Equal(a.ports, b.ports) && slices.Equal(a.eps, b.eps) && slices.Equal(a.zones, b.zones)
}

func (a *podData) equal(b *podData) bool {
	return slices.Equal(a.ips, b.ips) && (a.spec == nil) == (b.spec == nil) && (a.spec == nil || a.spec.Equal(*b.spec))
}

// ---- lookups (through a view, or with mu held for reading)

// visible: the namespace's names are served (with namespace_labels, only a Namespace object
// whose labels match).
func (s *store) visible(n *nsData) bool {
	return n != nil && (s.nsLabels == nil || (n.exists && n.selected))
}

// svcExists: <ns>.svc exists for a Namespace object, and while a published Service lives below.
func (n *nsData) svcExists() bool {
	return n.exists || anyPublished(n.services)
}

// published: the Service's name exists (a headless Service only while it has a ready endpoint).
func (e *svcEntry) published() bool {
	if e == nil || e.svc == nil {
		return false
	}
	switch e.svc.kind {
	case kindUnpublished:
		return false
	case kindHeadless:
		return e.hasEndpoints()
	}
	return true
}

func (e *svcEntry) hasEndpoints() bool {
	for _, sl := range e.slices {
		if len(sl.eps) > 0 {
			return true
		}
	}
	return false
}

// label is the name an endpoint is published under, relative to its Service.
func (ep *endpoint) label() string {
	if ep.name != "" {
		return ep.name
	}
	return dashedIP(ep.addr)
}

// label is the name an endpoint of the slice is published under, relative to its Service: with
// the source cluster after it for a multicluster Service.
func (sl *endpointSlice) label(ep *endpoint) string {
	if sl.cluster != "" {
		return ep.label() + "." + sl.cluster
	}
	return ep.label()
}

// matches reports whether the endpoint is published under label (lower case); ip is the label
// read as a dashed address, when it is one.
func (ep *endpoint) matches(label string, ip netip.Addr, isIP bool) bool {
	if ep.name != "" {
		return ep.name == label
	}
	return isIP && ep.addr == ip
}

// podAt reports whether a live pod of the namespace holds ip (pods verified).
func (s *store) podAt(ns string, ip netip.Addr) bool {
	found := false
	s.podIPs.each(ip, func(p *podData) {
		if p.ns.name == ns {
			found = true
		}
	})
	return found
}

// stats returns the numbers of objects held, by kind, and of reverse addresses.
func (s *store) stats() (services, slices, namespaces, pods, addrs int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.counts.services, s.counts.slices, s.counts.namespaces, s.counts.pods, s.ptrs.len()
}

// reverse returns the relative names an address points back to, sorted.
func (v *view) reverse(addr netip.Addr) []string {
	s := v.s
	var out []string
	s.ptrs.each(addr, func(e *svcEntry) {
		if e.svc == nil {
			return
		}
		if s.nsLabels != nil {
			_, ns, _ := strings.Cut(strings.TrimSuffix(e.svc.base, ".svc"), ".")
			if !s.visible(s.namespaces[ns]) {
				return
			}
		}
		if e.svc.kind == kindClusterIP && slices.Contains(e.svc.ips, addr) {
			out = appendUnique(out, e.svc.base)
		}
		for _, sl := range e.slices {
			for i := range sl.eps {
				ep := &sl.eps[i]
				if ep.addr == addr && (!s.ptrHostnameOnly || ep.hostname) {
					out = appendUnique(out, ep.label()+"."+e.svc.base)
				}
			}
		}
	})
	slices.Sort(out)
	return out
}

// parent strips the leftmost label of a relative name; the apex is "".
func parent(name string) string {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[i+1:]
	}
	return ""
}

func appendUnique[T comparable](dst []T, items ...T) []T {
	for _, it := range items {
		if !slices.Contains(dst, it) {
			dst = append(dst, it)
		}
	}
	return dst
}
