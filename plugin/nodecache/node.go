package nodecache

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/internal/packetio"
	"github.com/clusterdns/clusterdns/plugin/nodecache/nodesetup"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
)

// node is what the node role holds once per process, whatever the number of server blocks and
// across reloads: the cache (one memory bound), the flights of misses, the in-flight count a
// shutdown drains, the packet doors, and what was set up on the node.
type node struct {
	cache    *cache
	flights  flights
	inFlight atomic.Int64
	setup    nodesetup.Node

	mu      sync.Mutex
	listens map[string]bool // "ip:port" served by this process
	limits  limits

	exitOnce   sync.Once
	repairOnce sync.Once
	exiting    chan struct{} // closed when the process starts to leave

	doorMu sync.Mutex
	doors  map[string]*door.Door // by listen key, for the life of the process
	blocks map[any][]*doorBlock  // by caddy instance context: the blocks of each instance
}

// addBlock records a nodecache block of a caddy instance for the doors' routes.
func (n *node) addBlock(instance any, b *doorBlock) {
	n.doorMu.Lock()
	defer n.doorMu.Unlock()
	if n.blocks == nil {
		n.blocks = map[any][]*doorBlock{}
	}
	n.blocks[instance] = append(n.blocks[instance], b)
}

// dropBlocks forgets an instance's blocks once it stopped (a reload made a new one).
func (n *node) dropBlocks(instance any) {
	n.doorMu.Lock()
	defer n.doorMu.Unlock()
	delete(n.blocks, instance)
}

// serverStarting is called as CoreDNS's server for an address starts serving UDP (first start
// and every reload): it routes the address's packet door to this server, opening the door the
// first time.
func (n *node) serverStarting(instance any, s *dnsserver.Server, cfg *dnsserver.Config, dw dns.DecorateWriter) {
	key, why, ok := door.KeyFor(s, cfg)
	n.mu.Lock()
	ours := n.listens[key]
	n.mu.Unlock()
	if !ours {
		return
	}
	if !ok {
		if why != "" {
			log.Infof("packet door %s: %s", key, why)
		}
		return
	}
	n.doorMu.Lock()
	defer n.doorMu.Unlock()
	rt, zones, notes := buildRoute(s, key, n.blocks[instance], dw)
	for _, note := range notes {
		log.Infof("packet door %s: %s through the plugin chain", key, note)
	}
	d := n.doors[key]
	for _, z := range zones {
		z.d = d // an open door: set before the route that reaches z is
	}
	if d != nil {
		d.SetRoute(rt)
		return
	}
	d, err := door.New(key, &n.inFlight, log)
	if err != nil {
		log.Warningf("packet door %s: %v; CoreDNS's server answers alone", key, err)
		return
	}
	for _, z := range zones {
		z.d = d
	}
	d.Serve(rt) // the zones know their door before the first datagram is read
	if n.doors == nil {
		n.doors = map[string]*door.Door{}
	}
	n.doors[key] = d
	log.Infof("packet door %s: %d sockets (one per CPU), batches of up to %d", key, d.Sockets(), packetio.Batch)
}

// drainTimeout bounds how long a stopping process waits for queued and in-flight queries.
const drainTimeout = 5 * time.Second

var (
	processNodeMu sync.Mutex
	processNode   *node
)

// theNode returns the process's node, creating it on first use, with the cache bounds of every
// block seen so far (combineLimits).
func theNode(cfg config) *node {
	processNodeMu.Lock()
	defer processNodeMu.Unlock()
	if processNode == nil {
		processNode = &node{listens: map[string]bool{}, exiting: make(chan struct{})}
		processNode.limits = combineLimits(limits{}, cfg)
		l := processNode.limits
		processNode.cache = newCache(l.success, l.denial, l.memoryBound())
		go processNode.reportCacheSize()
		return processNode
	}
	n := processNode
	if l := combineLimits(n.limits, cfg); l != n.limits {
		n.limits = l
		n.cache.setLimits(l.success, l.denial, l.memoryBound())
	}
	return n
}

// limits are the cache bounds the blocks asked for.
type limits struct {
	success, denial int
	memory          int64 // smallest max_memory a block set; 0 while none did
}

// combineLimits adds a block's bounds: the largest capacity wins, and the smallest max_memory
// that a block sets (a block that does not set it changes nothing).
func combineLimits(l limits, cfg config) limits {
	l.success, l.denial = max(l.success, cfg.successCap), max(l.denial, cfg.denialCap)
	if cfg.maxMemory > 0 && (l.memory == 0 || cfg.maxMemory < l.memory) {
		l.memory = cfg.maxMemory
	}
	return l
}

func (l limits) memoryBound() int64 {
	if l.memory > 0 {
		return l.memory
	}
	return defaultMaxMemory
}

// prepare sets the node up for a block (idempotent: every block and every reload calls it).
func (n *node) prepare(cfg config, port uint16) error {
	ips := make([]net.IP, 0, len(cfg.listen))
	for _, s := range cfg.listen {
		ips = append(ips, net.ParseIP(s))
	}
	if err := n.setup.Prepare(nodesetup.Config{Interface: cfg.iface, IPs: ips, Port: port, Filter: cfg.packetFilter, Keep: cfg.keepOnExit}); err != nil {
		return err
	}
	n.mu.Lock()
	for _, ip := range ips {
		n.listens[net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))] = true
	}
	n.mu.Unlock()
	n.repairOnce.Do(func() { go n.repair(cfg.repairEvery) })
	return nil
}

// repair puts the interface and addresses back every interval if someone took them away (a
// network manager flushing addresses, another node cache deleting its interface), until exit.
func (n *node) repair(every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-n.exiting:
			return
		case <-tick.C:
			n.setup.Repair()
		}
	}
}

func (n *node) isSetUp() bool { return n.setup.IsSetUp() }

// exit runs once when the process stops (not on reload): the doors leave their SO_REUSEPORT
// groups, what was queued or in flight is answered, and then the rules and addresses go unless
// another instance still serves them or keep_on_exit says to leave them.
func (n *node) exit() {
	n.exitOnce.Do(func() {
		close(n.exiting)
		if err := nodesetup.EnableTCPMigration(); err != nil {
			log.Debugf("tcp_migrate_req: %v", err)
		}
		n.doorMu.Lock()
		doors := make([]*door.Door, 0, len(n.doors))
		for _, d := range n.doors {
			doors = append(doors, d)
		}
		n.doorMu.Unlock()
		for _, d := range doors {
			if err := d.Detach(tcpDrainQuiet); err != nil {
				log.Warningf("packet door %s: leave the SO_REUSEPORT group: %v", d.Key, err)
			}
		}
		start := time.Now()
		quiet := n.drain(doors, drainTimeout)
		var conns int64
		for _, d := range doors {
			conns += d.OpenConns()
		}
		log.Infof("stopping: left the listen sockets (%d addresses), drained in %v (complete: %t), in flight now %d, TCP connections open %d",
			len(doors), time.Since(start).Round(time.Millisecond), quiet, n.inFlight.Load(), conns)
		n.setup.Teardown()
		for _, d := range doors {
			d.Close()
		}
	})
}

// drain waits until nothing is queued on the doors' sockets, no query is being answered and no
// TCP connection is open for a few consecutive checks, or until timeout.
func (n *node) drain(doors []*door.Door, timeout time.Duration) (quiet bool) {
	deadline := time.Now().Add(timeout)
	calm := 0
	for time.Now().Before(deadline) {
		busy := n.inFlight.Load() > 0
		for _, d := range doors {
			busy = busy || d.Queued() > 0 || d.OpenConns() > 0
		}
		if busy {
			calm = 0
		} else if calm++; calm >= 5 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
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
