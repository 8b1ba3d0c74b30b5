package k8sdiscovery

// What searchpath reads: the live pods of an address, in DNS terms (kube.DNSClient).

import (
	"net/netip"

	"github.com/clusterdns/clusterdns/internal/kube"
)

// WatchPods makes the plugin watch pods for a client index even when pod records do not need
// them (searchpath asks for it). It takes effect when called before the plugin starts.
func (k *K8sDiscovery) WatchPods() { k.podIndexWanted.Store(true) }

// PodsByIP returns the live pods that hold ip in DNS terms; nil when pods are not watched for a
// client index.
func (k *K8sDiscovery) PodsByIP(ip string) []kube.DNSClient {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	k.store.mu.RLock()
	defer k.store.mu.RUnlock()
	var out []kube.DNSClient
	k.store.podIPs.each(addr.Unmap(), func(p *podData) {
		if p.spec != nil {
			out = append(out, *p.spec)
		}
	})
	return out
}
