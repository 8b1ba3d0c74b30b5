package nodecache

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
)

// node is what the node role holds once per process, whatever the number of server blocks and
// across reloads: the cache (one memory bound), single-flight for misses, the in-flight count a
// shutdown drains, and the interface, addresses and packet-filter rules.
type node struct {
	cache    *cache
	flights  flights
	inFlight atomic.Int64

	mu      sync.Mutex
	links   map[string]*linkSetup // by interface name
	filter  packetFilter
	mode    string
	keep    bool
	listens map[string]bool // "ip:port" served by this process
	setUp   atomic.Bool
	limits  limits

	exitOnce sync.Once

	fastMu     sync.Mutex
	fast       map[string]*fastListener // by listen key, for the life of the process
	fastBlocks map[any][]*fastBlock     // by caddy instance context: the blocks of each instance
}

// addFastBlock records a nodecache block of a caddy instance for the fast path's routes.
func (n *node) addFastBlock(instance any, b *fastBlock) {
	n.fastMu.Lock()
	defer n.fastMu.Unlock()
	if n.fastBlocks == nil {
		n.fastBlocks = map[any][]*fastBlock{}
	}
	n.fastBlocks[instance] = append(n.fastBlocks[instance], b)
}

// dropFastBlocks forgets an instance's blocks once it stopped (a reload made a new one).
func (n *node) dropFastBlocks(instance any) {
	n.fastMu.Lock()
	defer n.fastMu.Unlock()
	delete(n.fastBlocks, instance)
}

// serverStarting is called as CoreDNS's server for an address starts serving UDP (first start
// and every reload): it routes the fast path of the address to this server, starting the fast
// path the first time a zone of the address can use it.
func (n *node) serverStarting(instance any, s *dnsserver.Server, dw dns.DecorateWriter) {
	key, ok := listenKey(s.Addr)
	if !ok {
		return
	}
	n.mu.Lock()
	ours := n.listens[key]
	n.mu.Unlock()
	if !ours {
		return
	}
	n.fastMu.Lock()
	defer n.fastMu.Unlock()
	var rt *fastRoute
	var notes []string
	if serverPlain(s) {
		rt, notes = buildRoute(s, key, n.fastBlocks[instance], dw)
	} else {
		notes = []string{"the server uses the PROXY protocol or extra opcodes"}
	}
	useful := false
	if rt != nil {
		for _, z := range rt.zones {
			useful = useful || z.nc != nil
		}
	}
	for _, note := range notes {
		log.Infof("fast path %s: not for %s", key, note)
	}
	fl := n.fast[key]
	if fl == nil && !useful {
		return
	}
	if rt == nil {
		rt = &fastRoute{srv: s, label: s.Addr, decorate: dw} // everything through the server
	}
	if fl == nil {
		var err error
		if fl, err = startFastListener(n, key); err != nil {
			log.Warningf("fast path %s: %v; served by the server alone", key, err)
			return
		}
		if n.fast == nil {
			n.fast = map[string]*fastListener{}
		}
		n.fast[key] = fl
		fl.route.Store(rt)
		log.Infof("fast path %s: %d sockets, batches of %d", key, len(fl.conns), fastBatch)
	} else {
		fl.route.Store(rt)
	}
	detachServerSockets(key, fl.fds())
}

// closeFast stops the fast path (the process is leaving and has drained).
func (n *node) closeFast() {
	n.fastMu.Lock()
	defer n.fastMu.Unlock()
	for key, fl := range n.fast {
		fl.close()
		delete(n.fast, key)
	}
}

// linkSetup is one interface this process joined.
type linkSetup struct {
	lock *instanceLock
}

// drainTimeout bounds how long a stopping process waits for queued and in-flight queries.
const drainTimeout = 5 * time.Second

var (
	processNodeMu sync.Mutex
	processNode   *node
)

// theNode returns the process's node, creating it on first use; a block's capacities raise the
// cache's bounds (the largest asked for wins, the smallest max_memory wins).
func theNode(cfg config) *node {
	processNodeMu.Lock()
	defer processNodeMu.Unlock()
	if processNode == nil {
		processNode = &node{
			cache:   newCache(cfg.successCap, cfg.denialCap, cfg.memoryBound()),
			links:   map[string]*linkSetup{},
			listens: map[string]bool{},
		}
		processNode.limits = limits{cfg.successCap, cfg.denialCap, cfg.memoryBound()}
		go processNode.reportCacheSize()
		return processNode
	}
	n := processNode
	l := limits{max(n.limits.success, cfg.successCap), max(n.limits.denial, cfg.denialCap), min(n.limits.memory, cfg.memoryBound())}
	if l != n.limits {
		n.limits = l
		n.cache.setLimits(l.success, l.denial, l.memory)
	}
	return n
}

// runningNode is the process's node if a nodecache block set one up.
func runningNode() *node {
	processNodeMu.Lock()
	defer processNodeMu.Unlock()
	return processNode
}

type limits struct {
	success, denial int
	memory          int64
}

// prepare puts the listen addresses on the interface and the notrack rules in place. It is
// idempotent: every block and every reload calls it.
func (n *node) prepare(cfg config, port uint16) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mode != "" && (n.mode != cfg.packetFilter || n.keep != cfg.keepOnExit) {
		setupErrors.WithLabelValues("filter").Inc()
		return fmt.Errorf("packet_filter and keep_on_exit must be the same in every nodecache block of the process (%s, keep %t before; %s, keep %t now)",
			n.mode, n.keep, cfg.packetFilter, cfg.keepOnExit)
	}
	ips := make([]net.IP, 0, len(cfg.listen))
	for _, s := range cfg.listen {
		ips = append(ips, net.ParseIP(s))
	}

	l := n.links[cfg.iface]
	if l == nil {
		lock, err := joinInstances(cfg.iface)
		if err != nil {
			setupErrors.WithLabelValues("lock").Inc()
			return fmt.Errorf("join the instances serving %s: %w", cfg.iface, err)
		}
		l = &linkSetup{lock: lock}
		n.links[cfg.iface] = l
	} else if err := l.lock.lockMutex(); err != nil {
		setupErrors.WithLabelValues("lock").Inc()
		return err
	}
	err := func() error {
		defer l.lock.unlockMutex()
		st := l.lock.readState()
		if l.lock.first {
			st = stillTrue(st, cfg.iface)
			l.lock.first = false
		}
		created, added, err := ensureLink(cfg.iface, ips)
		st.Created = st.Created || created
		for _, ip := range added {
			if !slices.Contains(st.Added, ip.String()) {
				st.Added = append(st.Added, ip.String())
			}
		}
		if werr := l.lock.writeState(st); werr != nil {
			log.Warningf("record what was added to %s (the last instance may leave it behind): %v", cfg.iface, werr)
		}
		return err
	}()
	if err != nil {
		setupErrors.WithLabelValues("link").Inc()
		return err
	}

	if n.filter == nil {
		f, err := newPacketFilter(cfg.packetFilter, cfg.keepOnExit)
		if err != nil {
			setupErrors.WithLabelValues("filter").Inc()
			return err
		}
		n.filter, n.mode, n.keep = f, cfg.packetFilter, cfg.keepOnExit
	}
	ports := make([]listenPort, 0, len(ips))
	for _, ip := range ips {
		ports = append(ports, listenPort{ip: ip, port: port})
		n.listens[net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))] = true
	}
	if err := n.filter.add(ports); err != nil {
		setupErrors.WithLabelValues("filter").Inc()
		return err
	}
	n.setUp.Store(true)
	return nil
}

func (n *node) isSetUp() bool { return n.setUp.Load() }

// exit runs once when the process stops (not on reload): it leaves the SO_REUSEPORT groups,
// answers what was already queued or in flight, and then removes the rules and addresses unless
// another instance still serves them or keep_on_exit says to leave them.
func (n *node) exit() {
	n.exitOnce.Do(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if err := enableTCPMigration(); err != nil {
			log.Debugf("tcp_migrate_req: %v", err)
		}
		fds := detachUDP(n.listens)
		start := time.Now()
		quiet := drain(fds, n.inFlight.Load, drainTimeout)
		log.Infof("stopping: left the listen sockets (%d UDP), drained in %v (complete: %t), in flight now %d",
			len(fds), time.Since(start).Round(time.Millisecond), quiet, n.inFlight.Load())
		n.teardown()
		n.closeFast()
	})
}

func (n *node) teardown() {
	var errs []error
	allLast := true
	for iface, l := range n.links {
		last, done := l.lock.leave()
		allLast = allLast && last
		switch {
		case !last:
			log.Infof("another instance serves %s: its addresses stay", iface)
		case n.keep:
			log.Infof("keep_on_exit: %s and its addresses stay", iface)
		default:
			st := l.lock.readState()
			var added []net.IP
			for _, s := range st.Added {
				added = append(added, net.ParseIP(s))
			}
			if err := removeLink(iface, st.Created, added); err != nil {
				errs = append(errs, err)
			}
			l.lock.writeState(linkState{})
		}
		done()
	}
	if n.filter != nil {
		if err := n.filter.remove(allLast); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		setupErrors.WithLabelValues("teardown").Inc()
		log.Errorf("teardown: %v", err)
	}
}

// reportCacheSize keeps the cache gauges current for the life of the process.
func (n *node) reportCacheSize() {
	for range time.Tick(5 * time.Second) {
		success, denial, bytes := n.cache.counts()
		cacheEntries.WithLabelValues("success").Set(float64(success))
		cacheEntries.WithLabelValues("denial").Set(float64(denial))
		cacheBytes.Set(float64(bytes))
	}
}
