package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// syncTime -server ADDR -probes FILE -since UNIXNANO -timeout D: asks every probe (NAME TYPE WANT
// per line) until each is answered NOERROR with WANT among the answer's records; prints the
// seconds from -since (when the server process was started) to the last probe answered.
func syncTime(args []string) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server host:port")
	probes := fs.String("probes", "", "file of NAME TYPE WANT lines")
	since := fs.Int64("since", 0, "start time, Unix nanoseconds (default: now)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	if *since > 0 {
		start = time.Unix(0, *since)
	}
	b, err := os.ReadFile(*probes)
	if err != nil {
		return err
	}
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return fmt.Errorf("probe line %q: want NAME TYPE WANT", line)
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(f[0]), dns.StringToType[f[1]])
		for {
			if time.Since(start) > *timeout {
				return fmt.Errorf("%s not answered with %s after %s", f[0], f[2], *timeout)
			}
			r, _, err := c.Exchange(m, *server)
			if err == nil && r.Rcode == dns.RcodeSuccess && answerHas(r, f[2]) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Printf("%.1f\n", time.Since(start).Seconds())
	return nil
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

// mem -pid PID -metrics URL -duration D [-interval D]: samples VmRSS and go_memstats_heap_inuse_bytes
// until the duration ends or SIGTERM comes; prints "rss_last_mib rss_max_mib heap_last_mib heap_max_mib".
func mem(args []string) error {
	fs := flag.NewFlagSet("mem", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "process")
	url := fs.String("metrics", "", "prometheus endpoint of the process")
	duration := fs.Duration("duration", 10*time.Second, "how long to sample")
	interval := fs.Duration("interval", 200*time.Millisecond, "sampling interval")
	samples := fs.String("samples", "", "also write every sample to this file: seconds since the start, RSS MiB, heap MiB (a line each)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	const mib = 1 << 20
	var out *os.File
	if *samples != "" {
		f, err := os.Create(*samples)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	var rssLast, rssMax, heapLast, heapMax float64
	start := time.Now()
	end := start.Add(*duration)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
sampling:
	for {
		if rss, err := vmRSS(*pid); err == nil {
			rssLast, rssMax = rss, max(rssMax, rss)
		}
		if h, err := scrape(*url, "go_memstats_heap_inuse_bytes"); err == nil {
			heapLast, heapMax = h, max(heapMax, h)
		}
		if out != nil {
			fmt.Fprintf(out, "%.2f %.1f %.1f\n", time.Since(start).Seconds(), rssLast/mib, heapLast/mib)
		}
		if time.Now().After(end) {
			break
		}
		select {
		case <-stop:
			break sampling
		case <-time.After(*interval):
		}
	}
	fmt.Printf("%.0f %.0f %.0f %.0f\n", rssLast/mib, rssMax/mib, heapLast/mib, heapMax/mib)
	return nil
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

// metric URL NAME: prints the sum of NAME's samples (0 when absent).
func metric(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: metric URL NAME")
	}
	v, err := scrape(args[0], args[1])
	if err != nil && strings.Contains(err.Error(), " not in ") {
		v, err = 0, nil
	}
	if err != nil {
		return err
	}
	fmt.Printf("%.0f\n", v)
	return nil
}

// fetch URL [OUT]: GET URL and save the body to OUT (or drop it). With a pprof heap URL and
// ?gc=1 this forces a garbage collection first; with /debug/pprof/profile it records a CPU profile.
func fetch(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("usage: fetch URL [OUT]")
	}
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", args[0], resp.Status)
	}
	out := io.Discard
	if len(args) > 1 {
		f, err := os.Create(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

// latency FILE: reads dnsperf -v output ("> NOERROR name type 0.000123" per answered query) and
// prints "p50_ms p99_ms max_ms answered".
func latency(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: latency FILE")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	var lat []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "> ") || strings.HasPrefix(line, "> T ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lat = append(lat, v)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(lat) == 0 {
		return fmt.Errorf("no answered queries in %s", args[0])
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] * 1000 }
	fmt.Printf("%.3f %.3f %.3f %d\n", q(0.50), q(0.99), lat[len(lat)-1]*1000, len(lat))
	return nil
}

// walk -server ADDR -source IP -search "d1 d2 d3" -ndots 5 -names N -prefix host- -domain example.com:
// resolves N names (prefix<i>.domain, A then AAAA) the way a pod's stub resolver does with
// ndots:5: a name with fewer dots than ndots is tried with each search domain in order, then
// as given; the first answer that is not NXDOMAIN ends the walk. Prints "queries_per_lookup
// p50_ms p99_ms answered_lookups lookups" (a lookup is one name, both families).
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
	fmt.Printf("%.2f %.3f %.3f %d %d\n", float64(sent)/float64(*names), q(0.5), q(0.99), answered, *names)
	return nil
}
