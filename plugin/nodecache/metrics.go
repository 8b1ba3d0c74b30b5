package nodecache

import (
	"sync"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"
	"github.com/miekg/dns"
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

// standardReport counts a door answer in the metrics every CoreDNS server exports (the
// prometheus plugin's coredns_dns_*), as that plugin would have had the query passed through it,
// so the dashboards and alerts operators run read the node role whole.
type standardReport struct {
	requests, do, rcode        prometheus.Counter
	duration, reqSize, rspSize prometheus.Observer
}

type standardKey struct {
	server, zone string
	fam          byte
	qtype        uint16
	rcode        int
	do           bool
}

var standardReports sync.Map // standardKey → *standardReport

func reportStandard(k standardKey, reqSize, rspSize int, start time.Time) {
	v, ok := standardReports.Load(k)
	if !ok {
		fam := "1"
		if k.fam == 2 {
			fam = "2"
		}
		qtype := dns.TypeToString[k.qtype]
		if qtype == "" || !commonType[k.qtype] {
			qtype = "other"
		}
		r := &standardReport{
			requests: vars.RequestCount.WithLabelValues(k.server, k.zone, "", "udp", fam, qtype),
			rcode:    vars.ResponseRcode.WithLabelValues(k.server, k.zone, "", rcode.ToString(k.rcode), pluginName),
			duration: vars.RequestDuration.WithLabelValues(k.server, k.zone, ""),
			reqSize:  vars.RequestSize.WithLabelValues(k.server, k.zone, "", "udp"),
			rspSize:  vars.ResponseSize.WithLabelValues(k.server, k.zone, "", "udp"),
		}
		if k.do {
			r.do = vars.RequestDo.WithLabelValues(k.server, k.zone, "")
		}
		v, _ = standardReports.LoadOrStore(k, r)
	}
	r := v.(*standardReport)
	r.requests.Inc()
	if r.do != nil {
		r.do.Inc()
	}
	r.rcode.Inc()
	r.duration.Observe(time.Since(start).Seconds())
	r.reqSize.Observe(float64(reqSize))
	r.rspSize.Observe(float64(rspSize))
}

// commonType are the query types the standard metrics name; others count as "other", as the
// prometheus plugin counts them.
var commonType = map[uint16]bool{
	dns.TypeA: true, dns.TypeAAAA: true, dns.TypeCNAME: true, dns.TypeDNSKEY: true, dns.TypeDS: true,
	dns.TypeMX: true, dns.TypeNSEC3: true, dns.TypeNSEC: true, dns.TypeNS: true, dns.TypePTR: true,
	dns.TypeRRSIG: true, dns.TypeSOA: true, dns.TypeSRV: true, dns.TypeTXT: true, dns.TypeHTTPS: true,
	dns.TypeSVCB: true, dns.TypeIXFR: true, dns.TypeAXFR: true, dns.TypeANY: true,
}
