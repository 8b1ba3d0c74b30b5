package k8sdiscovery

// k8sdiscovery_external: names for clients outside the cluster, from k8sdiscovery's store, with
// the syntax and answers of upstream's k8s_external (which can only read upstream's kubernetes
// plugin):
//
//	k8sdiscovery_external [ZONES...] {
//	    apex APEX
//	    ttl TTL
//	    headless
//	    fallthrough [ZONES...]
//	}
//
// <svc>.<ns>.<zone> answers a Service's external addresses (spec.externalIPs and its load
// balancer's ingress IPs; when it has only ingress hostnames, a CNAME to the first); SRV names its ports; with headless, a
// headless Service answers its ready endpoints and <endpoint>.<svc>.<ns>.<zone> each one. The
// zone's apex has a SOA and an NS (ns1.<apex>.<zone>, whose addresses are the DNS Service's
// external addresses).

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

const externalName = "k8sdiscovery_external"

func init() { plugin.Register(externalName, setupExternal) }

// External is the k8sdiscovery_external handler.
type External struct {
	Next  plugin.Handler
	zones []string
	apex  string
	ttl   uint32
	head  bool
	fall  fall.F
	k     *K8sDiscovery
}

// Name implements plugin.Handler.
func (e *External) Name() string { return externalName }

func setupExternal(c *caddy.Controller) error {
	e, err := parseExternal(c)
	if err != nil {
		return plugin.Error(externalName, err)
	}
	c.OnStartup(func() error {
		k, ok := dnsserver.GetConfig(c).Handler(pluginName).(*K8sDiscovery)
		if !ok {
			return plugin.Error(externalName, fmt.Errorf("needs the k8sdiscovery plugin in the same server block"))
		}
		e.k = k
		return nil
	})
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		e.Next = next
		return e
	})
	return nil
}

func parseExternal(c *caddy.Controller) (*External, error) {
	e := &External{apex: "dns", ttl: 5}
	c.Next()
	e.zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
	for i, z := range e.zones {
		e.zones[i] = strings.ToLower(dns.Fqdn(z))
	}
	for c.NextBlock() {
		opt, args := c.Val(), c.RemainingArgs()
		switch opt {
		case "apex":
			if len(args) != 1 || strings.Trim(args[0], ".") == "" {
				return nil, c.Errf("apex: want one name such as dns")
			}
			e.apex = strings.ToLower(strings.Trim(args[0], "."))
		case "ttl":
			n, err := strconv.ParseUint(strings.Join(args, ""), 10, 32)
			if len(args) != 1 || err != nil || n > 3600 {
				return nil, c.Errf("ttl: want a number of seconds from 0 to 3600")
			}
			e.ttl = uint32(n)
		case "headless":
			if len(args) != 0 {
				return nil, c.Errf("headless takes no arguments")
			}
			e.head = true
		case "fallthrough":
			e.fall.SetZonesFromArgs(args)
		default:
			return nil, c.Errf("unknown option %q (want apex, ttl, headless or fallthrough)", opt)
		}
	}
	return e, nil
}

// ServeDNS implements plugin.Handler.
func (e *External) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname, qtype := state.Name(), state.QType()
	zone := plugin.Zones(e.zones).Matches(qname)
	if zone == "" || e.k == nil {
		return plugin.NextOrFailure(e.Name(), e.Next, ctx, w, r)
	}
	if !e.k.synced.Load() {
		return dns.RcodeServerFailure, nil
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	owner := state.QName()
	v := e.k.store.read()
	serial := v.serial
	exists, hosts := e.answer(v, m, owner, relativeName(qname, zone), qtype, zone)
	v.end()
	if !exists {
		if e.fall.Through(qname) {
			return plugin.NextOrFailure(e.Name(), e.Next, ctx, w, r)
		}
		m.Rcode = dns.RcodeNameError
	}
	// A load balancer known by a hostname: the CNAME, and its addresses resolved by the server.
	for _, h := range hosts {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, e.ttl), Target: h})
		if qtype == dns.TypeA || qtype == dns.TypeAAAA {
			e.k.resolveOutside(ctx, m, state, h, qtype)
		}
	}
	if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
		m.Ns = []dns.RR{e.soa(zone, serial)}
	}
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// answer fills m for a name of the zone (rel relative to it); exists is false for NXDOMAIN, and
// hosts are load-balancer hostnames the caller writes as CNAMEs.
func (e *External) answer(v *view, m *dns.Msg, owner, rel string, qtype uint16, zone string) (exists bool, hosts []string) {
	s := v.s
	switch {
	case rel == "":
		switch qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, e.soa(zone, v.serial))
		case dns.TypeNS:
			ns := "ns1." + e.apex + "." + zone
			m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(owner, dns.TypeNS, e.ttl), Ns: ns})
			m.Extra = append(m.Extra, e.addrs(ns, e.dnsServiceAddrs(v), dns.TypeA)...)
			m.Extra = append(m.Extra, e.addrs(ns, e.dnsServiceAddrs(v), dns.TypeAAAA)...)
		}
		return true, nil
	case rel == e.apex:
		return true, nil
	case rel == "ns1."+e.apex:
		m.Answer = append(m.Answer, e.addrs(owner, e.dnsServiceAddrs(v), qtype)...)
		return true, nil
	case strings.HasSuffix(rel, "."+e.apex):
		return false, nil
	}
	l := strings.Split(rel, ".")
	if len(l) < 2 {
		return false, nil
	}
	n := s.namespaces[l[len(l)-1]]
	if !s.visible(n) {
		return false, nil
	}
	en := n.services[l[len(l)-2]]
	if !en.published() {
		return false, nil
	}
	svc := en.svc
	base := l[len(l)-2] + "." + l[len(l)-1] + "." + zone
	headless := e.head && svc.kind == kindHeadless
	switch len(l) {
	case 2:
		var ips []netip.Addr
		switch {
		case headless:
			for _, sl := range en.slices {
				for i := range sl.eps {
					ips = appendUnique(ips, sl.eps[i].addr)
				}
			}
		case len(svc.external) > 0 || len(svc.externalHosts) > 0:
			ips = svc.external
		default:
			return false, nil
		}
		switch qtype {
		case dns.TypeA, dns.TypeAAAA:
			m.Answer = append(m.Answer, e.addrs(owner, ips, qtype)...)
			if !headless && len(ips) == 0 {
				// Only a hostname (a cloud load balancer known by name): a CNAME to it. Never
				// beside addresses: a CNAME owner holds no other data (RFC 1034 §3.6.2).
				hosts = svc.externalHosts[:1]
			}
		case dns.TypeSRV:
			for _, p := range svc.ports {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, e.ttl), Weight: 100, Port: p.port, Target: base})
			}
			m.Extra = append(m.Extra, e.addrs(base, ips, dns.TypeA)...)
			m.Extra = append(m.Extra, e.addrs(base, ips, dns.TypeAAAA)...)
		}
		return true, hosts
	case 3:
		if !headless || strings.HasPrefix(l[0], "_") {
			return false, nil
		}
		var ips []netip.Addr
		for _, sl := range en.slices {
			for i := range sl.eps {
				if ep := &sl.eps[i]; ep.label() == l[0] {
					ips = appendUnique(ips, ep.addr)
				}
			}
		}
		if len(ips) == 0 {
			return false, nil
		}
		m.Answer = append(m.Answer, e.addrs(owner, ips, qtype)...)
		return true, nil
	case 4:
		if !strings.HasPrefix(l[0], "_") || !strings.HasPrefix(l[1], "_") || (len(svc.external) == 0 && len(svc.externalHosts) == 0 && !headless) {
			return false, nil
		}
		for _, p := range svc.ports {
			if p.name == l[0][1:] && p.proto == l[1][1:] {
				if qtype == dns.TypeSRV {
					m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, e.ttl), Weight: 100, Port: p.port, Target: base})
				}
				return true, nil
			}
		}
	}
	return false, nil
}

// dnsServiceAddrs are the external addresses of the cluster DNS Service (k8sdiscovery's
// dns_service), the address of ns1.<apex>.<zone>.
func (e *External) dnsServiceAddrs(v *view) []netip.Addr {
	ns, name, _ := strings.Cut(e.k.cfg.dnsService, "/")
	if n := v.s.namespaces[ns]; n != nil {
		if en := n.services[name]; en != nil && en.svc != nil {
			return en.svc.external
		}
	}
	return nil
}

func (e *External) addrs(owner string, ips []netip.Addr, qtype uint16) []dns.RR {
	var out []dns.RR
	for _, ip := range ips {
		switch {
		case qtype == dns.TypeA && ip.Is4():
			out = append(out, &dns.A{Hdr: hdr(owner, dns.TypeA, e.ttl), A: ip.AsSlice()})
		case qtype == dns.TypeAAAA && ip.Is6():
			out = append(out, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, e.ttl), AAAA: ip.AsSlice()})
		}
	}
	return out
}

func (e *External) soa(zone string, serial uint32) dns.RR {
	return &dns.SOA{Hdr: hdr(zone, dns.TypeSOA, e.ttl), Ns: "ns1." + e.apex + "." + zone, Mbox: "hostmaster." + e.apex + "." + zone,
		Serial: serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: e.ttl}
}
