package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// DnsperfReport is the statistics dnsperf prints at the end of a run.
type DnsperfReport struct {
	Sent, Completed, Lost int
	// Rcodes is the "Response codes:" line as "NOERROR:99.00%,NXDOMAIN:1.00%"; RcodeCounts the
	// counts per rcode.
	Rcodes        string
	RcodeCounts   map[string]int
	ResponseBytes int
	RunSeconds    float64
	QPS           float64
}

// rcodeEntry is one rcode of "Response codes:": "NOERROR 183082 (90.00%)" (dnsperf) or
// "NOERROR 183082" (tcpload).
var rcodeEntry = regexp.MustCompile(`([A-Z]+) ([0-9]+)(?: \(([0-9.]+%)\))?`)

// parseDnsperf reads dnsperf's (or `benchctl tcpload`'s) report. A report without a "Queries
// per second:" line is an error: dnsperf did not run to its end.
func parseDnsperf(r io.Reader) (DnsperfReport, error) {
	rep := DnsperfReport{RcodeCounts: map[string]int{}}
	seen := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		label, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		f := strings.Fields(value)
		if len(f) == 0 {
			continue
		}
		switch label {
		case "Queries sent":
			rep.Sent = atoi(f[0])
		case "Queries completed":
			rep.Completed = atoi(f[0])
		case "Queries lost":
			rep.Lost = atoi(f[0])
		case "Response codes":
			var parts []string
			for _, m := range rcodeEntry.FindAllStringSubmatch(value, -1) {
				if m[3] != "" {
					parts = append(parts, m[1]+":"+m[3])
				} else {
					parts = append(parts, m[1]+":"+m[2])
				}
				rep.RcodeCounts[m[1]] = atoi(m[2])
			}
			rep.Rcodes = strings.Join(parts, ",")
		case "Average packet size":
			rep.ResponseBytes = atoi(f[len(f)-1])
		case "Run time (s)":
			rep.RunSeconds = atof(f[0])
		case "Queries per second":
			rep.QPS = atof(f[0])
			seen = true
		}
	}
	if err := sc.Err(); err != nil {
		return rep, err
	}
	if !seen {
		return rep, fmt.Errorf("no \"Queries per second\" in dnsperf's report")
	}
	return rep, nil
}

// latenciesOf reads the answered queries of `dnsperf -v` output ("> NOERROR name type 0.000123"
// per answer; "> T" lines are timeouts) and returns their latencies in seconds.
func latenciesOf(r io.Reader) ([]float64, error) {
	var lat []float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
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
	return lat, sc.Err()
}

// Percentiles are latency figures in milliseconds.
type Percentiles struct {
	P50, P99, Max float64
	N             int
}

// percentiles of latencies in seconds (sorted in place).
func percentiles(lat []float64) Percentiles {
	if len(lat) == 0 {
		return Percentiles{}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] * 1000 }
	return Percentiles{P50: q(0.50), P99: q(0.99), Max: lat[len(lat)-1] * 1000, N: len(lat)}
}
