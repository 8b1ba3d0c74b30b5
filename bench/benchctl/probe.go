package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// probe is a name a server has synced once it answers it: NOERROR with Want among the answer's
// A or AAAA records.
type probe struct {
	Name, Type, Want string
}

// waitAnswer asks every probe until each is answered as it wants, and returns the seconds from
// since (when the server process was started) to the last probe answered.
func waitAnswer(server string, probes []probe, since time.Time, timeout time.Duration) (float64, error) {
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	for _, p := range probes {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(p.Name), dns.StringToType[p.Type])
		for {
			if time.Since(since) > timeout {
				return 0, fmt.Errorf("%s at %s not answered with %s after %s", p.Name, server, p.Want, timeout)
			}
			r, _, err := c.Exchange(m, server)
			if err == nil && r.Rcode == dns.RcodeSuccess && answerHas(r, p.Want) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(since).Seconds(), nil
}

func answerHas(r *dns.Msg, want string) bool {
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			if v.A.String() == want {
				return true
			}
		case *dns.AAAA:
			if v.AAAA.String() == want {
				return true
			}
		}
	}
	return false
}

// memStats is a process's memory sampled over a window, in MiB: VmRSS and
// go_memstats_heap_inuse_bytes, the last and the highest, and every sample when asked for.
type memStats struct {
	RSSLast, RSSMax, HeapLast, HeapMax float64
	Samples                            []Sample
}

// sampleMem samples a process's RSS and Go heap (its prometheus endpoint) every interval until
// duration passes or stop is closed.
func sampleMem(pid int, metricsURL string, duration, interval time.Duration, keep bool, stop <-chan struct{}) memStats {
	const mib = 1 << 20
	var m memStats
	start := time.Now()
	end := start.Add(duration)
	for {
		if rss, err := vmRSS(pid); err == nil {
			m.RSSLast, m.RSSMax = rss/mib, max(m.RSSMax, rss/mib)
		}
		if h, err := scrape(metricsURL, "go_memstats_heap_inuse_bytes"); err == nil {
			m.HeapLast, m.HeapMax = h/mib, max(m.HeapMax, h/mib)
		}
		if keep {
			m.Samples = append(m.Samples, Sample{T: round(time.Since(start).Seconds(), 2), RSS: round(m.RSSLast, 1), Heap: round(m.HeapLast, 1)})
		}
		if time.Now().After(end) {
			return m
		}
		select {
		case <-stop:
			return m
		case <-time.After(interval):
		}
	}
}

// round x to n decimals.
func round(x float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(x*p) / p
}

// vmRSS reads a process's resident set size in bytes from /proc.
func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape sums the samples of one metric of a prometheus text endpoint.
func scrape(url, name string) (float64, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("%s not in %s", name, url)
	}
	return sum, sc.Err()
}

// metricCount is the sum of a prometheus metric's samples (0 when absent).
func metricCount(url, name string) (int, error) {
	v, err := scrape(url, name)
	if err != nil && strings.Contains(err.Error(), " not in ") {
		return 0, nil
	}
	return int(v), err
}

// fetchTo saves a URL's body to a file (pprof profiles; a heap URL with ?gc=1 forces a GC first).
func fetchTo(url, path string) error {
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// walk -server ADDR -source IP -search "d1 d2 d3" -ndots 5 -names N -prefix host- -domain example.com:
// resolves N names (prefix<i>.domain, A then AAAA) the way a pod's stub resolver does with
// ndots:5: a name with fewer dots than ndots is tried with each search domain in order, then
// as given; the first answer that is not NXDOMAIN ends the walk. Prints a walkResult as JSON (a
// lookup is one name, both families). `benchctl run` runs it through taskset, pinned.
func walk(args []string) error {
	fs := flag.NewFlagSet("walk", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server host:port")
	source := fs.String("source", "", "local address to send from (the pod's IP)")
	search := fs.String("search", "", "search domains, in order, space separated")
	ndots := fs.Int("ndots", 5, "ndots")
	names := fs.Int("names", 1, "lookups")
	prefix := fs.String("prefix", "host-", "name prefix")
	domain := fs.String("domain", "example.com", "domain the names are under")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	if *source != "" {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(*source)}}
	}
	domains := strings.Fields(*search)
	var sent, answered int
	var lat []float64
	for i := 0; i < *names; i++ {
		name := fmt.Sprintf("%s%d.%s", *prefix, i, *domain)
		var candidates []string
		if strings.Count(name, ".") < *ndots {
			for _, d := range domains {
				candidates = append(candidates, name+"."+d+".")
			}
		}
		candidates = append(candidates, name+".")
		start := time.Now()
		ok := 0
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			for _, cand := range candidates {
				m := new(dns.Msg)
				m.SetQuestion(cand, t)
				sent++
				r, _, err := c.Exchange(m, *server)
				if err != nil {
					return fmt.Errorf("%s %s: %w", cand, dns.TypeToString[t], err)
				}
				if r.Rcode == dns.RcodeNameError {
					continue
				}
				if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
					ok++
				}
				break
			}
		}
		lat = append(lat, time.Since(start).Seconds()*1000)
		if ok == 2 {
			answered++
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return json.NewEncoder(os.Stdout).Encode(walkResult{QueriesPerLookup: float64(sent) / float64(*names),
		P50ms: q(0.5), P99ms: q(0.99), Answered: answered, Lookups: *names})
}

// walkResult is what `benchctl walk` found.
type walkResult struct {
	QueriesPerLookup float64 `json:"queries_per_lookup"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	Answered         int     `json:"answered"`
	Lookups          int     `json:"lookups"`
}
