package k8sdiscovery

// API objects to store entries: what DNS needs of a Service, an EndpointSlice and a Pod, kept as
// each object arrives (the watch writes the results into the store).

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

// toService keeps what DNS needs of a Service. A Service that cannot be published (no cluster
// IP yet, a bad ExternalName) is kept as unpublished, and the error says why.
func (k *K8sDiscovery) toService(svc *corev1.Service, epoch uint32) (*service, error) {
	name, ns := strings.ToLower(svc.Name), strings.ToLower(svc.Namespace)
	out := &service{name: name, base: name + "." + ns + ".svc", epoch: epoch}
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		target := strings.TrimSpace(svc.Spec.ExternalName)
		if ip, err := netip.ParseAddr(target); err == nil {
			if !k.cfg.externalNameIP {
				out.kind = kindUnpublished
				return out, fmt.Errorf("externalName %q is an IP address (answered only with externalname_ip)", target)
			}
			out.kind, out.ips = kindExternalIP, []netip.Addr{ip.Unmap()}
			return out, nil
		}
		fqdn := strings.ToLower(dns.Fqdn(target))
		if _, ok := dns.IsDomainName(fqdn); !ok || target == "" || fqdn == "." {
			out.kind = kindUnpublished
			return out, fmt.Errorf("externalName %q is not a domain name", target)
		}
		out.kind, out.target = kindExternalName, fqdn
		return out, nil
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		out.kind = kindHeadless
	default:
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		if len(ips) == 0 {
			out.kind = kindUnpublished
			return out, fmt.Errorf("service has no cluster IP yet")
		}
		for _, s := range ips {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				out.kind, out.ips = kindUnpublished, nil
				return out, fmt.Errorf("cluster IP %q: %w", s, err)
			}
			out.ips = appendUnique(out.ips, ip.Unmap())
		}
	}
	slices.SortFunc(out.ips, netip.Addr.Compare)
	for _, ip := range out.ips {
		if ip.Is4() {
			out.a = append(out.a, ip)
		} else {
			out.aaaa = append(out.aaaa, ip)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Port <= 0 || p.Port > 65535 {
			continue
		}
		out.ports = appendUnique(out.ports, port{name: strings.ToLower(p.Name), proto: protoName(p.Protocol), port: uint16(p.Port)})
	}
	out.external, out.externalHosts = externalAddresses(svc)
	return out, nil
}

// externalAddresses are the addresses clients outside the cluster reach a Service at: its
// spec.externalIPs and its load balancer's ingress IPs (sorted), and the ingress hostnames.
func externalAddresses(svc *corev1.Service) (ips []netip.Addr, hosts []string) {
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil {
			ips = appendUnique(ips, ip.Unmap())
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		add(s)
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			add(in.IP)
		} else if h := strings.ToLower(dns.Fqdn(in.Hostname)); in.Hostname != "" {
			if _, ok := dns.IsDomainName(h); ok && !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips, hosts
}

// toSlice keeps the ready addresses of an EndpointSlice and its ports; nil for a slice that
// names no Service or holds FQDN endpoints.
func (k *K8sDiscovery) toSlice(s *discoveryv1.EndpointSlice, epoch uint32) *endpointSlice {
	// The label's value exactly, as kube-proxy joins them: label values are case-sensitive, and
	// Service names are lower case, so a slice labelled "MIXED" belongs to no Service.
	return k.sliceOf(s, s.Labels[serviceNameLabel], epoch)
}

// sliceOf keeps what toSlice keeps, for the Service (or ServiceImport) named svc.
func (k *K8sDiscovery) sliceOf(s *discoveryv1.EndpointSlice, svc string, epoch uint32) *endpointSlice {
	if svc == "" || s.AddressType == discoveryv1.AddressTypeFQDN {
		return nil
	}
	out := &endpointSlice{service: svc, epoch: epoch}
	if t, ok := triggerTime(s); ok {
		out.trigger = t.UnixNano()
	}
	for _, p := range s.Ports {
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue
		}
		ep := port{port: uint16(*p.Port), proto: "tcp"}
		if p.Name != nil {
			ep.name = strings.ToLower(*p.Name)
		}
		if p.Protocol != nil {
			ep.proto = protoName(*p.Protocol)
		}
		out.ports = appendUnique(out.ports, ep)
	}
	for _, e := range s.Endpoints {
		if !endpointReady(e) {
			continue
		}
		name, hostname := "", false
		switch {
		case e.Hostname != nil && *e.Hostname != "":
			name, hostname = strings.ToLower(*e.Hostname), true
		case k.cfg.endpointPodName && e.TargetRef != nil && e.TargetRef.Kind == "Pod" && e.TargetRef.Name != "" && !strings.Contains(e.TargetRef.Name, "."):
			name = strings.ToLower(e.TargetRef.Name)
		}
		var zone uint8
		if k.cfg.zonal && e.Zone != nil && *e.Zone != "" {
			z := strings.ToLower(*e.Zone)
			i := slices.Index(out.zones, z)
			if i < 0 && len(out.zones) < 255 {
				out.zones, i = append(out.zones, z), len(out.zones)
			}
			if i >= 0 {
				zone = uint8(i + 1)
			}
		}
		for _, a := range e.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			ep := endpoint{addr: ip.Unmap(), name: name, hostname: hostname, zone: zone}
			if !slices.Contains(out.eps, ep) {
				out.eps = append(out.eps, ep)
			}
		}
	}
	return out
}

// toPod keeps the addresses of a live pod; nil when it has none or is not live.
func toPod(p *corev1.Pod, keepSpec bool, epoch uint32) *podData {
	if !kube.PodLive(p) {
		return nil
	}
	out := &podData{epoch: epoch}
	for _, s := range kube.PodIPs(p) {
		if ip, err := netip.ParseAddr(s); err == nil {
			out.ips = appendUnique(out.ips, ip.Unmap())
		}
	}
	if len(out.ips) == 0 {
		return nil
	}
	if keepSpec {
		c := kube.DNSClientOf(p)
		out.spec = &c
	}
	return out
}

func protoName(p corev1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

// endpointReady is the endpoint's ready condition, true when absent (the API's definition). The
// EndpointSlice controller folds termination and publishNotReadyAddresses into it: a terminating
// endpoint of a publishNotReadyAddresses Service stays ready, so that StatefulSet peers keep
// finding each other during a rollout; the terminating condition itself is not read.
func endpointReady(e discoveryv1.Endpoint) bool {
	return e.Conditions.Ready == nil || *e.Conditions.Ready
}
