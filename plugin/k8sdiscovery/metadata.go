package k8sdiscovery

// Metadata for upstream's metadata plugin, under the labels upstream's kubernetes plugin uses, so
// that `log` formats and `view` expressions written for kubernetes work unchanged.

import (
	"context"
	"net/netip"
	"strings"

	"github.com/coredns/coredns/plugin/metadata"
	"github.com/coredns/coredns/request"
)

// Metadata implements metadata.Provider:
//
//	kubernetes/kind             svc or pod, for a name of the zone
//	kubernetes/namespace        the namespace of the name asked
//	kubernetes/service          its Service
//	kubernetes/endpoint         its endpoint label (hostname, pod name or dashed IP)
//	kubernetes/port-name        the port of an SRV name (_http)
//	kubernetes/protocol         and its protocol (_tcp)
//	kubernetes/parse-error      why a name of the zone does not fit the schema
//	kubernetes/client-namespace the asking pod's namespace (pods verified, or searchpath's index)
//	kubernetes/client-pod-name  and its name
//	kubernetes/zone             with zonal, the topology zone of a zonal name
//
// Upstream also sets kubernetes/client-label/<label> for each label of the asking pod; the store
// does not keep pod labels, so those are not set.
func (k *K8sDiscovery) Metadata(ctx context.Context, state request.Request) context.Context {
	if addr, err := netip.ParseAddr(state.IP()); err == nil {
		ns, name := k.clientPod(addr.Unmap())
		if ns != "" {
			metadata.SetValueFunc(ctx, "kubernetes/client-namespace", func() string { return ns })
			metadata.SetValueFunc(ctx, "kubernetes/client-pod-name", func() string { return name })
		}
	}
	qname := state.Name()
	zone := k.matchZone(qname)
	if zone == "" || isReverseZone(zone) {
		return ctx
	}
	rel := relativeName(qname, zone)
	multicluster := k.isClusterset(zone)
	if before, after, found := strings.Cut(rel, "._zone."); k.cfg.zonal && !multicluster && found {
		// A zonal name: kubernetes/zone is the topology zone asked, the rest as for the Service.
		if i := strings.LastIndexByte(before, '.'); i > 0 {
			topo := before[:i]
			metadata.SetValueFunc(ctx, "kubernetes/zone", func() string { return topo })
			rel = after
		}
	}
	p, err := parseQueryName(rel, multicluster)
	if err != "" {
		metadata.SetValueFunc(ctx, "kubernetes/parse-error", func() string { return err })
		return ctx
	}
	for key, value := range map[string]string{
		"kubernetes/kind": p.kind, "kubernetes/namespace": p.namespace, "kubernetes/service": p.service,
		"kubernetes/endpoint": p.endpoint, "kubernetes/port-name": p.port, "kubernetes/protocol": p.protocol,
	} {
		metadata.SetValueFunc(ctx, key, func() string { return value })
	}
	if multicluster {
		metadata.SetValueFunc(ctx, "kubernetes/cluster", func() string { return p.cluster })
	}
	return ctx
}

// clientPod is the namespace and name of the one live pod at addr ("" when none, or when pods of
// two namespaces share it).
func (k *K8sDiscovery) clientPod(addr netip.Addr) (ns, name string) {
	if k.cfg.podMode != podsVerified && !k.podIndexWanted.Load() {
		return "", ""
	}
	v := k.store.read()
	defer v.end()
	v.s.podIPs.each(addr, func(p *podData) {
		switch {
		case ns == "":
			ns, name = p.ns.name, p.name
		case ns != p.ns.name:
			ns, name = "\x00", ""
		}
	})
	if ns == "\x00" {
		return "", ""
	}
	return ns, name
}

// queryName is a name of the zone read against the schema.
type queryName struct {
	kind, namespace, service, endpoint, port, protocol string
	cluster                                            string // multicluster: the endpoint's source cluster
}

// parseQueryName reads a name relative to the zone; err says why it does not fit.
func parseQueryName(rel string, multicluster bool) (queryName, string) {
	if rel == "" || rel == "dns-version" || rel == "ns.dns" || rel == "svc" || rel == "pod" || rel == "dns" {
		return queryName{}, ""
	}
	l := strings.Split(rel, ".")
	n := len(l)
	var q queryName
	switch l[n-1] {
	case "pod":
		if n != 3 {
			return q, "a pod name is <dashed-ip>.<namespace>.pod"
		}
		return queryName{kind: "pod", namespace: l[1], endpoint: l[0]}, ""
	case "svc":
	default:
		return q, "not a name of the schema (the next-to-last label is neither svc nor pod)"
	}
	q.kind = "svc"
	if n >= 2 {
		q.namespace = l[n-2]
	}
	if n >= 3 {
		q.service = l[n-3]
	}
	switch n {
	case 2, 3:
	case 4:
		if strings.HasPrefix(l[0], "_") {
			q.protocol = l[0][1:]
		} else {
			q.endpoint = l[0]
		}
	case 5:
		if multicluster && !strings.HasPrefix(l[0], "_") && !strings.HasPrefix(l[1], "_") {
			q.endpoint, q.cluster = l[0], l[1] // <endpoint>.<cluster>.<service>.<namespace>.svc
			break
		}
		if !strings.HasPrefix(l[0], "_") || !strings.HasPrefix(l[1], "_") {
			return queryName{}, "an SRV name is _<port>._<protocol>.<service>.<namespace>.svc"
		}
		q.port, q.protocol = l[0][1:], l[1][1:]
	default:
		return queryName{}, "more labels than the schema has"
	}
	return q, ""
}
