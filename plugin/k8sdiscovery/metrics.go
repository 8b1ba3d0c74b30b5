package k8sdiscovery

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	requestCount = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "requests_total",
		Help:      "Queries answered by k8sdiscovery, by kind of answer (service, endpoint, srv, ptr, pod, externalname, apex, dns_version, nodata, nxdomain, not_synced, refused).",
	}, []string{"server", "kind"})

	objectsIndexed = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "objects_indexed",
		Help:      "API objects held in the store, by kind (services, endpointslices, namespaces, pods), and addresses with PTR records (reverse_addresses).",
	}, []string{"kind"})

	programmingLatency = promauto.NewHistogram(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "dns_programming_duration_seconds",
		Help:      "Time from an endpoint change (endpoints.kubernetes.io/last-change-trigger-time) to the store answering it.",
		Buckets:   prometheus.ExponentialBuckets(0.001, 2, 20),
	})

	syncState = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "synced",
		Help:      "1 once the first sync with the API server (or the manifests folder) has finished, else 0.",
	})
)

func metricsServer(ctx context.Context) string { return metrics.WithServer(ctx) }
