package nodecache

import (
	"sync"

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
		Help: "Answers that lost answer records to the client's UDP size (TC set).",
	}, []string{"server"})
	inFlight = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "in_flight",
		Help: "Queries being answered right now.",
	}, []string{"server"})
	shedMisses = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "shed_total",
		Help: "Misses answered at once with a failure because the block had its most questions in flight.",
	}, []string{"server"})
	doorDatagrams = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "door_datagrams_total",
		Help: "UDP datagrams the packet door read (answered there or handed to CoreDNS's server).",
	}, []string{"server"})
	cacheEntries = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "entries",
		Help: "Entries in the process-wide cache, by kind (success or denial).",
	}, []string{"type"})
	cacheBytes = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "cache_bytes",
		Help: "Approximate bytes held by the process-wide cache (bounded by max_memory).",
	})
)

// serverMetrics are the per-server counters of the query path, looked up once per server label.
type serverMetrics struct {
	hitSuccess, hitDenial prometheus.Counter
	misses, stale         prometheus.Counter
	prefetch, truncated   prometheus.Counter
	doorDatagrams, shed   prometheus.Counter
	inFlight              prometheus.Gauge
}

var serverMetricsByLabel sync.Map // server label → *serverMetrics

func metricsFor(server string) *serverMetrics {
	if m, ok := serverMetricsByLabel.Load(server); ok {
		return m.(*serverMetrics)
	}
	m := &serverMetrics{
		hitSuccess:    cacheHits.WithLabelValues(server, "success"),
		hitDenial:     cacheHits.WithLabelValues(server, "denial"),
		misses:        cacheMisses.WithLabelValues(server),
		stale:         staleServed.WithLabelValues(server),
		prefetch:      prefetches.WithLabelValues(server),
		truncated:     truncated.WithLabelValues(server),
		doorDatagrams: doorDatagrams.WithLabelValues(server),
		shed:          shedMisses.WithLabelValues(server),
		inFlight:      inFlight.WithLabelValues(server),
	}
	actual, _ := serverMetricsByLabel.LoadOrStore(server, m)
	return actual.(*serverMetrics)
}
