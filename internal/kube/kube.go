// Package kube holds what our plugins share about talking to the Kubernetes API: the client
// (kubeconfig, endpoint or in-cluster, protobuf on the wire) and the index of pods by IP.
package kube

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientConfig says where the API server is. All empty means the in-cluster service account.
type ClientConfig struct {
	Kubeconfig string // path of a kubeconfig
	Context    string // context in the kubeconfig; empty: its current context
	Endpoint   string // API server URL; overrides the kubeconfig's server
	UserAgent  string

	// With Endpoint alone: the client certificate, its key and the CA that signs the server's
	// certificate (files).
	CertFile, KeyFile, CAFile string
	// Client-side rate limit of requests (0: client-go's defaults).
	QPS   float32
	Burst int
}

// RESTConfig is the client configuration for c: protobuf on the wire, HTTP/1.1.
func RESTConfig(c ClientConfig) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case c.Kubeconfig != "":
		overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
		overrides.ClusterInfo.Server = c.Endpoint
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Kubeconfig}, overrides).ClientConfig()
	case c.Endpoint != "":
		cfg = &rest.Config{Host: c.Endpoint}
		cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile, cfg.TLSClientConfig.CAFile = c.CertFile, c.KeyFile, c.CAFile
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	// HTTP/1.1: a connection per watch. Over HTTP/2 all watches share one connection, and what
	// the API server sends ahead of us (up to 4 MiB per stream) waits in the process's heap; a
	// relist of every object raised the peak by that much. Over HTTP/1.1 it waits in the
	// kernel's socket buffer, and TCP slows the sender.
	cfg.TLSClientConfig.NextProtos = []string{"http/1.1"}
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.UserAgent = c.UserAgent
	if c.QPS > 0 {
		cfg.QPS = c.QPS
	}
	if c.Burst > 0 {
		cfg.Burst = c.Burst
	}
	return cfg, nil
}

// NewClient builds a clientset from RESTConfig(c).
func NewClient(c ClientConfig) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// PodLive reports whether a pod still holds its addresses: not being deleted and not finished.
// A pod that is not live may already share its IP with a new pod.
func PodLive(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// PodsByIPIndex is the name of the informer index of pods by IP.
const PodsByIPIndex = "ip"

// PodIPs lists a pod's IPs, from status.podIPs or, on old objects, status.podIP.
func PodIPs(pod *corev1.Pod) []string {
	if len(pod.Status.PodIPs) == 0 {
		if pod.Status.PodIP == "" {
			return nil
		}
		return []string{pod.Status.PodIP}
	}
	out := make([]string, 0, len(pod.Status.PodIPs))
	for _, p := range pod.Status.PodIPs {
		out = append(out, p.IP)
	}
	return out
}

// PodIPIndexFunc indexes a pod by each of its IPs, in canonical form.
func PodIPIndexFunc(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, s := range PodIPs(p) {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	return out, nil
}

// PodsByIP returns the pods of an informer (with PodIPIndexFunc under PodsByIPIndex) holding ip.
func PodsByIP(inf cache.SharedIndexInformer, ip string) []*corev1.Pod {
	items, err := inf.GetIndexer().ByIndex(PodsByIPIndex, ip)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(items))
	for _, it := range items {
		if p, ok := it.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// SearchPathAnnotation on a pod turns server-side search expansion (the searchpath plugin) off
// for it: `clusterdns.io/searchpath: "off"`. For clients that ask absolute names inside the
// cluster domain, which a server cannot tell from the first step of a search walk.
const SearchPathAnnotation = "clusterdns.io/searchpath"

// DNSClient is a pod as a DNS server sees it asking: what its resolv.conf says (policy, extra
// search domains), whose address it asks from, and whether it still holds that address.
type DNSClient struct {
	Name, Namespace string
	Policy          corev1.DNSPolicy
	Searches        []string // dnsConfig.searches as written
	HostNetwork     bool     // asks from the node's address
	Live            bool     // see PodLive
	NoExpansion     bool     // SearchPathAnnotation is "off"
}

// DNSClientOf reads a pod (whole or trimmed by TrimPod) in DNS terms.
func DNSClientOf(p *corev1.Pod) DNSClient {
	c := DNSClient{
		Name: p.Name, Namespace: p.Namespace, Policy: p.Spec.DNSPolicy, HostNetwork: p.Spec.HostNetwork,
		Live: PodLive(p), NoExpansion: p.Annotations[SearchPathAnnotation] == "off",
	}
	if p.Spec.DNSConfig != nil {
		c.Searches = p.Spec.DNSConfig.Searches
	}
	return c
}

// TrimPod keeps what DNSClientOf, PodIPs and PodLive read of a pod (and what an informer needs
// to key it), so that a pod watch for DNS clients holds a few hundred bytes per pod.
func TrimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork, DNSPolicy: p.Spec.DNSPolicy},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if v, ok := p.Annotations[SearchPathAnnotation]; ok {
		out.Annotations = map[string]string{SearchPathAnnotation: v}
	}
	if p.Spec.DNSConfig != nil && len(p.Spec.DNSConfig.Searches) > 0 {
		out.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: p.Spec.DNSConfig.Searches}
	}
	return out
}

// TrimPodTransform is TrimPod as an informer transform.
func TrimPodTransform(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return TrimPod(p), nil
	}
	return obj, nil
}

// Equal reports whether two clients are the same in every field.
func (c DNSClient) Equal(o DNSClient) bool {
	return c.Name == o.Name && c.Namespace == o.Namespace && c.Policy == o.Policy &&
		c.HostNetwork == o.HostNetwork && c.Live == o.Live && c.NoExpansion == o.NoExpansion &&
		slices.Equal(c.Searches, o.Searches)
}
