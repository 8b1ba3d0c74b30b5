package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestProgrammingLatency creates 100 Services (four clients at a time) and measures, for each,
// the time from sending the Create to the first DNS answer with its cluster IP. The figures are
// logged, not asserted: a slow CI machine is not a failure. Only a Service that never resolves is.
func TestProgrammingLatency(t *testing.T) {
	s := shared(t)
	const n, workers = 100, 4
	createNamespace(t, "lat")
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failed    []string
		polls     sync.WaitGroup
		creates   sync.WaitGroup
	)
	names := make(chan int)
	start := time.Now()
	for w := 0; w < workers; w++ {
		creates.Add(1)
		go func() {
			defer creates.Done()
			for i := range names {
				svc := clusterIPService("lat", fmt.Sprintf("svc-%03d", i), nil, port("http", 80, corev1.ProtocolTCP))
				sent := time.Now()
				created, err := harness.client.CoreV1().Services("lat").Create(ctx(), svc, metav1.CreateOptions{})
				if err != nil {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("create %s: %v", svc.Name, err))
					mu.Unlock()
					continue
				}
				polls.Add(1)
				go func() {
					defer polls.Done()
					d, err := waitResolves(s, created.Name+".lat.svc.cluster.local.", created.Spec.ClusterIP, sent, 30*time.Second)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed = append(failed, err.Error())
						return
					}
					latencies = append(latencies, d)
				}()
			}
		}()
	}
	for i := 0; i < n; i++ {
		names <- i
	}
	close(names)
	creates.Wait()
	createdIn := time.Since(start)
	polls.Wait()

	for _, f := range failed {
		t.Error(f)
	}
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	var sum time.Duration
	for _, d := range latencies {
		sum += d
	}
	t.Logf("DNS programming latency, %d Services created in %s (%d clients): p50 %s, p90 %s, p99 %s, max %s, mean %s (Create sent → first answer with the cluster IP, polled every 10 ms over UDP)",
		len(latencies), createdIn.Round(time.Millisecond), workers,
		percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 99),
		latencies[len(latencies)-1].Round(100*time.Microsecond), (sum / time.Duration(len(latencies))).Round(100*time.Microsecond))
}

// waitResolves polls name A until it answers ip; it returns the time since sent.
func waitResolves(s *dnsServer, name, ip string, sent time.Time, timeout time.Duration) (time.Duration, error) {
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	for {
		r, _, err := c.Exchange(m, s.addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			if rec, ok := r.Answer[0].(*dns.A); ok && rec.A.String() == ip {
				return time.Since(sent), nil
			}
		}
		if time.Since(sent) > timeout {
			return 0, fmt.Errorf("%s A: no answer %s after the Create (last: %v %v)", name, timeout, r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (p*len(sorted)+99)/100 - 1
	if i < 0 {
		i = 0
	}
	return sorted[i].Round(100 * time.Microsecond)
}
