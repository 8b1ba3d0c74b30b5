package k8sdiscovery

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/internal/kube"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const (
	serviceNameLabel   = discoveryv1.LabelServiceName
	triggerTimeKey     = corev1.EndpointsLastChangeTriggerTime
	slicesByService    = "service"
	syncMarker         = "sync"
	startupSyncTimeout = 5 * time.Second
)

// watcher keeps the index up to date from informers. Event handlers only queue the key of the
// one Service, Pod or Namespace an event touches; a single worker rebuilds that owner's records.
type watcher struct {
	k      *K8sDiscovery
	client kubernetes.Interface

	services, slices, namespaces, pods cache.SharedIndexInformer
	factories                          []informers.SharedInformerFactory
	registrations                      []cache.ResourceEventHandlerRegistration

	queue workqueue.TypedInterface[string]

	mu       sync.Mutex
	triggers map[string]time.Time // service key → endpoint change time waiting to be programmed
}

func newWatcher(k *K8sDiscovery, client kubernetes.Interface) *watcher {
	w := &watcher{k: k, client: client, queue: workqueue.NewTyped[string](), triggers: map[string]time.Time{}}
	transform := informers.WithTransform(trimObject)

	svcOpts := []informers.SharedInformerOption{transform}
	if sel := k.cfg.labelSelector; sel != "" {
		svcOpts = append(svcOpts, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	}
	svcFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, svcOpts...)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, transform)
	w.factories = []informers.SharedInformerFactory{svcFactory, factory}

	w.services = svcFactory.Core().V1().Services().Informer()
	w.slices = factory.Discovery().V1().EndpointSlices().Informer()
	w.namespaces = factory.Core().V1().Namespaces().Informer()
	if k.cfg.podMode == podsVerified || k.podIndexWanted.Load() {
		w.pods = factory.Core().V1().Pods().Informer()
		_ = w.pods.AddIndexers(cache.Indexers{kube.PodsByIPIndex: kube.PodIPIndexFunc})
		k.podIndexer.Store(&w.pods)
	}
	_ = w.slices.AddIndexers(cache.Indexers{slicesByService: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[serviceNameLabel] == "" {
			return nil, nil
		}
		return []string{s.Namespace + "/" + s.Labels[serviceNameLabel]}, nil
	}})

	w.register(w.services, func(obj any, _ any) { w.enqueueMeta("svc/", obj) })
	w.register(w.slices, w.onSlice)
	w.register(w.namespaces, func(obj any, _ any) { w.enqueueMeta("ns/", obj) })
	if w.pods != nil {
		// Registered in every mode, so that the first sync waits for the pods too.
		w.register(w.pods, func(obj any, _ any) {
			if k.cfg.podMode == podsVerified {
				w.enqueueMeta("pod/", obj)
			}
		})
	}
	return w
}

// register adds one handler for adds, updates and deletes; it gets the new object and the old one (or nil).
func (w *watcher) register(inf cache.SharedIndexInformer, fn func(obj, old any)) {
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { fn(obj, nil) },
		UpdateFunc: func(old, obj any) { fn(obj, old) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			fn(obj, nil)
		},
	})
	if err != nil {
		log.Errorf("register event handler: %v", err)
		return
	}
	w.registrations = append(w.registrations, reg)
}

func (w *watcher) enqueueMeta(prefix string, obj any) {
	m, err := meta(obj)
	if err != nil {
		log.Warningf("skip object: %v", err)
		return
	}
	ns := m.GetNamespace()
	if prefix == "ns/" {
		ns = m.GetName()
	}
	if !w.k.namespaceAllowed(ns) {
		return
	}
	w.queue.Add(prefix + m.GetNamespace() + "/" + m.GetName())
}

func (w *watcher) onSlice(obj, old any) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[serviceNameLabel] == "" || !w.k.namespaceAllowed(s.Namespace) {
		return
	}
	key := "svc/" + s.Namespace + "/" + s.Labels[serviceNameLabel]
	if w.k.synced.Load() {
		if t, ok := triggerTime(s); ok {
			if prev, isSlice := old.(*discoveryv1.EndpointSlice); !isSlice || prev.Annotations[triggerTimeKey] != s.Annotations[triggerTimeKey] {
				w.mu.Lock()
				if cur, ok := w.triggers[key]; !ok || t.Before(cur) {
					w.triggers[key] = t
				}
				w.mu.Unlock()
			}
		}
	}
	w.queue.Add(key)
}

func triggerTime(s *discoveryv1.EndpointSlice) (time.Time, bool) {
	v, ok := s.Annotations[triggerTimeKey]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// run starts the informers and the worker; it returns once they are started.
func (w *watcher) run(stop <-chan struct{}) {
	for _, f := range w.factories {
		f.Start(stop)
	}
	go w.work()
	go func() {
		synced := make([]cache.InformerSynced, 0, len(w.registrations))
		for _, r := range w.registrations {
			synced = append(synced, r.HasSynced)
		}
		if !cache.WaitForCacheSync(stop, synced...) {
			return
		}
		// Every initial object is queued before this marker; the worker marks the index synced when it gets there.
		w.queue.Add(syncMarker)
	}()
	go func() {
		<-stop
		w.queue.ShutDown()
	}()
	go w.reportObjects(stop)
}

func (w *watcher) work() {
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		w.process(key)
		w.queue.Done(key)
	}
}

func (w *watcher) process(key string) {
	if key == syncMarker {
		if !w.k.synced.Swap(true) {
			syncState.Set(1)
			names, addrs := w.k.index.stats()
			log.Infof("synced with the API server: %d names, %d reverse addresses indexed", names, addrs)
		}
		return
	}
	kind, nsName, _ := strings.Cut(key, "/")
	var c *contribution
	var err error
	switch kind {
	case "svc":
		c, err = w.serviceRecords(nsName)
	case "ns":
		if _, exists, _ := w.namespaces.GetStore().GetByKey(strings.TrimPrefix(nsName, "/")); exists {
			c = namespaceContribution(strings.ToLower(strings.TrimPrefix(nsName, "/")), w.k.cfg.podMode != podsDisabled)
		}
	case "pod":
		if obj, exists, _ := w.pods.GetStore().GetByKey(nsName); exists {
			c = podContribution(obj.(*corev1.Pod), w.k.cfg.ttl)
		}
	}
	if err != nil {
		log.Warningf("skip %s: %v", key, err)
	}
	w.k.index.apply(key, c)
	if kind == "svc" {
		w.mu.Lock()
		t, ok := w.triggers[key]
		delete(w.triggers, key)
		w.mu.Unlock()
		if ok {
			programmingLatency.Observe(durationSince(t).Seconds())
		}
	}
}

func (w *watcher) serviceRecords(nsName string) (*contribution, error) {
	obj, exists, err := w.services.GetStore().GetByKey(nsName)
	if err != nil || !exists {
		return nil, err
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	items, err := w.slices.GetIndexer().ByIndex(slicesByService, nsName)
	if err != nil {
		return nil, err
	}
	eps := make([]*discoveryv1.EndpointSlice, 0, len(items))
	for _, it := range items {
		if s, ok := it.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, s)
		}
	}
	return w.k.serviceContribution(svc, eps)
}

// reportObjects refreshes the objects_indexed gauges now and then; counting on every event would cost O(n).
func (w *watcher) reportObjects(stop <-chan struct{}) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		objectsIndexed.WithLabelValues("services").Set(float64(len(w.services.GetStore().ListKeys())))
		objectsIndexed.WithLabelValues("endpointslices").Set(float64(len(w.slices.GetStore().ListKeys())))
		objectsIndexed.WithLabelValues("namespaces").Set(float64(len(w.namespaces.GetStore().ListKeys())))
		if w.pods != nil {
			objectsIndexed.WithLabelValues("pods").Set(float64(len(w.pods.GetStore().ListKeys())))
		}
		names, addrs := w.k.index.stats()
		objectsIndexed.WithLabelValues("names").Set(float64(names))
		objectsIndexed.WithLabelValues("reverse_addresses").Set(float64(addrs))
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func meta(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("object of type %T has no metadata", obj)
	}
	return m, nil
}

// start connects to the source of objects and waits briefly for the first sync, so that a fresh
// server rarely answers SERVFAIL; after the wait it serves anyway (SERVFAIL until synced).
func (k *K8sDiscovery) start() error {
	client, err := k.newClient()
	if err != nil {
		return err
	}
	w := newWatcher(k, client)
	w.run(k.stopCh)
	deadline := time.Now().Add(startupSyncTimeout)
	for !k.synced.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !k.synced.Load() {
		log.Warningf("not synced with the API server after %s: answering SERVFAIL for the zone until it is", startupSyncTimeout)
	}
	return nil
}

func (k *K8sDiscovery) stop() {
	k.stopOnce.Do(func() { close(k.stopCh) })
}

func (k *K8sDiscovery) namespaceAllowed(ns string) bool {
	return len(k.cfg.namespaces) == 0 || k.cfg.namespaces[ns]
}

// trimObject keeps only the fields DNS needs, before the informer stores the object.
func trimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		ports := make([]corev1.ServicePort, len(o.Spec.Ports))
		for i, p := range o.Spec.Ports {
			ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port}
		}
		return &corev1.Service{
			ObjectMeta: trimMeta(o.ObjectMeta, nil, nil),
			Spec: corev1.ServiceSpec{
				Type: o.Spec.Type, ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs,
				Ports: ports, ExternalName: o.Spec.ExternalName,
			},
		}, nil
	case *discoveryv1.EndpointSlice:
		eps := make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			eps[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, Hostname: e.Hostname}
			if e.TargetRef != nil {
				eps[i].TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Name: e.TargetRef.Name}
			}
		}
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  trimMeta(o.ObjectMeta, o.Labels, o.Annotations, serviceNameLabel, triggerTimeKey),
			AddressType: o.AddressType,
			Endpoints:   eps,
			Ports:       o.Ports,
		}, nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: trimMeta(o.ObjectMeta, nil, nil)}, nil
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: trimMeta(o.ObjectMeta, nil, nil),
			Spec: corev1.PodSpec{
				NodeName: o.Spec.NodeName, HostNetwork: o.Spec.HostNetwork,
				DNSPolicy: o.Spec.DNSPolicy, DNSConfig: o.Spec.DNSConfig,
			},
			Status: corev1.PodStatus{Phase: o.Status.Phase, PodIP: o.Status.PodIP, PodIPs: o.Status.PodIPs},
		}, nil
	}
	return obj, nil
}

// trimMeta keeps identity and the given label and annotation keys.
func trimMeta(m metav1.ObjectMeta, labels, annotations map[string]string, keep ...string) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, UID: m.UID,
		DeletionTimestamp: m.DeletionTimestamp,
	}
	for _, key := range keep {
		if v, ok := labels[key]; ok {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[key] = v
		}
		if v, ok := annotations[key]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[key] = v
		}
	}
	return out
}

// WatchPods makes the plugin watch pods for a client index even when pod records do not need
// them (searchpath asks for it). It takes effect when called before the plugin starts.
func (k *K8sDiscovery) WatchPods() { k.podIndexWanted.Store(true) }

// PodsByIP returns the pods that hold ip, trimmed to DNS fields; nil when pods are not watched.
func (k *K8sDiscovery) PodsByIP(ip string) []*corev1.Pod {
	inf := k.podIndexer.Load()
	if inf == nil {
		return nil
	}
	return kube.PodsByIP(*inf, ip)
}
