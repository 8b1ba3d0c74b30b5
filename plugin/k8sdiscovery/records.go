package k8sdiscovery

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/clusterdns/clusterdns/internal/kube"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// DNSSchemaVersion is the version of the Kubernetes DNS specification we serve.
const DNSSchemaVersion = "1.1.0"

// staticContribution is what exists in every zone regardless of API objects.
func staticContribution(ttl uint32) *contribution {
	return &contribution{names: map[string]*rrset{
		"":            {},
		"dns-version": {txt: []string{DNSSchemaVersion}, ttl: ttl},
		"svc":         {},
		"pod":         {},
		"ns.dns":      {},
	}}
}

// namespaceContribution makes <ns>.svc (and <ns>.pod when pod records are on) exist.
func namespaceContribution(ns string, pods bool) *contribution {
	c := &contribution{names: map[string]*rrset{ns + ".svc": {}}}
	if pods {
		c.names[ns+".pod"] = &rrset{}
	}
	return c
}

// serviceContribution builds every name of one Service from the Service and its EndpointSlices.
// A Service that cannot be published (no cluster IP yet, a bad ExternalName) contributes nothing;
// the error says why.
func (k *K8sDiscovery) serviceContribution(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) (*contribution, error) {
	base := strings.ToLower(svc.Name + "." + svc.Namespace + ".svc")
	c := &contribution{names: map[string]*rrset{}, ptrs: map[netip.Addr][]string{}}

	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return k.externalNameContribution(svc, base)
	}

	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	eps := readyEndpoints(slices, k.cfg.endpointPodName)

	if headless {
		if len(eps) == 0 {
			return nil, nil // a headless service without ready endpoints does not exist in DNS
		}
		top := &rrset{ttl: k.cfg.headlessTTL}
		for _, e := range eps {
			top.addAddr(e.addr)
		}
		c.names[base] = top
	} else {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("service has no cluster IP yet")
		}
		top := &rrset{ttl: k.cfg.ttl}
		for _, s := range ips {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("cluster IP %q: %w", s, err)
			}
			top.addAddr(ip.Unmap())
			c.ptrs[ip.Unmap()] = []string{base}
		}
		for _, p := range svc.Spec.Ports {
			if p.Port <= 0 || p.Port > 65535 {
				continue
			}
			srv := srvRecord{port: uint16(p.Port), target: base}
			top.srv = appendUnique(top.srv, srv)
			if p.Name != "" {
				c.addSRV(portName(p.Name, p.Protocol)+"."+base, srv, k.cfg.ttl)
			}
		}
		c.names[base] = top
		if svc.Namespace+"/"+svc.Name == k.cfg.dnsService {
			c.names["ns.dns"] = &rrset{a: top.a, aaaa: top.aaaa, ttl: k.cfg.ttl}
		}
	}

	for _, e := range eps {
		name := e.name + "." + base
		r := c.names[name]
		if r == nil {
			r = &rrset{ttl: k.cfg.headlessTTL}
			c.names[name] = r
		}
		r.addAddr(e.addr)
		if !k.cfg.ptrHostnameOnly || e.hasHostname {
			c.ptrs[e.addr] = appendUnique(c.ptrs[e.addr], name)
		}
		if !headless {
			continue
		}
		for _, p := range e.ports {
			srv := srvRecord{port: p.port, target: name}
			c.names[base].srv = appendUnique(c.names[base].srv, srv)
			if p.name != "" {
				c.addSRV(portName(p.name, p.protocol)+"."+base, srv, k.cfg.headlessTTL)
			}
		}
	}
	for _, r := range c.names {
		r.sortRecords()
	}
	return c, nil
}

func (k *K8sDiscovery) externalNameContribution(svc *corev1.Service, base string) (*contribution, error) {
	target := strings.TrimSpace(svc.Spec.ExternalName)
	if ip, err := netip.ParseAddr(target); err == nil {
		if !k.cfg.externalNameIP {
			return nil, fmt.Errorf("externalName %q is an IP address (answered only with externalname_ip)", target)
		}
		r := &rrset{ttl: k.cfg.ttl}
		r.addAddr(ip.Unmap())
		return &contribution{names: map[string]*rrset{base: r}}, nil
	}
	fqdn := strings.ToLower(dns.Fqdn(target))
	if _, ok := dns.IsDomainName(fqdn); !ok || target == "" || fqdn == "." {
		return nil, fmt.Errorf("externalName %q is not a domain name", target)
	}
	return &contribution{names: map[string]*rrset{base: {cname: fqdn, ttl: k.cfg.ttl}}}, nil
}

func (c *contribution) addSRV(name string, srv srvRecord, ttl uint32) {
	r := c.names[name]
	if r == nil {
		r = &rrset{ttl: ttl}
		c.names[name] = r
	}
	r.srv = appendUnique(r.srv, srv)
}

func (r *rrset) addAddr(ip netip.Addr) {
	if ip.Is4() {
		r.a = appendUnique(r.a, ip)
	} else {
		r.aaaa = appendUnique(r.aaaa, ip)
	}
}

// sortRecords gives every answer a stable order, so that equal data compares equal.
func (r *rrset) sortRecords() {
	slices.SortFunc(r.a, netip.Addr.Compare)
	slices.SortFunc(r.aaaa, netip.Addr.Compare)
	slices.SortFunc(r.srv, func(x, y srvRecord) int {
		if c := strings.Compare(x.target, y.target); c != 0 {
			return c
		}
		return int(x.port) - int(y.port)
	})
}

// portName is the SRV prefix `_<port>._<proto>` of a named port.
func portName(name string, proto corev1.Protocol) string {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return "_" + strings.ToLower(name) + "._" + strings.ToLower(string(proto))
}

type endpointPort struct {
	name     string
	protocol corev1.Protocol
	port     uint16
}

// endpoint is one ready address of a Service, with its DNS name and the ports of its slice.
type endpoint struct {
	name        string
	hasHostname bool
	addr        netip.Addr
	ports       []endpointPort
}

// readyEndpoints lists ready addresses across slices, each address once per name.
func readyEndpoints(eps []*discoveryv1.EndpointSlice, podNames bool) []endpoint {
	var out []endpoint
	seen := map[string]bool{}
	for _, s := range eps {
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var ports []endpointPort
		for _, p := range s.Ports {
			if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
				continue
			}
			ep := endpointPort{port: uint16(*p.Port), protocol: corev1.ProtocolTCP}
			if p.Name != nil {
				ep.name = *p.Name
			}
			if p.Protocol != nil {
				ep.protocol = *p.Protocol
			}
			ports = append(ports, ep)
		}
		for _, e := range s.Endpoints {
			if !endpointReady(e) {
				continue
			}
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ip = ip.Unmap()
				name, hasHostname := endpointName(e, ip, podNames)
				key := name + "/" + ip.String()
				if seen[key] {
					// the same address in two slices: merge the ports
					for i := range out {
						if out[i].name == name && out[i].addr == ip {
							out[i].ports = appendUnique(out[i].ports, ports...)
						}
					}
					continue
				}
				seen[key] = true
				out = append(out, endpoint{name: name, hasHostname: hasHostname, addr: ip, ports: ports})
			}
		}
	}
	return out
}

// endpointReady: ready when the condition is true or absent, never while terminating.
func endpointReady(e discoveryv1.Endpoint) bool {
	if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
		return false
	}
	return e.Conditions.Ready == nil || *e.Conditions.Ready
}

// endpointName is the endpoint's hostname, its pod's name (endpoint_pod_names), or its dashed IP.
func endpointName(e discoveryv1.Endpoint, ip netip.Addr, podNames bool) (string, bool) {
	if e.Hostname != nil && *e.Hostname != "" {
		return strings.ToLower(*e.Hostname), true
	}
	if podNames && e.TargetRef != nil && e.TargetRef.Kind == "Pod" && e.TargetRef.Name != "" && !strings.Contains(e.TargetRef.Name, ".") {
		return strings.ToLower(e.TargetRef.Name), false
	}
	return dashedIP(ip), false
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

// podContribution: <dashed-ip>.<ns>.pod for every IP of a live pod (pods verified).
func podContribution(pod *corev1.Pod, ttl uint32) *contribution {
	if !kube.PodLive(pod) {
		return nil
	}
	c := &contribution{names: map[string]*rrset{}}
	for _, s := range kube.PodIPs(pod) {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		r := &rrset{ttl: ttl}
		r.addAddr(ip)
		c.names[dashedIP(ip)+"."+strings.ToLower(pod.Namespace)+".pod"] = r
	}
	return c
}
