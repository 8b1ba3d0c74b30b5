package searchpath

import (
	"sync/atomic"

	"github.com/clusterdns/clusterdns/internal/kube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodIndex is implemented by a plugin of the same server block that watches pods and can list
// them by IP (k8sdiscovery). searchpath finds it at startup, as autopath finds an AutoPather.
type PodIndex interface {
	// WatchPods asks the plugin to watch pods even if its own records do not need them;
	// called before the plugin starts.
	WatchPods()
	// PodsByIP returns the pods that have ip among their pod IPs, in DNS terms.
	PodsByIP(ip string) []kube.DNSClient
}

// podSource tells which pods have an address.
type podSource interface {
	PodsByIP(ip string) []kube.DNSClient
	Synced() bool
}

// indexSource adapts a PodIndex plugin; it is synced when the plugin is ready.
type indexSource struct {
	PodIndex
	ready interface{ Ready() bool }
}

func (s indexSource) Synced() bool { return s.ready == nil || s.ready.Ready() }

// nodePods watches the pods of one node (field selector spec.nodeName), trimmed to what a
// search list needs, and indexes them by IP.
type nodePods struct {
	informer cache.SharedIndexInformer
	synced   atomic.Bool
}

func newNodePods(client kubernetes.Interface, nodeName string) *nodePods {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
		}),
		informers.WithTransform(kube.TrimPodTransform))
	inf := factory.Core().V1().Pods().Informer()
	_ = inf.AddIndexers(cache.Indexers{kube.PodsByIPIndex: kube.PodIPIndexFunc})
	return &nodePods{informer: inf}
}

func (n *nodePods) run(stop <-chan struct{}) {
	go n.informer.Run(stop)
	go func() {
		if cache.WaitForCacheSync(stop, n.informer.HasSynced) {
			n.synced.Store(true)
			log.Infof("watching this node's pods: %d known", len(n.informer.GetStore().ListKeys()))
		}
	}()
}

func (n *nodePods) Synced() bool { return n.synced.Load() }

func (n *nodePods) PodsByIP(ip string) []kube.DNSClient {
	pods := kube.PodsByIP(n.informer, ip)
	out := make([]kube.DNSClient, 0, len(pods))
	for _, p := range pods {
		out = append(out, kube.DNSClientOf(p))
	}
	return out
}
