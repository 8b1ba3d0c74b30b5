package nodecache

import (
	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	cacheHits = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "hits_total",
		Help: "Answers served from the cache, by kind (success or denial).",
	}, []string{"server", "type"})
	cacheMisses = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "misses_total",
		Help: "Queries the cache could not answer and sent upstream.",
	}, []string{"server"})
	staleServed = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "stale_served_total",
		Help: "Expired answers served because no upstream answered (RFC 8767).",
	}, []string{"server"})
	prefetches = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "prefetch_total",
		Help: "Hot entries refreshed before they expired.",
	}, []string{"server"})
	truncated = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "truncated_total",
		Help: "Answers cut to the header with TC set because they exceeded the client's UDP size.",
	}, []string{"server"})
	inFlight = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "in_flight",
		Help: "Queries being answered right now.",
	}, []string{"server"})
	cacheEntries = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "entries",
		Help: "Entries in the process-wide cache, by kind (success or denial).",
	}, []string{"type"})
	cacheBytes = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "cache_bytes",
		Help: "Approximate bytes held by the process-wide cache (bounded by max_memory).",
	})
	upstreamDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "upstream_request_duration_seconds",
		Buckets: plugin.TimeBuckets,
		Help:    "Time an upstream took to answer (or fail), by upstream and transport.",
	}, []string{"upstream", "transport"})
	upstreamErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "upstream_errors_total",
		Help: "Upstream exchanges that failed, by upstream, transport and kind (timeout, backoff, closed, other).",
	}, []string{"upstream", "transport", "kind"})
	upstreamHealthy = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "upstream_healthy",
		Help: "1 while the upstream answers health checks, else 0.",
	}, []string{"upstream", "transport"})
	setupErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "setup_errors_total",
		Help: "Failures setting up or tearing down the node (stage: lock, link, filter, teardown).",
	}, []string{"stage"})
)
