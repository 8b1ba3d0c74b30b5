package k8sdiscovery

import (
	"fmt"

	"github.com/coredns/coredns/coremain"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// newClient picks the source of objects: a manifests folder, a kubeconfig (with an optional
// context and endpoint override), an endpoint alone, or the in-cluster service account.
func (k *K8sDiscovery) newClient() (kubernetes.Interface, error) {
	if k.cfg.manifests != "" {
		return newManifestSource(k.cfg.manifests, k.stopCh)
	}
	var cfg *rest.Config
	var err error
	switch {
	case k.cfg.kubeconfig != "":
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: k.cfg.kubeconfig}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: k.cfg.kubeContext}
		if k.cfg.endpoint != "" {
			overrides.ClusterInfo.Server = k.cfg.endpoint
		}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	case k.cfg.endpoint != "":
		cfg = &rest.Config{Host: k.cfg.endpoint}
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.UserAgent = "clusterdns/" + coremain.CoreVersion + " (" + pluginName + ")"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}
