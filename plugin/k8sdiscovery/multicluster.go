package k8sdiscovery

// multicluster: the Multi-Cluster Services API's names (KEP-1645) in the zones the option lists,
// such as clusterset.local, from ServiceImports and the EndpointSlices that an MCS implementation
// labels multicluster.kubernetes.io/service-name. They live in the same store as the cluster's
// own Services: a ServiceImport is a *service (ClusterSetIP as kindClusterIP, Headless as
// kindHeadless) under nsData.imports, its slices under nsData.mcSlices with their source cluster.
//
//	<svc>.<ns>.svc.<zone>                     A/AAAA: the ServiceImport's IPs; Headless: every ready endpoint
//	_<port>._<proto>.<svc>.<ns>.svc.<zone>     SRV, as for a Service
//	<hostname>.<cluster>.<svc>.<ns>.svc.<zone> A/AAAA of an endpoint of that cluster
//
// As for Services: ttl for a ClusterSetIP import, headless_ttl for a Headless one and endpoint
// names (upstream: ttl for all; the same unless headless_ttl is set). As upstream: no PTR records
// for these addresses, and pod names are answered as in a cluster zone.

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/clusterdns/clusterdns/internal/kube"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned/typed/apis/v1alpha1"
)

const resImports = "serviceimports"

// newImportClient is the ServiceImports client (JSON: custom resources have no protobuf form).
func (k *K8sDiscovery) newImportClient() (mcsclient.ServiceImportsGetter, error) {
	cfg, err := kube.RESTConfig(k.clientConfig())
	if err != nil {
		return nil, err
	}
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	return mcsclient.NewForConfig(cfg)
}

// watchImports adds the ServiceImports to what the watcher lists and watches. Without the CRD
// (the API server answers NotFound), or without RBAC to read them (Forbidden), the resource counts
// as listed and empty, so that the plugin syncs and serves the cluster's names; it is asked again
// every absentRetry.
func (w *watcher) watchImports(c mcsclient.ServiceImportsGetter) {
	w.resources = append(w.resources, &resource{
		name: resImports,
		list: func(ctx context.Context, o metav1.ListOptions) ([]kruntime.Object, metav1.ListMeta, error) {
			l, err := c.ServiceImports("").List(ctx, o)
			if err != nil {
				return nil, metav1.ListMeta{}, err
			}
			return items(l.Items), l.ListMeta, nil
		},
		watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return c.ServiceImports("").Watch(ctx, o)
		},
		put:      w.putImport,
		del:      w.delImport,
		optional: true,
		group:    mcsv1alpha1.GroupName,
	})
	w.pending++
}

// absent reports whether err says that the resource is not served (its CRD is not installed) or
// not ours to read (no RBAC for it).
func absent(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) }

func (w *watcher) putImport(obj kruntime.Object, epoch uint32) {
	o, ok := obj.(*mcsv1alpha1.ServiceImport)
	if !ok || !w.k.namespaceAllowed(o.Namespace) {
		return
	}
	w.k.store.putImport(strings.ToLower(o.Namespace), strings.ToLower(o.Name), toImport(o, epoch))
}

func (w *watcher) delImport(obj kruntime.Object) {
	if o, ok := obj.(*mcsv1alpha1.ServiceImport); ok {
		w.k.store.putImport(strings.ToLower(o.Namespace), strings.ToLower(o.Name), nil)
	}
}

// toImport keeps what DNS needs of a ServiceImport. A ClusterSetIP import whose ports are all
// gone is unpublished (upstream finds no record for it: NXDOMAIN); one without IPs yet has a
// name without addresses (NODATA).
func toImport(o *mcsv1alpha1.ServiceImport, epoch uint32) *service {
	name := strings.ToLower(o.Name)
	svc := &service{name: name, base: name + "." + strings.ToLower(o.Namespace) + ".svc", epoch: epoch, kind: kindClusterIP}
	for _, p := range o.Spec.Ports {
		if p.Port <= 0 || p.Port > 65535 {
			continue
		}
		svc.ports = appendUnique(svc.ports, port{name: strings.ToLower(p.Name), proto: protoName(p.Protocol), port: uint16(p.Port)})
	}
	switch o.Spec.Type {
	case mcsv1alpha1.Headless:
		svc.kind = kindHeadless
	case mcsv1alpha1.ClusterSetIP:
		for _, s := range o.Spec.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				svc.ips = appendUnique(svc.ips, ip.Unmap())
			}
		}
		slices.SortFunc(svc.ips, netip.Addr.Compare)
		for _, ip := range svc.ips {
			if ip.Is4() {
				svc.a = append(svc.a, ip)
			} else {
				svc.aaaa = append(svc.aaaa, ip)
			}
		}
		if len(svc.ports) == 0 {
			svc.kind = kindUnpublished
		}
	default:
		log.Warningf("serviceimport %s/%s has type %q (want ClusterSetIP or Headless): not published", o.Namespace, o.Name, o.Spec.Type)
		svc.kind = kindUnpublished
	}
	return svc
}

// toMCSlice is an EndpointSlice of a multicluster Service: nil unless multicluster is on and the
// slice carries the multicluster.kubernetes.io/service-name and source-cluster labels.
func (k *K8sDiscovery) toMCSlice(s *discoveryv1.EndpointSlice, epoch uint32) *endpointSlice {
	if len(k.cfg.multicluster) == 0 {
		return nil
	}
	svc, cluster := s.Labels[mcsv1alpha1.LabelServiceName], strings.ToLower(s.Labels[mcsv1alpha1.LabelSourceCluster])
	if svc == "" {
		return nil
	}
	if cluster == "" || strings.Contains(cluster, ".") {
		log.Warningf("endpointslice %s/%s of multicluster service %q has no %s label that is one DNS label: not published",
			s.Namespace, s.Name, svc, mcsv1alpha1.LabelSourceCluster)
		return nil
	}
	out := k.sliceOf(s, svc, epoch)
	if out != nil {
		out.cluster = cluster
	}
	return out
}

// putImport stores a ServiceImport (nil: deleted). It reports whether DNS data changed.
func (s *store) putImport(ns, name string, svc *service) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(ns)
	e := n.imports[name]
	if svc == nil {
		if e == nil || e.svc == nil {
			s.gc(n)
			return false
		}
		e.svc = nil
		s.counts.imports--
		s.dropImport(n, name, e)
		s.gc(n)
		s.changed()
		return true
	}
	e = s.importEntry(n, name)
	if e.svc != nil && e.svc.equal(svc) {
		e.svc.epoch = svc.epoch
		return false
	}
	if e.svc == nil {
		s.counts.imports++
	}
	e.svc = svc
	s.changed()
	return true
}

// putMCSlice stores an EndpointSlice of a multicluster Service (nil: deleted, or no longer one).
func (s *store) putMCSlice(ns, name string, sl *endpointSlice) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ns(ns)
	old := n.mcSlices[name]
	if sl != nil && old != nil && old.equal(sl) {
		old.epoch = sl.epoch
		return false
	}
	if old == nil && sl == nil {
		s.gc(n)
		return false
	}
	if old != nil {
		e := n.imports[old.service]
		e.slices = slices.DeleteFunc(e.slices, func(x *endpointSlice) bool { return x == old })
		s.dropImport(n, old.service, e)
		delete(n.mcSlices, name)
		s.counts.slices--
	}
	if sl != nil {
		e := s.importEntry(n, sl.service)
		e.slices = append(e.slices, sl)
		if n.mcSlices == nil {
			n.mcSlices = map[string]*endpointSlice{}
		}
		n.mcSlices[name] = sl
		s.counts.slices++
	}
	s.gc(n)
	s.changed()
	return true
}

func (s *store) importEntry(n *nsData, name string) *svcEntry {
	if n.imports == nil {
		n.imports = map[string]*svcEntry{}
	}
	e := n.imports[name]
	if e == nil {
		e = &svcEntry{}
		n.imports[name] = e
	}
	return e
}

func (s *store) dropImport(n *nsData, name string, e *svcEntry) {
	if e.svc == nil && len(e.slices) == 0 {
		delete(n.imports, name)
	}
}

func (s *store) importCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.counts.imports
}

// isClusterset reports whether zone is one of the multicluster zones.
func (k *K8sDiscovery) isClusterset(zone string) bool {
	return slices.Contains(k.cfg.multicluster, zone)
}

// resolveClusterset builds the records of a name relative to a multicluster zone; see resolve.
func (k *K8sDiscovery) resolveClusterset(v *view, rel string, withSRV bool) (*rrset, bool) {
	var buf [5]string
	l, fits := splitLabels(rel, &buf)
	switch {
	case !fits:
		return nil, false
	case len(l) == 2 && l[1] == "svc": // <ns>.svc: a Namespace object, or an import below
		n := v.s.namespaces[l[0]]
		return &rrset{}, v.s.visible(n) && (n.exists || anyPublished(n.imports))
	case len(l) < 3 || l[len(l)-1] != "svc":
		return k.resolve(v, rel, withSRV) // the apex, svc, dns-version, ns.dns, pod names
	}
	svcLabel, nsLabel := l[len(l)-3], l[len(l)-2]
	n := v.s.namespaces[nsLabel]
	if !v.s.visible(n) {
		return nil, false
	}
	e := n.imports[svcLabel]
	if !e.published() || (k.cfg.ignoreEmptyService && e.svc.kind == kindClusterIP && !e.hasEndpoints()) {
		return nil, false
	}
	switch len(l) {
	case 3:
		return k.serviceRecords(e, withSRV), true
	case 4: // _<proto>.<svc> exists while a named port of that protocol does; <hostname>.<svc> does not
		if strings.HasPrefix(l[0], "_") {
			return &rrset{}, len(k.namedSRV(e, "", l[0][1:], true).srv) > 0
		}
		return nil, false
	default:
		if strings.HasPrefix(l[0], "_") || strings.HasPrefix(l[1], "_") {
			if !strings.HasPrefix(l[0], "_") || !strings.HasPrefix(l[1], "_") {
				return nil, false
			}
			r := k.namedSRV(e, l[0][1:], l[1][1:], false)
			return r, len(r.srv) > 0
		}
		r := k.endpointRecords(e, l[0]+"."+l[1])
		return r, !r.empty()
	}
}

// anyPublished: one of the names exists.
func anyPublished(entries map[string]*svcEntry) bool {
	for _, e := range entries {
		if e.published() {
			return true
		}
	}
	return false
}
