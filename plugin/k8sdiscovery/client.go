package k8sdiscovery

import (
	"github.com/clusterdns/clusterdns/internal/kube"
	"github.com/coredns/coredns/coremain"
	"k8s.io/client-go/kubernetes"
)

// newClient picks the source of objects: a manifests folder, a kubeconfig (with an optional
// context and endpoint override), an endpoint alone, or the in-cluster service account.
func (k *K8sDiscovery) newClient() (kubernetes.Interface, error) {
	if k.cfg.manifests != "" {
		return newManifestSource(k.cfg.manifests, k.stopCh)
	}
	return kube.NewClient(k.clientConfig())
}

// clientConfig says where the API server is and how to talk to it (the stanza's options).
func (k *K8sDiscovery) clientConfig() kube.ClientConfig {
	return kube.ClientConfig{
		Kubeconfig: k.cfg.kubeconfig, Context: k.cfg.kubeContext, Endpoint: k.cfg.endpoint,
		UserAgent: "clusterdns/" + coremain.CoreVersion + " (" + pluginName + ")",
		CertFile:  k.cfg.tlsCert, KeyFile: k.cfg.tlsKey, CAFile: k.cfg.tlsCA,
		QPS: k.cfg.qps, Burst: k.cfg.burst,
	}
}
