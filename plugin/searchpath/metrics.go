package searchpath

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	expanded = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "expanded_total",
		Help:      "Queries expanded through the client's search list.",
	}, []string{"server"})

	answeredAt = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "answered_total",
		Help:      "Expanded queries answered, by the position of the answering candidate (0 is the asked name, bare is the name without search domain).",
	}, []string{"server", "position"})

	skipped = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "skipped_total",
		Help:      "Queries passed on without expansion, by reason.",
	}, []string{"server", "reason"})
)

func metricsServer(ctx context.Context) string { return metrics.WithServer(ctx) }
