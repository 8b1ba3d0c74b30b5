package k8sdiscovery

// Upstream's autopath plugin at the central role: `autopath @k8sdiscovery` asks AutoPath for the
// asking pod's search path, as it asks upstream's kubernetes plugin.

import (
	"net/netip"

	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// AutoPath implements autopath.AutoPather: the search path of the pod that asks (found by its
// address among the live pods, so it needs `pods verified`, as upstream), ending with "" (the bare
// name); nil when the query is outside our forward zones, pods are not watched, or the address is
// not one pod's (unknown, or pods of two namespaces on it).
func (k *K8sDiscovery) AutoPath(state request.Request) []string {
	zone := k.matchZone(state.Name())
	if zone == "" || isReverseZone(zone) || k.cfg.podMode != podsVerified {
		return nil
	}
	addr, err := netip.ParseAddr(state.IP())
	if err != nil {
		return nil
	}
	ns, _ := k.clientPod(addr.Unmap())
	if ns == "" {
		return nil
	}
	search := []string{ns + ".svc." + zone, "svc." + zone, zone}
	search = append(search, k.hostSearch...)
	return append(search, "")
}

// hostSearchFromResolvConf reads the search domains of a resolv.conf (fully qualified), which
// upstream appends to a pod's cluster domains; none when the file cannot be read.
func hostSearchFromResolvConf(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(cc.Search))
	for _, s := range cc.Search {
		out = append(out, dns.Fqdn(s))
	}
	return out
}
