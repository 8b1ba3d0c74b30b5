package k8sdiscovery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

const (
	resServices   = "services"
	resSlices     = "endpointslices"
	resNamespaces = "namespaces"
	resPods       = "pods"

	serviceNameLabel = discoveryv1.LabelServiceName
	triggerTimeKey   = corev1.EndpointsLastChangeTriggerTime
	// defaultStartupTimeout is how long startup waits for the first sync (startup_timeout).
	defaultStartupTimeout = 5 * time.Second
	// maxRequests is the most requests the watcher has open at once: one list or watch per
	// resource (one more, serviceimports, with multicluster: config.requests). apiserver_max_inflight
	// below it is refused.
	maxRequests = 4

	// listPage is the number of objects asked for per list request. A list is applied page by
	// page, so at most a page of decoded objects is held besides the store.
	listPage = 500
	// watchTimeout is the shortest a watch request lasts before it is renewed (up to twice that).
	watchTimeout = 5 * time.Minute

	// A failed list or watch is tried again after a backoff that starts at firstBackoff, doubles,
	// stops at maxBackoff and is jittered by ±25%, so that DNS programming resumes within about a
	// second of the API server answering again, whatever the length of the outage (each replica
	// asks at most once a second per resource meanwhile). An error that says when to come back
	// (429, or 5xx with Retry-After) is waited out, up to maxSuggestedDelay.
	firstBackoff      = 100 * time.Millisecond
	maxBackoff        = time.Second
	maxSuggestedDelay = 30 * time.Second
	// failureLogEvery: while a resource keeps failing, a warning every this many tries.
	failureLogEvery = 30
)

// retryDelay is the wait before the next try after err, given the previous backoff; it returns
// the new backoff too.
func retryDelay(prev time.Duration, err error) (wait, backoff time.Duration) {
	backoff = min(max(2*prev, firstBackoff), maxBackoff)
	wait = backoff*3/4 + rand.N(backoff/2+1)
	if secs, ok := apierrors.SuggestsClientDelay(err); ok && secs > 0 {
		wait = max(wait, min(time.Duration(secs)*time.Second, maxSuggestedDelay))
	}
	return wait, backoff
}

// resource is one kind of API object the plugin lists and watches.
type resource struct {
	name  string
	list  func(ctx context.Context, opts metav1.ListOptions) (items []kruntime.Object, meta metav1.ListMeta, err error)
	watch func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	put   func(obj kruntime.Object, epoch uint32) // an object added or changed
	del   func(obj kruntime.Object)               // an object deleted

	// optional: a custom resource whose CRD may not be installed (group: its API group, for
	// messages). While the API server does not serve it, or forbids us to read it, it counts as
	// listed and empty, and is asked for again every absentRetry.
	optional bool
	group    string
}

// absentRetry is how often an optional resource that the API server does not serve is asked for.
const absentRetry = 10 * time.Second

// watcher keeps the store up to date. Each resource has one goroutine: it lists page by page,
// writing every object into the store as it comes, then watches from the list's resource
// version. When the watch cannot resume (the version is compacted away, as after an API server
// restart) it lists again; objects that list did not name are removed (a sweep by epoch), so a
// relist never holds a second copy of the world.
type watcher struct {
	k         *K8sDiscovery
	resources []*resource
	selector  labels.Selector
	streaming bool // list through a watch that sends every object first (a real API server)

	mu      sync.Mutex
	pending int // resources not listed yet
}

func newWatcher(k *K8sDiscovery, client kubernetes.Interface) *watcher {
	w := &watcher{k: k, selector: labels.Everything()}
	if k.cfg.labelSelector != "" {
		if sel, err := labels.Parse(k.cfg.labelSelector); err == nil {
			w.selector = sel
		}
	}
	core, disc := client.CoreV1(), client.DiscoveryV1()
	w.resources = []*resource{
		{
			name: resServices,
			list: func(ctx context.Context, o metav1.ListOptions) ([]kruntime.Object, metav1.ListMeta, error) {
				o.LabelSelector = k.cfg.labelSelector
				l, err := core.Services("").List(ctx, o)
				if err != nil {
					return nil, metav1.ListMeta{}, err
				}
				return items(l.Items), l.ListMeta, nil
			},
			watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.LabelSelector = k.cfg.labelSelector
				return core.Services("").Watch(ctx, o)
			},
			put: w.putService,
			del: w.delService,
		},
		{
			name: resSlices,
			list: func(ctx context.Context, o metav1.ListOptions) ([]kruntime.Object, metav1.ListMeta, error) {
				l, err := disc.EndpointSlices("").List(ctx, o)
				if err != nil {
					return nil, metav1.ListMeta{}, err
				}
				return items(l.Items), l.ListMeta, nil
			},
			watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return disc.EndpointSlices("").Watch(ctx, o)
			},
			put: w.putSlice,
			del: w.delSlice,
		},
		{
			name: resNamespaces,
			list: func(ctx context.Context, o metav1.ListOptions) ([]kruntime.Object, metav1.ListMeta, error) {
				l, err := core.Namespaces().List(ctx, o)
				if err != nil {
					return nil, metav1.ListMeta{}, err
				}
				return items(l.Items), l.ListMeta, nil
			},
			watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return core.Namespaces().Watch(ctx, o)
			},
			put: w.putNamespace,
			del: w.delNamespace,
		},
	}
	if k.cfg.noEndpoints {
		// noendpoints: no EndpointSlice watch, so no endpoint records and no headless answers.
		w.resources = slices.DeleteFunc(w.resources, func(r *resource) bool { return r.name == resSlices })
	}
	if k.cfg.podMode == podsVerified || k.podIndexWanted.Load() {
		w.resources = append(w.resources, &resource{
			name: resPods,
			list: func(ctx context.Context, o metav1.ListOptions) ([]kruntime.Object, metav1.ListMeta, error) {
				l, err := core.Pods("").List(ctx, o)
				if err != nil {
					return nil, metav1.ListMeta{}, err
				}
				return items(l.Items), l.ListMeta, nil
			},
			watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return core.Pods("").Watch(ctx, o)
			},
			put: w.putPod,
			del: w.delPod,
		})
	}
	w.pending = len(w.resources)
	return w
}

// items points into a list's items without copying them.
func items[T any, P interface {
	*T
	kruntime.Object
}](list []T) []kruntime.Object {
	out := make([]kruntime.Object, len(list))
	for i := range list {
		out[i] = P(&list[i])
	}
	return out
}

// run starts one goroutine per resource and returns.
func (w *watcher) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	for _, r := range w.resources {
		go w.loop(ctx, r)
	}
	go w.reportObjects(ctx)
}

// loop lists and watches one resource until ctx ends.
func (w *watcher) loop(ctx context.Context, r *resource) {
	var (
		rv         string // where the next watch starts; "" asks for a list
		epoch      uint32
		listed     bool
		stream     = w.streaming
		backoff    time.Duration
		failures   int // tries failed in a row
		incomplete int // streaming lists that ended before their last object
	)
	wait := func(err error) bool {
		var d time.Duration
		d, backoff = retryDelay(backoff, err)
		if failures++; failures == 1 || failures%failureLogEvery == 0 {
			log.Warningf("%s: %v (try %d; retrying in %s, then about every %s)", r.name, err, failures, d.Round(time.Millisecond), maxBackoff)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	succeeded := func() {
		if failures > 0 {
			log.Infof("%s: the API server answers again after %d failed tries", r.name, failures)
		}
		backoff, failures = 0, 0
	}
	synced := func(n int) {
		gone := w.k.store.sweep(r.name, epoch)
		if listed {
			log.Infof("%s: relisted %d objects, %d removed", r.name, n, gone)
		}
	}
	markListed := func() {
		if !listed {
			listed = true
			w.listed()
		}
	}
	notServed := false
	// unserved handles an optional resource that the API server does not serve (or does not let
	// us read): nothing of it exists (what the store held is swept), and it is asked for again
	// after absentRetry.
	unserved := func(err error) bool {
		if !notServed {
			notServed = true
			if apierrors.IsForbidden(err) {
				log.Warningf("%s: not allowed to list and watch them (RBAC: grant list and watch on %s): none until allowed; asking again every %s: %v",
					r.name, r.name+"."+r.group, absentRetry, err)
			} else {
				log.Infof("%s: not served by the API server (is its CRD installed?): none until it is; asking again every %s", r.name, absentRetry)
			}
		}
		if gone := w.k.store.sweep(r.name, epoch); gone > 0 {
			log.Infof("%s: %d removed", r.name, gone)
		}
		markListed()
		backoff, failures = 0, 0
		select {
		case <-ctx.Done():
			return false
		case <-time.After(absentRetry):
			return true
		}
	}
	served := func() {
		if notServed {
			notServed = false
			log.Infof("%s: served by the API server now", r.name)
		}
	}
	for ctx.Err() == nil {
		if rv == "" && stream {
			// A streaming list: one watch that first sends every object, then a bookmark.
			epoch++
			timeout := int64((watchTimeout + rand.N(watchTimeout)) / time.Second)
			yes := true
			wi, err := r.watch(ctx, metav1.ListOptions{SendInitialEvents: &yes, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
				AllowWatchBookmarks: true, TimeoutSeconds: &timeout})
			if err != nil {
				if apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) || apierrors.IsMethodNotSupported(err) {
					log.Infof("%s: the API server does not stream lists (%v): listing in pages", r.name, err)
					stream = false
					continue
				}
				if r.optional && absent(err) {
					if !unserved(err) {
						return
					}
					continue
				}
				if ctx.Err() != nil || !wait(fmt.Errorf("streaming list: %w", err)) {
					return
				}
				continue
			}
			succeeded()
			served()
			beginListGC()
			var complete bool
			rv, complete, err = w.consume(ctx, r, wi, "", epoch, func(n int) {
				endListGC()
				synced(n)
				markListed()
			})
			if !complete {
				endListGC()
				rv = "" // the stream ended before every object came: start again
				if err == nil && ctx.Err() == nil {
					// Not at once: a proxy that cuts long streams would otherwise make a tight
					// loop of whole lists. After a few, list in pages instead.
					if incomplete++; incomplete >= 3 {
						log.Infof("%s: %d streaming lists ended early: listing in pages", r.name, incomplete)
						stream = false
					}
					err = errors.New("the streaming list ended before every object came")
				}
			}
			switch {
			case err == nil:
			case expired(err):
				rv = ""
			case ctx.Err() != nil || !wait(fmt.Errorf("streaming list: %w", err)):
				return
			}
			continue
		}
		if rv == "" {
			epoch++
			next, n, err := w.list(ctx, r, epoch)
			if err != nil {
				if r.optional && absent(err) {
					if !unserved(err) {
						return
					}
					continue
				}
				if ctx.Err() != nil || !wait(fmt.Errorf("list: %w", err)) {
					return
				}
				continue
			}
			served()
			synced(n)
			rv = next
		}
		timeout := int64((watchTimeout + rand.N(watchTimeout)) / time.Second)
		wi, err := r.watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout})
		// After the watch is open, so that nothing changed between the list and the watch is
		// missed (a fake clientset's watch does not resume from a version).
		markListed()
		if err != nil {
			if expired(err) {
				rv = ""
				continue
			}
			if r.optional && absent(err) {
				rv = ""
				if !unserved(err) {
					return
				}
				continue
			}
			if ctx.Err() != nil || !wait(fmt.Errorf("watch: %w", err)) {
				return
			}
			continue
		}
		succeeded()
		rv, _, err = w.consume(ctx, r, wi, rv, epoch, nil)
		switch {
		case err == nil:
		case expired(err):
			rv = ""
		case ctx.Err() != nil || !wait(fmt.Errorf("watch: %w", err)):
			return
		}
	}
}

// list writes every object of a resource into the store, page by page, and returns the
// resource version to watch from.
func (w *watcher) list(ctx context.Context, r *resource, epoch uint32) (rv string, n int, err error) {
	beginListGC()
	defer endListGC()
	opts := metav1.ListOptions{Limit: listPage}
	for {
		objs, meta, err := r.list(ctx, opts)
		if err != nil {
			return "", n, err
		}
		if rv == "" {
			rv = meta.ResourceVersion
		}
		for _, o := range objs {
			r.put(o, epoch)
		}
		n += len(objs)
		listProgress()
		if meta.Continue == "" {
			return rv, n, nil
		}
		opts.Continue = meta.Continue
	}
}

// consume applies a watch's events until it ends; it returns the last resource version seen.
// With initial set (a streaming list), it calls initial with the number of objects when the
// bookmark that ends the initial events comes, and reports whether it came.
func (w *watcher) consume(ctx context.Context, r *resource, wi watch.Interface, rv string, epoch uint32, initial func(n int)) (string, bool, error) {
	defer wi.Stop()
	n := 0
	complete := initial == nil
	for {
		select {
		case <-ctx.Done():
			return rv, complete, nil
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return rv, complete, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				r.put(ev.Object, epoch)
				if n++; !complete && n%listProgressEvery == 0 {
					listProgress() // the initial events of a streaming list
				}
			case watch.Deleted:
				r.del(ev.Object)
			case watch.Bookmark:
				if m, ok := ev.Object.(metav1.Object); ok && !complete && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
					complete = true
					initial(n)
				}
			case watch.Error:
				return rv, complete, apierrors.FromObject(ev.Object)
			}
			if m, ok := ev.Object.(metav1.Object); ok && m.GetResourceVersion() != "" {
				rv = m.GetResourceVersion()
			}
		}
	}
}

// A list decodes every object of a resource once more, page by page (or event by event in a
// streaming list); at the process's GC target (GOGC, 100 by default) the heap would grow to twice
// its live size with those objects before a collection, and that would be a relist's peak. The
// plugin does not change the process's target (it governs every plugin of the binary): while a
// list runs, listProgress collects as soon as the garbage since the last collection passes an
// eighth of the live heap (at least listGarbage), and the list's garbage is collected when it
// ends.
const listGarbage = 8 << 20

var listGC struct {
	sync.Mutex
	running int
}

var heapSamples = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}

// heapNow reads the heap marked live by the last collection and the heap in use now (live and
// not yet collected), without stopping the world.
func heapNow() (live, inUse uint64) {
	s := make([]metrics.Sample, len(heapSamples))
	copy(s, heapSamples)
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		live = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		inUse = s[1].Value.Uint64()
	}
	return live, inUse
}

func beginListGC() {
	listGC.Lock()
	listGC.running++
	listGC.Unlock()
}

// listProgress is called by a list after each page (or every listProgressEvery objects): it
// collects when the garbage since the last collection has grown past its bound.
func listProgress() {
	live, inUse := heapNow()
	if inUse > live+max(live/8, listGarbage) {
		runtime.GC()
	}
}

// listProgressEvery is how many objects of a streaming list come between listProgress calls.
const listProgressEvery = 500

func endListGC() {
	listGC.Lock()
	defer listGC.Unlock()
	if listGC.running--; listGC.running == 0 {
		// The list's garbage goes now, not when the heap next reaches the process's target.
		runtime.GC()
	}
}

func expired(err error) bool {
	return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
}

// listed counts one resource's first list; after the last one the plugin is synced.
func (w *watcher) listed() {
	w.mu.Lock()
	w.pending--
	done := w.pending == 0
	w.mu.Unlock()
	if done && !w.k.synced.Swap(true) {
		syncState.Set(1)
		svcs, slices, nss, pods, addrs := w.k.store.stats()
		log.Infof("synced with the API server: %d services, %d endpointslices, %d namespaces, %d pods, %d reverse addresses",
			svcs, slices, nss, pods, addrs)
	}
}

func (w *watcher) putService(obj kruntime.Object, epoch uint32) {
	o, ok := obj.(*corev1.Service)
	if !ok || !w.k.namespaceAllowed(o.Namespace) {
		return
	}
	if !w.selector.Matches(labels.Set(o.Labels)) {
		w.delService(obj)
		return
	}
	svc, err := w.k.toService(o, epoch)
	if err != nil {
		log.Warningf("service %s/%s is not published: %v", o.Namespace, o.Name, err)
	}
	w.k.store.putService(strings.ToLower(o.Namespace), svc.name, svc)
}

func (w *watcher) delService(obj kruntime.Object) {
	if o, ok := obj.(*corev1.Service); ok {
		w.k.store.putService(strings.ToLower(o.Namespace), strings.ToLower(o.Name), nil)
	}
}

func (w *watcher) putSlice(obj kruntime.Object, epoch uint32) {
	o, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || !w.k.namespaceAllowed(o.Namespace) {
		return
	}
	sl := w.k.toSlice(o, epoch)
	changed, prev := w.k.store.putSlice(strings.ToLower(o.Namespace), o.Name, sl)
	if changed && sl != nil && sl.trigger != 0 && sl.trigger != prev && w.k.synced.Load() {
		programmingLatency.Observe(durationSince(time.Unix(0, sl.trigger)).Seconds())
	}
	if len(w.k.cfg.multicluster) > 0 {
		w.k.store.putMCSlice(strings.ToLower(o.Namespace), o.Name, w.k.toMCSlice(o, epoch))
	}
}

func (w *watcher) delSlice(obj kruntime.Object) {
	if o, ok := obj.(*discoveryv1.EndpointSlice); ok {
		w.k.store.putSlice(strings.ToLower(o.Namespace), o.Name, nil)
		if len(w.k.cfg.multicluster) > 0 {
			w.k.store.putMCSlice(strings.ToLower(o.Namespace), o.Name, nil)
		}
	}
}

func (w *watcher) putNamespace(obj kruntime.Object, epoch uint32) {
	if o, ok := obj.(*corev1.Namespace); ok && w.k.namespaceAllowed(o.Name) {
		w.k.store.putNamespace(strings.ToLower(o.Name), true, epoch, o.Labels)
	}
}

func (w *watcher) delNamespace(obj kruntime.Object) {
	if o, ok := obj.(*corev1.Namespace); ok {
		w.k.store.putNamespace(strings.ToLower(o.Name), false, 0, nil)
	}
}

func (w *watcher) putPod(obj kruntime.Object, epoch uint32) {
	o, ok := obj.(*corev1.Pod)
	// searchpath's client index needs the pods of every namespace; pod records check the filter.
	if !ok || (!w.k.podIndexWanted.Load() && !w.k.namespaceAllowed(o.Namespace)) {
		return
	}
	w.k.store.putPod(strings.ToLower(o.Namespace), o.Name, toPod(o, w.k.podIndexWanted.Load(), epoch))
}

func (w *watcher) delPod(obj kruntime.Object) {
	if o, ok := obj.(*corev1.Pod); ok {
		w.k.store.putPod(strings.ToLower(o.Namespace), o.Name, nil)
	}
}

func triggerTime(s *discoveryv1.EndpointSlice) (time.Time, bool) {
	v, ok := s.Annotations[triggerTimeKey]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

// reportObjects refreshes the objects_indexed gauges now and then.
func (w *watcher) reportObjects(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		svcs, slices, nss, pods, addrs := w.k.store.stats()
		objectsIndexed.WithLabelValues("services").Set(float64(svcs))
		objectsIndexed.WithLabelValues("endpointslices").Set(float64(slices))
		objectsIndexed.WithLabelValues("namespaces").Set(float64(nss))
		objectsIndexed.WithLabelValues("pods").Set(float64(pods))
		objectsIndexed.WithLabelValues("reverse_addresses").Set(float64(addrs))
		if len(w.k.cfg.multicluster) > 0 {
			objectsIndexed.WithLabelValues(resImports).Set(float64(w.k.store.importCount()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
