package k8sdiscovery

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// rrset holds the records of one owner name. Names are relative to the zone ("web.ns1.svc"),
// lower case, without a trailing dot; the zone is added when an answer is written.
type rrset struct {
	a, aaaa []netip.Addr
	srv     []srvRecord
	txt     []string
	cname   string // fully qualified ExternalName target
	ttl     uint32
}

type srvRecord struct {
	port   uint16
	target string // relative name
}

func (r *rrset) empty() bool {
	return r == nil || (len(r.a) == 0 && len(r.aaaa) == 0 && len(r.srv) == 0 && len(r.txt) == 0 && r.cname == "")
}

// contribution is everything one API object (a Service with its EndpointSlices, a Pod, a
// Namespace) puts into the index. It is replaced whole when that object changes.
type contribution struct {
	names map[string]*rrset       // relative name → records; an empty rrset makes the name exist
	ptrs  map[netip.Addr][]string // address → relative names it points back to
}

// nameNode is one existing name: the records merged over its owners, and how many explicit
// names sit at or below it (so that empty non-terminals exist while anything lives below).
type nameNode struct {
	records *rrset
	owners  []string
	refs    int
}

// index answers queries with map lookups. Writers replace one owner's contribution at a time.
type index struct {
	mu     sync.RWMutex
	owners map[string]*contribution
	names  map[string]*nameNode
	ptrs   map[netip.Addr]*ptrNode
	serial uint32
	// changes counts the contributions that changed DNS data (each bumped the serial).
	changes uint64
}

// ptrNode is one reverse address: the names each owner gives it, and their sorted union. Most
// addresses have one owner, so owners is a short slice, not a map (a map per address was a
// quarter of the heap at 10k Services).
type ptrNode struct {
	owners  []ptrOwner
	targets []string
}

type ptrOwner struct {
	owner   string
	targets []string
}

func newIndex() *index {
	return &index{
		owners: map[string]*contribution{},
		names:  map[string]*nameNode{},
		ptrs:   map[netip.Addr]*ptrNode{},
		serial: uint32(time.Now().Unix()),
	}
}

// lookup returns the node of a relative name, or nil when the name does not exist.
func (x *index) lookup(name string) *nameNode {
	x.mu.RLock()
	n := x.names[name]
	x.mu.RUnlock()
	return n
}

// reverse returns the relative names an address points back to.
func (x *index) reverse(addr netip.Addr) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p := x.ptrs[addr]; p != nil {
		return p.targets
	}
	return nil
}

func (x *index) soaSerial() uint32 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.serial
}

func (x *index) changeCount() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.changes
}

// stats returns the number of names and reverse addresses indexed.
func (x *index) stats() (names, addrs int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.names), len(x.ptrs)
}

// apply replaces the contribution of owner (nil removes it). It reports whether DNS data
// changed; only then is the SOA serial bumped.
func (x *index) apply(owner string, c *contribution) bool {
	if c != nil && len(c.names) == 0 && len(c.ptrs) == 0 {
		c = nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.owners[owner]
	if reflect.DeepEqual(old, c) {
		return false
	}
	touched := map[string]bool{}
	if old != nil {
		for name := range old.names {
			x.unref(name, owner)
			touched[name] = true
		}
		for addr := range old.ptrs {
			x.setPTR(addr, owner, nil)
		}
	}
	if c != nil {
		x.owners[owner] = c
		for name := range c.names {
			x.ref(name, owner)
			touched[name] = true
		}
		for addr, targets := range c.ptrs {
			x.setPTR(addr, owner, targets)
		}
	} else {
		delete(x.owners, owner)
	}
	for name := range touched {
		if n := x.names[name]; n != nil {
			n.records = x.merge(name, n.owners)
		}
	}
	x.changes++
	if now := uint32(time.Now().Unix()); now > x.serial {
		x.serial = now
	} else {
		x.serial++
	}
	return true
}

// ref adds an explicit name for owner and counts it on every ancestor up to the apex.
func (x *index) ref(name, owner string) {
	n := x.node(name)
	n.owners = append(n.owners, owner)
	for a := name; ; {
		x.node(a).refs++
		if a == "" {
			return
		}
		a = parent(a)
	}
}

func (x *index) unref(name, owner string) {
	if n := x.names[name]; n != nil {
		if i := slices.Index(n.owners, owner); i >= 0 {
			n.owners = slices.Delete(n.owners, i, i+1)
		}
	}
	for a := name; ; {
		if n := x.names[a]; n != nil {
			if n.refs--; n.refs <= 0 {
				delete(x.names, a)
			}
		}
		if a == "" {
			return
		}
		a = parent(a)
	}
}

func (x *index) node(name string) *nameNode {
	n := x.names[name]
	if n == nil {
		n = &nameNode{}
		x.names[name] = n
	}
	return n
}

// merge combines the records several owners have at one name, without duplicates.
func (x *index) merge(name string, owners []string) *rrset {
	switch len(owners) {
	case 0:
		return nil
	case 1:
		return x.owners[owners[0]].names[name]
	}
	out := &rrset{}
	for _, o := range owners {
		r := x.owners[o].names[name]
		if r == nil {
			continue
		}
		out.a = appendUnique(out.a, r.a...)
		out.aaaa = appendUnique(out.aaaa, r.aaaa...)
		out.srv = appendUnique(out.srv, r.srv...)
		out.txt = appendUnique(out.txt, r.txt...)
		if out.cname == "" {
			out.cname = r.cname
		}
		if out.ttl == 0 || (r.ttl != 0 && r.ttl < out.ttl) {
			out.ttl = r.ttl
		}
	}
	return out
}

func (x *index) setPTR(addr netip.Addr, owner string, targets []string) {
	p := x.ptrs[addr]
	if p == nil {
		if len(targets) == 0 {
			return
		}
		p = &ptrNode{}
		x.ptrs[addr] = p
	}
	i := slices.IndexFunc(p.owners, func(o ptrOwner) bool { return o.owner == owner })
	switch {
	case len(targets) == 0 && i >= 0:
		p.owners = slices.Delete(p.owners, i, i+1)
	case len(targets) > 0 && i >= 0:
		p.owners[i].targets = targets
	case len(targets) > 0:
		p.owners = append(p.owners, ptrOwner{owner: owner, targets: targets})
	}
	switch len(p.owners) {
	case 0:
		delete(x.ptrs, addr)
		return
	case 1:
		if slices.IsSorted(p.owners[0].targets) {
			p.targets = p.owners[0].targets
			return
		}
	}
	var all []string
	for _, o := range p.owners {
		all = appendUnique(all, o.targets...)
	}
	slices.Sort(all)
	p.targets = all
}

func appendUnique[T comparable](dst []T, items ...T) []T {
	for _, it := range items {
		if !slices.Contains(dst, it) {
			dst = append(dst, it)
		}
	}
	return dst
}

// parent strips the leftmost label of a relative name; the apex is "".
func parent(name string) string {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[i+1:]
	}
	return ""
}
