package door

import (
	"sync"
	"time"

	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// standardReport is the metrics of one StandardKey, looked up once.
type standardReport struct {
	requests, do, rcode        prometheus.Counter
	duration, reqSize, rspSize prometheus.Observer
}

// StandardKey is what labels a door answer in the standard metrics: the server (dns://ip:port),
// the zone of the block, the client's family (Family), the query type, the answer's rcode, the
// query's DO bit, and the plugin that answered.
type StandardKey struct {
	Server, Zone, Plugin string
	Fam                  byte
	QType                uint16
	Rcode                int
	DO                   bool
}

var standardReports sync.Map // StandardKey → *standardReport

// Report counts a door answer in the metrics every CoreDNS server exports (the prometheus
// plugin's coredns_dns_*), as that plugin would have had the query passed through it, so the
// dashboards and alerts operators run read a door's answers with the rest. Call it for answers of
// a block with prometheus.
func Report(k StandardKey, reqSize, rspSize int, start time.Time) {
	if !commonType[k.QType] {
		k.QType = 0 // "other": one entry for every type a client may invent
	}
	v, ok := standardReports.Load(k)
	if !ok {
		fam := "1"
		if k.Fam == 2 {
			fam = "2"
		}
		qtype := dns.TypeToString[k.QType]
		if qtype == "" || !commonType[k.QType] {
			qtype = "other"
		}
		r := &standardReport{
			requests: vars.RequestCount.WithLabelValues(k.Server, k.Zone, "", "udp", fam, qtype),
			rcode:    vars.ResponseRcode.WithLabelValues(k.Server, k.Zone, "", rcode.ToString(k.Rcode), k.Plugin),
			duration: vars.RequestDuration.WithLabelValues(k.Server, k.Zone, ""),
			reqSize:  vars.RequestSize.WithLabelValues(k.Server, k.Zone, "", "udp"),
			rspSize:  vars.ResponseSize.WithLabelValues(k.Server, k.Zone, "", "udp"),
		}
		if k.DO {
			r.do = vars.RequestDo.WithLabelValues(k.Server, k.Zone, "")
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
