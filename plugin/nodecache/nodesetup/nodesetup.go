// Package nodesetup puts the node cache on the node: the interface that carries the listen
// addresses, the packet-filter rules that keep DNS to them out of conntrack, and the lock files
// through which instances of the node cache (a rolling update starts the new one beside the
// old) know which of them is the last to leave and may remove what they added.
package nodesetup

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var log = clog.NewWithPlugin("nodecache")

// Packet-filter modes for the rules that keep DNS to the listen addresses out of conntrack.
const (
	FilterNftables = "nftables"
	FilterIptables = "iptables"
	FilterNone     = "none"
)

var setupErrors = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: plugin.Namespace, Subsystem: "nodecache", Name: "setup_failures_total",
	Help: "Failures setting up or tearing down the node (stage: lock, link, filter, teardown).",
}, []string{"stage"})

// Config is what one server block asks of the node.
type Config struct {
	Interface string
	IPs       []net.IP
	Port      uint16
	Filter    string // FilterNftables, FilterIptables or FilterNone
	Keep      bool   // leave addresses and rules in place on exit
}

// Node is what this process set up on the node, for every block and across reloads.
type Node struct {
	mu     sync.Mutex
	links  map[string]*instanceLock // by interface name
	asked  map[string][]net.IP      // the addresses each interface must carry, for Repair
	filter packetFilter
	mode   string
	keep   bool
	setUp  atomic.Bool
}

// Prepare puts the listen addresses on the interface and the notrack rules in place. It is
// idempotent: every block and every reload calls it.
func (n *Node) Prepare(cfg Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mode != "" && (n.mode != cfg.Filter || n.keep != cfg.Keep) {
		setupErrors.WithLabelValues("filter").Inc()
		return fmt.Errorf("packet_filter and keep_on_exit must be the same in every nodecache block of the process (%s, keep %t before; %s, keep %t now)",
			n.mode, n.keep, cfg.Filter, cfg.Keep)
	}
	if n.links == nil {
		n.links = map[string]*instanceLock{}
	}
	l := n.links[cfg.Interface]
	if l == nil {
		lock, err := joinInstances(cfg.Interface)
		if err != nil {
			setupErrors.WithLabelValues("lock").Inc()
			return fmt.Errorf("join the instances serving %s: %w", cfg.Interface, err)
		}
		l = lock
		n.links[cfg.Interface] = l
	} else if err := l.lockMutex(); err != nil {
		setupErrors.WithLabelValues("lock").Inc()
		return err
	}
	err := func() error {
		defer l.unlockMutex()
		st := l.readState()
		if l.first {
			st = stillTrue(st, cfg.Interface)
			l.first = false
		}
		created, added, err := ensureLink(cfg.Interface, cfg.IPs)
		st.record(created, added)
		if werr := l.writeState(st); werr != nil {
			log.Warningf("record what was added to %s (the last instance may leave it behind): %v", cfg.Interface, werr)
		}
		return err
	}()
	if err != nil {
		setupErrors.WithLabelValues("link").Inc()
		return err
	}
	if n.asked == nil {
		n.asked = map[string][]net.IP{}
	}
	for _, ip := range cfg.IPs {
		if !slices.ContainsFunc(n.asked[cfg.Interface], ip.Equal) {
			n.asked[cfg.Interface] = append(n.asked[cfg.Interface], ip)
		}
	}

	if n.filter == nil {
		f, err := newPacketFilter(cfg.Filter, cfg.Keep)
		if err != nil {
			setupErrors.WithLabelValues("filter").Inc()
			return err
		}
		n.filter, n.mode, n.keep = f, cfg.Filter, cfg.Keep
	}
	ports := make([]listenPort, 0, len(cfg.IPs))
	for _, ip := range cfg.IPs {
		ports = append(ports, listenPort{ip: ip, port: cfg.Port})
	}
	if err := n.filter.add(ports); err != nil {
		setupErrors.WithLabelValues("filter").Inc()
		return err
	}
	n.setUp.Store(true)
	return nil
}

// RepairEvery is how often Repair runs (NodeLocal DNSCache's node-cache checks every 60 s too).
const RepairEvery = time.Minute

var repairs = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: plugin.Namespace, Subsystem: "nodecache", Name: "repairs_total",
	Help: "Times the node was found changed and set up again (what: interface, address, rule).",
}, []string{"what"})

// Repair puts back what someone took away since Prepare: the interface (created again if it was
// deleted), the listen addresses on it and the packet-filter rules. The process calls it every
// RepairEvery (or the stanza's `repair`).
func (n *Node) Repair() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.filter != nil {
		fixed, err := n.filter.repair()
		if err != nil {
			setupErrors.WithLabelValues("filter").Inc()
			log.Errorf("repair the packet-filter rules: %v", err)
		}
		if fixed > 0 {
			repairs.WithLabelValues("rule").Add(float64(fixed))
			log.Warningf("%d packet-filter rules were gone: added again", fixed)
		}
	}
	for iface, ips := range n.asked {
		l := n.links[iface]
		if err := l.lockMutex(); err != nil {
			log.Warningf("repair %s: %v", iface, err)
			continue
		}
		created, added, err := ensureLink(iface, ips)
		if created || len(added) > 0 {
			st := l.readState()
			st.record(created, added)
			l.writeState(st)
		}
		l.unlockMutex()
		if err != nil {
			setupErrors.WithLabelValues("link").Inc()
			log.Errorf("repair %s: %v", iface, err)
			continue
		}
		if created {
			repairs.WithLabelValues("interface").Inc()
			log.Warningf("interface %s was gone: created again", iface)
		}
		if len(added) > 0 {
			repairs.WithLabelValues("address").Add(float64(len(added)))
			log.Warningf("%s had lost %v: added again", iface, added)
		}
	}
}

// IsSetUp reports whether a Prepare succeeded.
func (n *Node) IsSetUp() bool { return n.setUp.Load() }

// Teardown removes the rules and addresses unless another instance still serves them or
// keep_on_exit says to leave them. The process calls it once, as it exits.
func (n *Node) Teardown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	allLast := true
	for iface, l := range n.links {
		last, done := l.leave()
		allLast = allLast && last
		switch {
		case !last:
			log.Infof("another instance serves %s: its addresses stay", iface)
		case n.keep:
			log.Infof("keep_on_exit: %s and its addresses stay", iface)
		default:
			st := l.readState()
			var added []net.IP
			for _, s := range st.Added {
				added = append(added, net.ParseIP(s))
			}
			if err := removeLink(iface, st.Created, added); err != nil {
				errs = append(errs, err)
			}
			l.writeState(linkState{})
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
