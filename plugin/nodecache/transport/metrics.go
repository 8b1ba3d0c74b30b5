package transport

import (
	"context"
	"errors"

	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const subsystem = "nodecache"

var (
	requestDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace, Subsystem: subsystem, Name: "upstream_request_duration_seconds",
		Buckets: plugin.TimeBuckets,
		Help:    "Time an upstream took to answer (or fail), by upstream and transport.",
	}, []string{"upstream", "transport"})
	requestErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: subsystem, Name: "upstream_errors_total",
		Help: "Upstream exchanges that failed, by upstream, transport and kind (timeout, backoff, closed, other).",
	}, []string{"upstream", "transport", "kind"})
	localRefusals = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: subsystem, Name: "upstream_local_errors_total",
		Help: "Queries not sent to an upstream for a local reason (pool_full, closed); never counted against the upstream.",
	}, []string{"upstream", "transport", "reason"})
	healthy = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: subsystem, Name: "upstream_healthy",
		Help: "1 while the upstream is believed up (health checks and queries), else 0.",
	}, []string{"upstream", "transport"})
	connsOpen = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: subsystem, Name: "upstream_connections",
		Help: "Open TCP connections to the upstream, by state (busy, idle).",
	}, []string{"upstream", "state"})
)

func errorKind(err error) string {
	var nerr interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, errBackoff):
		return "backoff"
	case errors.Is(err, errConnClosed):
		return "closed"
	default:
		return "other"
	}
}
