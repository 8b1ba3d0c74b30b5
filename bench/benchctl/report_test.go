package main

import (
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// srv is a server of the fixture: every run with the same CPU, response size and rcodes, the
// load average going from lo to hi.
func srv(name, label string, qps []float64, cpuPct, cpuUs float64, rss, bytes int, lo, hi, p50, p99 float64, rcodes string) Server {
	s := Server{Name: name, Label: label, Ours: name == "ours", P50ms: p50, P99ms: p99}
	for i, q := range qps {
		load := lo
		if i == len(qps)-1 {
			load = hi
		}
		s.Runs = append(s.Runs, Throughput{QPS: q, Completed: int(q * 10), CPUPercent: cpuPct, CPUPerQuery: cpuUs, Rcodes: rcodes, ResponseBytes: bytes, Load: load})
		s.PeakRSS = append(s.PeakRSS, rss)
	}
	s.summarize()
	return s
}

func fixed(role, name, label string, rate int, cpuPct, cpuUs float64) FixedRate {
	f := FixedRate{Role: role, Server: name, Label: label, Ours: name == "ours", Rate: rate}
	for range 3 {
		f.Runs = append(f.Runs, Throughput{QPS: float64(rate), Completed: rate * 10, CPUPercent: cpuPct, CPUPerQuery: cpuUs, Rcodes: "NOERROR:100.00%"})
	}
	f.summarize()
	return f
}

// fixture is a run with every section, its figures those of the committed RESULTS.md of
// 2026-12-02 02:31 UTC.
func fixture() *Results {
	r := &Results{Run: RunInfo{Date: "2026-12-02 02:31 UTC", Commit: "8797b50", Minutes: 40, Rounds: 3, Seconds: 10, Outstanding: 100,
		LatencySeconds: 5, IndexServices: 1000, MissServices: 100, MemServices: 10000, MemPods: 150000, MemSettle: 20, RelistWatch: 60,
		LowRates: []int{2000, 10000}, ServerCPU: 0, LoadCPU: 1, LoadStart: "1.24 1.43 1.49", LoadEnd: "3.46 2.60 2.25",
		Machine: Machine{Cores: 2, CPUModel: "AMD EPYC", MemGiB: 24, Kernel: "6.18.44-fc-v1045", DnsperfVersion: "2.10.0", UnboundVersion: "1.17.1", KubeVersion: "v1.37.1", EtcdVersion: "3.7.0"}}}
	r.Scenarios = []Scenario{
		{ID: "index", Title: "1. cluster names", LatencyRate: 9847, QueryLines: 4000,
			Loaded: &LoadReport{Services: 1000, Endpoints: 5000, Seconds: 4},
			Servers: []Server{
				srv("ours", "k8sdiscovery", []float64{98990, 68629, 90359}, 84, 10.02, 58, 211, 1.59, 2.23, 0.083, 1.125, "NOERROR:100.00%"),
				srv("upstream", "upstream kubernetes", []float64{19601, 19990, 19494}, 99, 50.13, 63, 211, 1.57, 2.27, 0.209, 6.163, "NOERROR:100.00%"),
			}},
		{ID: "hit", Title: "2. node-cache hits", LatencyRate: 19223, Servers: []Server{
			srv("ours", "nodecache", []float64{101434, 76762, 88954}, 87, 9.93, 46, 65, 2.79, 3.02, 0.053, 0.678, "NOERROR:100.00%"),
			srv("cache", "CoreDNS cache + forward", []float64{39404, 37841, 38092}, 98, 25.45, 45, 97, 2.63, 3.03, 0.142, 3.323, "NOERROR:100.00%"),
			srv("unbound", "Unbound 1.17.1", []float64{74676, 70917, 68444}, 87, 12.21, 17, 65, 2.69, 3.01, 0.047, 0.699, "NOERROR:100.00%"),
			srv("goceiling", "Go ceiling (miekg/dns)", []float64{53837, 52474, 52102}, 97, 18.41, 12, 97, 2.74, 2.93, 0.074, 0.854, "NOERROR:100.00%"),
		}},
		{ID: "miss", Title: "3. cluster misses, TCP", LatencyRate: 7535, Loaded: &LoadReport{Services: 100, Endpoints: 500}, Servers: []Server{
			srv("ours", "nodecache", []float64{16193, 14773, 19272}, 84, 50.61, 60, 116, 2.88, 3.36, 0.858, 13.112, "NXDOMAIN:100.00%"),
			srv("pipelined", "nodecache, upstream pipelined", []float64{20057, 14447, 21479}, 81, 44.37, 60, 121, 2.91, 3.30, 0.865, 10.742, "NXDOMAIN:100.00%"),
			srv("forward", "CoreDNS cache + forward force_tcp", []float64{15404, 14938, 14872}, 90, 59.86, 57, 158, 3.07, 3.19, 1.133, 13.897, "NXDOMAIN:100.00%"),
		}},
		{ID: "chainhit", Title: "8. whole chain, hits", LatencyRate: 20605, Servers: []Server{
			srv("ours", "nodecache → k8sdiscovery", []float64{93713, 72212, 90139}, 80, 9.42, 46, 160, 2.58, 2.74, 0.072, 1.099, "NOERROR:100.00%"),
			srv("upstream", "cache + forward → kubernetes", []float64{42627, 43976, 37026}, 97, 23.70, 46, 237, 2.43, 2.49, 0.191, 6.213, "NOERROR:100.00%"),
		}},
		{ID: "chainmiss", Title: "8. whole chain, misses", LatencyRate: 8121, Servers: []Server{
			srv("ours", "nodecache → k8sdiscovery", []float64{18781, 19333, 18961}, 87, 45.83, 61, 116, 2.84, 3.16, 0.431, 9.326, "NXDOMAIN:100.00%"),
			srv("upstream", "cache + forward → kubernetes", []float64{15800, 16262, 16667}, 92, 56.79, 57, 159, 2.74, 3.15, 0.874, 16.394, "NXDOMAIN:100.00%"),
		}},
	}
	for i := range r.Scenarios[4].Servers {
		for j := range r.Scenarios[4].Servers[i].Runs {
			r.Scenarios[4].Servers[i].Runs[j].CentralCPUPerQuery = []float64{34.95, 36.25}[i]
			r.Scenarios[3].Servers[i].Runs[j].CentralCPUPerQuery = []float64{0.01, 0.03}[i]
		}
	}
	r.Search = []Search{
		{Mode: "without", QueriesPerLookup: 8, CentralRequests: 8, UpstreamRequests: 2, OneAnswered: 1, OneLookups: 1, ManyQueries: 8, P50ms: 1.376, P99ms: 4.365, ManyAnswered: 1000, ManyLookups: 1000},
		{Mode: "with", QueriesPerLookup: 2, CentralRequests: 10, UpstreamRequests: 2, OneAnswered: 1, OneLookups: 1, ManyQueries: 2, P50ms: 0.772, P99ms: 2.6, ManyAnswered: 1000, ManyLookups: 1000, Expansions: 2002},
	}
	r.MemWorld = &MemWorld{LoadSeconds: 523, Loaded: LoadReport{Services: 10000, Pods: 150000, Endpoints: 150000, Seconds: 524,
		Phases: []Phase{{"namespaces", 100, 0.3115}, {"pods (create + status)", 150000, 402.2}, {"services", 10000, 106.4}, {"endpointslices", 10000, 14.62}}}}
	ev := func(ns, svc, es, pods int) []ResourceCount {
		return []ResourceCount{{"namespaces", ns}, {"services", svc}, {"endpointslices", es}, {"pods", pods}}
	}
	r.Memory = []Memory{
		{Name: "ours", Label: "k8sdiscovery", Ours: true, SyncSeconds: 2.1, SteadyRSS: 81, SteadyHeap: 35, WindowPeakRSS: 99, WindowPeakHeap: 51, RelistPeakRSS: 104, RelistPeakHeap: 57,
			WatchEvents: ev(213, 20007, 20003, 150002), Relist: []Sample{{0, 81, 35}, {0.1, 90, 40}, {12.3, 104, 57}}},
		{Name: "upstream", Label: "upstream kubernetes", SyncSeconds: 3.1, SteadyRSS: 205, SteadyHeap: 102, WindowPeakRSS: 213, WindowPeakHeap: 158, RelistPeakRSS: 389, RelistPeakHeap: 345, WatchEvents: ev(212, 20005, 20003, 150002)},
		{Name: "ours-verified", Label: "k8sdiscovery, pods verified", Ours: true, SyncSeconds: 7.3, SteadyRSS: 111, SteadyHeap: 62, WindowPeakRSS: 158, WindowPeakHeap: 109, RelistPeakRSS: 158, RelistPeakHeap: 109, WatchEvents: ev(211, 20005, 20003, 300003)},
		{Name: "upstream-verified", Label: "upstream kubernetes, pods verified", SyncSeconds: 12.7, SteadyRSS: 1036, SteadyHeap: 321, WindowPeakRSS: 1036, WindowPeakHeap: 408, RelistPeakRSS: 1357, RelistPeakHeap: 1266, WatchEvents: ev(211, 20005, 20003, 300003)},
	}
	r.Handover = &Handover{Date: "2026-12-02 03:02 UTC", Commit: "8797b50", LoadSeconds: 8, SlowDelay: "200ms", Cores: 2, Rows: []HandoverRow{
		{"./coredns", "UDP", 13036, 107099, 0, 0}, {"./coredns", "TCP", 3306, 27100, 0, 0}, {"./coredns", "TCP pipelined", 5931, 48673, 0, 0},
		{"./coredns", "UDP", 19199, 157696, 0, 0}, {"./coredns", "TCP", 3231, 26504, 0, 0}, {"./coredns", "TCP pipelined", 292, 2798, 6, 0},
		{"./coredns", "UDP", 13990, 115340, 0, 0}, {"./coredns", "TCP", 2626, 21537, 0, 0}, {"./coredns", "TCP pipelined", 2621, 21516, 0, 0},
	}}
	r.FixedRate = []FixedRate{
		fixed("central", "ours", "k8sdiscovery", 2000, 19, 96.83), fixed("central", "upstream", "upstream kubernetes", 2000, 26, 129.50),
		fixed("central", "ours", "k8sdiscovery", 10000, 37, 37.17), fixed("central", "upstream", "upstream kubernetes", 10000, 70, 70.63),
		fixed("node", "ours", "nodecache", 2000, 17, 86.67), fixed("node", "cache", "CoreDNS cache + forward", 2000, 19, 96.17),
		fixed("node", "ours", "nodecache", 10000, 29, 29.33), fixed("node", "cache", "CoreDNS cache + forward", 10000, 40, 40.00),
	}
	r.Profiles = []Profile{
		{Name: "miss.ours", Summary: []string{"Under dnsperf at 19257 QPS (load average 3.61)."}, Top: []string{"      flat  flat%   sum%        cum   cum%"}},
		{Name: "memory.ours", Summary: []string{"Showing nodes accounting for 23802.38kB, 100% of 23802.38kB total"}},
		{Name: "memory.ours-verified", Summary: []string{"Showing nodes accounting for 57.07MB, 100% of 57.07MB total"}},
	}
	return r
}

// rendered writes the fixture as results.json, renders RESULTS.md from it as `benchctl report`
// does, and returns the text and the plot folder.
func rendered(t *testing.T, r *Results) (string, string) {
	t.Helper()
	dir := t.TempDir()
	if err := r.write(filepath.Join(dir, "results.json")); err != nil {
		t.Fatal(err)
	}
	if err := report([]string{filepath.Join(dir, "results.json"), filepath.Join(dir, "RESULTS.md")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b), filepath.Join(dir, "plots")
}

func TestReportRendersEverySection(t *testing.T) {
	text, _ := rendered(t, fixture())
	for _, tc := range []struct{ section, want string }{
		{"header", "from a run started 2026-12-02 02:31 UTC at commit 8797b50, which took\n40 min."},
		{"header", "1.24 1.43 1.49 at the start, 3.46 2.60 2.25 at the end"},
		{"summary index", "| 1. cluster names | k8sdiscovery vs upstream kubernetes | 85993 / 19695 | **4.37** | 10.02 / 50.13 | 5.00 | 0.083 / 1.125 ; 0.209 / 6.163 | 58 / 63 | ≥ 2.5× | met |"},
		{"summary unbound", "| 2. node-cache hits | nodecache vs Unbound | 89050 / 71346 | **1.25** | 9.93 / 12.21 | 1.23 | 0.053 / 0.678 ; 0.047 / 0.699 | 46 / 17 | ≥ 1× Unbound | met |"},
		{"summary pipelined", "| 3. cluster misses, TCP | nodecache pipelined vs nodecache one query per connection | 18661 / 16746 | **1.11** | 44.37 / 50.61 | 1.14 |"},
		{"summary chain", "| 8. whole chain, misses | nodecache → k8sdiscovery vs cache+forward → kubernetes | 19025 / 16243 | **1.17** | 45.83 / 56.79 | 1.24 |"},
		{"target cpu", "| 1. cluster names: CPU per query within 1.5× of the node cache's CPU per hit (same run) | 10.02 vs 9.93 µs: 1.01× | met |"},
		{"target search", "| 2.00 queries per lookup (A+AAAA) with searchpath, 8.00 without | met |"},
		{"target heap", "| 5. heap ≤ 0.5× upstream kubernetes | 35 MiB vs 102 MiB: 0.34× (RSS 81 vs 205 MiB: 0.40×) | met |"},
		{"target relist", "| 5. relist peak ≤ 1.2× steady (k8sdiscovery, pods verified, RSS) | 158 MiB peak vs 158 MiB in a steady window sampled the same way: 1.00× (vs 111 MiB right after a forced GC: 1.42×; heap peak 1.00× that window's; upstream 1.31× and 1.31×) | met |"},
		{"target handover", "| 0 lost, 0 SERVFAIL of 455276 sent; UDP at 15408 q/s, TCP at 3054 q/s (mean of 3 rounds); TCP pipelined on long-lived connections: 6 lost of 72987 (a known limit) | met |"},
		{"target lowrate", "| 7. CPU per query at 10000 q/s ≤ 0.5× upstream, node role, hits (nodecache vs cache + forward) | 29.33 vs 40.00 µs: 0.73× | not met |"},
		{"plots", "![relist](plots/relist.png)"},
		{"index", "1000 Services in 10 namespaces of a real kube-apiserver"},
		{"index", "Queries (4000 lines, shuffled)"},
		{"index", "Loading: loaded 1000 services, 0 pods, 5000 endpoints in 4 s."},
		{"index table", "| server | QPS mean (per run) | p50 / p99 ms at 9847 qps |"},
		{"index row", "| k8sdiscovery | 85993 (98990, 68629, 90359) | 0.083 / 1.125 | 84 | 10.02 | 58 | 0 | NOERROR:100.00% | 211 | 1.59-2.23 | — |"},
		{"index row", "| upstream kubernetes | 19695 (19601, 19990, 19494) | 0.209 / 6.163 | 99 | 50.13 | 63 | 0 | NOERROR:100.00% | 211 | 1.57-2.27 | 4.37 |"},
		{"hit row", "| Unbound 1.17.1 | 71346 (74676, 70917, 68444) | 0.047 / 0.699 | 87 | 12.21 | 17 | 0 | NOERROR:100.00% | 65 | 2.69-3.01 | 1.25 |"},
		{"miss", "holding 100 Services in 1 namespace, half of them headless"},
		{"miss pipelined", "The node cache pipelined (`upstream pipelined`) shares at most 4 connections"},
		{"miss row", "| nodecache, upstream pipelined | 18661 (20057, 14447, 21479) | 0.865 / 10.742 | 81 | 44.37 | 60 | 0 | NXDOMAIN:100.00% | 121 | 2.91-3.30 | 0.90 |"},
		{"search", "| without searchpath | 8.00 | 8 | 2 | 1/1, 1000/1000 | 1.376 / 4.365 | 0 |"},
		{"search", "| with searchpath | 2.00 | 10 | 2 | 1/1, 1000/1000 | 0.772 / 2.600 | 2002 |"},
		{"memory", "10000 Services (half headless) in 100 namespaces, 150000 Pods (15 per Service"},
		{"memory", "created 100 namespaces in 0.3 s (321/s); created 150000 pods (create + status) in 402.2 s (373/s); created 10000 services in 106.4 s (94/s); created 10000 endpointslices in 14.6 s (684/s); loaded 10000 services, 150000 pods, 150000 endpoints in 524 s."},
		{"memory", "Creation took 523 s on this machine (2 cores"},
		{"memory row", "| k8sdiscovery | 2.1 | 81 | 35 | 99 / 51 | 104 | 57 | 1.05 | 1.28 | 1.63 | 213 namespaces, 20007 services, 20003 endpointslices, 150002 pods |"},
		{"memory row", "| upstream kubernetes, pods verified | 12.7 | 1036 | 321 | 1036 / 408 | 1357 | 1266 | 1.31 | 1.31 | 3.94 | 211 namespaces, 20005 services, 20003 endpointslices, 300003 pods |"},
		{"handover", "each as fast as it goes for 8 s"},
		{"handover row", "| ./coredns | TCP pipelined | 292 | 2798 | 6 | 0 |"},
		{"lowrate", "3 rounds of 10 s per server and rate"},
		{"lowrate row", "| central | upstream kubernetes | 2000 | 2000 | 26 | 129.50 | 129.5 · 129.5 · 129.5 | 0.75 | 0.75 · 0.75 · 0.75 | 0 |"},
		{"lowrate row", "| node (hits) | CoreDNS cache + forward | 10000 | 10000 | 40 | 40.00 | 40.0 · 40.0 · 40.0 | 0.73 | 0.73 · 0.73 · 0.73 | 0 |"},
		{"lowrate ours", "| node (hits) | nodecache | 2000 | 2000 | 17 | 86.67 | 86.7 · 86.7 · 86.7 | — | — | 0 |"},
		{"chain", "kube-apiserver v1.37.1 (100 Services, half headless, 5 endpoints each)"},
		{"chain hits", "| cache + forward → kubernetes | 41210 (42627, 43976, 37026) | 0.191 / 6.213 | 97 | 23.70 | 46 | 0 | NOERROR:100.00% | 237 | 2.43-2.49 | 2.07 |"},
		{"chain central", "| nodecache → k8sdiscovery | 0.01 | 34.95 |"},
		{"chain central", "| cache + forward → kubernetes | 0.03 | 36.25 |"},
		{"profiles", "#### miss.ours\n\n```\nUnder dnsperf at 19257 QPS (load average 3.61).\n      flat  flat%"},
		{"profiles in file-name order", "#### memory.ours-verified\n\n```\nShowing nodes accounting for 57.07MB, 100% of 57.07MB total\n```\n\n#### memory.ours\n"},
	} {
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: RESULTS.md lacks\n%s", tc.section, tc.want)
		}
	}
	for _, h := range []string{"### 1. ", "### 2. ", "### 3. ", "### 4. ", "### 5. ", "### Handover at full load", "### 7. ", "### 8. ", "#### Hits", "#### Misses", "## Profiles"} {
		if n := strings.Count(text, "\n"+h); n != 1 {
			t.Errorf("%q appears %d times", h, n)
		}
	}
	if strings.Contains(text, "<no value>") || strings.Contains(text, "\n\n\n") {
		t.Errorf("RESULTS.md has a missing value or a double blank line:\n%s", text)
	}
}

// A run of some scenarios shows their sections only, and a failed run says so.
func TestReportPartialRun(t *testing.T) {
	r := fixture()
	r.Scenarios = r.Scenarios[1:2]
	r.Search, r.Memory, r.MemWorld, r.Handover, r.FixedRate, r.Profiles = nil, nil, nil, nil, nil, nil
	r.Run.Status = "failed after 3 min: scenario miss: boom"
	text, _ := rendered(t, r)
	if !strings.Contains(text, "**This run did not finish: failed after 3 min: scenario miss: boom.**") {
		t.Error("no failure line")
	}
	for _, absent := range []string{"### 1. ", "### 3. ", "### 5. ", "| target | measured |", "## Profiles", "memory.png"} {
		if strings.Contains(text, absent) {
			t.Errorf("a hit-only run shows %q", absent)
		}
	}
	if !strings.Contains(text, "| 2. node-cache hits | nodecache vs Go ceiling | 89050 / 52804 | **1.69** |") {
		t.Error("the hit rows of the summary are missing")
	}
}

// Rows are found by what they are, not where they are: the search rows in either order give the
// same summary, and a chain run whose misses did not run still shows its hits and the central
// role's CPU for them.
func TestReportFindsRowsByName(t *testing.T) {
	r := fixture()
	summary := func(text string) string {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "| 4. one query per family") {
				return l
			}
		}
		return ""
	}
	want, _ := rendered(t, r)
	r.Search[0], r.Search[1] = r.Search[1], r.Search[0]
	if got, _ := rendered(t, r); summary(got) == "" || summary(got) != summary(want) {
		t.Errorf("the search rows swapped: summary %q, was %q", summary(got), summary(want))
	}
	var kept []Scenario
	for _, sc := range r.Scenarios {
		if sc.ID != "chainmiss" {
			kept = append(kept, sc)
		}
	}
	r.Scenarios = kept
	text, _ := rendered(t, r)
	hit := r.scenario("chainhit")
	if hit == nil || !strings.Contains(text, "### 8. The whole chain as deployed") || !strings.Contains(text, "#### Hits") || strings.Contains(text, "#### Misses") {
		t.Fatal("a chain run without misses: no section 8 with hits only")
	}
	for _, s := range hit.Servers {
		row := fmt.Sprintf("| %s | %.2f | — |", s.Label, s.CentralCPU())
		if !strings.Contains(text, row) {
			t.Errorf("no row %q", row)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	want := fixture()
	if err := want.write(path); err != nil {
		t.Fatal(err)
	}
	got, err := readResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Scenarios[0].Servers[0].Runs[2].QPS != 90359 || got.Memory[0].Relist[2].RSS != 104 || got.Handover.Rows[5].Lost != 6 ||
		got.Scenarios[4].Servers[1].Runs[0].CentralCPUPerQuery != 36.25 || got.MemWorld.Loaded.Phases[1].N != 150000 ||
		got.Search[1].Expansions != 2002 || got.Run.Machine.UnboundVersion != "1.17.1" || len(got.FixedRate) != 8 {
		t.Errorf("figures lost in the round trip: %+v", got)
	}
}

func TestRatios(t *testing.T) {
	for _, tc := range []struct {
		a, b float64
		want string
	}{{85993, 19695, "4.37"}, {1, 0, "n/a"}, {158, 158, "1.00"}, {35, 102, "0.34"}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
	if got := fixture().Scenarios[0].Servers[0]; got.MeanQPS < 85992.6 || got.MeanQPS > 85992.7 || got.MeanCPUu != 10.02 {
		t.Errorf("means: %v q/s, %v µs", got.MeanQPS, got.MeanCPUu)
	}
}

func TestPlotsWritten(t *testing.T) {
	_, plots := rendered(t, fixture())
	for _, name := range []string{"qps", "cpu", "latency", "memory", "relist", "fixed-rate-cpu"} {
		f, err := os.Open(filepath.Join(plots, name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s.png: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 300 {
			t.Errorf("%s.png is %dx%d", name, b.Dx(), b.Dy())
		}
	}
}

// A handover that lost queries over TCP is not met, and its losses are counted with UDP's.
func TestReportHandoverLoss(t *testing.T) {
	r := fixture()
	r.Handover.Rows[1].Lost, r.Handover.Rows[4].Servfail = 2, 1
	text, _ := rendered(t, r)
	want := "| 2 lost, 1 SERVFAIL of 455276 sent; UDP at 15408 q/s, TCP at 3054 q/s (mean of 3 rounds); TCP pipelined on long-lived connections: 6 lost of 72987 (a known limit) | not met |"
	if !strings.Contains(text, want) {
		t.Errorf("RESULTS.md lacks\n%s", want)
	}
}

// The committed bench/results.json renders as the committed bench/RESULTS.md: the run writes
// both, so a difference is a template that no longer says what the last run said.
func TestCommittedResultsRender(t *testing.T) {
	r, err := readResults("../results.json")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := rendered(t, r)
	want, err := os.ReadFile("../RESULTS.md")
	if err != nil {
		t.Fatal(err)
	}
	if text != string(want) {
		got, wantLines := strings.Split(text, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(got), len(wantLines)) {
			if got[i] != wantLines[i] {
				t.Fatalf("line %d differs:\n got %s\nwant %s", i+1, got[i], wantLines[i])
			}
		}
		t.Fatalf("%d lines rendered, %d committed", len(got), len(wantLines))
	}
}

func TestNodecacheABTable(t *testing.T) {
	runs := func(q ...float64) []Throughput {
		var out []Throughput
		for _, x := range q {
			out = append(out, Throughput{QPS: x, Lost: 1})
		}
		return out
	}
	var b strings.Builder
	err := nodecacheABTemplate.Execute(&b, NodecacheAB{Seconds: 10, Cores: 2, Kernel: "6.18", Load: "1.00 1.00 1.00", Scenarios: []NodecacheABRow{
		{Scenario: "hit", Ours: runs(121495, 118245), Upstream: runs(59485, 61776)},
		{Scenario: "miss", Ours: runs(17264, 17071), Upstream: runs(16827, 14569)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| cache hit (UDP) | 119870 (121495, 118245) | 60631 (59485, 61776) | 1.98 | 2 / 2 |",
		"| cluster-zone miss (upstream over TCP) | 17168 (17264, 17071) | 15698 (16827, 14569) | 1.09 | 2 / 2 |",
		"10s per run, A/B/A/B; 2 cores, 6.18; load average 1.00 1.00 1.00.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %s:\n%s", want, b.String())
		}
	}
}

// The fixed-rate rows give each run's CPU per query and ours ÷ theirs round by round, round i
// of ours against round i of theirs; the lowrate scenario's own rounds are named when a run had them.
func TestFixedRowsByRound(t *testing.T) {
	runs := func(us ...float64) []Throughput {
		var ts []Throughput
		for _, u := range us {
			ts = append(ts, Throughput{QPS: 2000, CPUPerQuery: u})
		}
		return ts
	}
	ours := FixedRate{Role: "node", Server: "ours", Ours: true, Rate: 2000, Runs: runs(50, 60, 45)}
	theirs := FixedRate{Role: "node", Server: "cache", Rate: 2000, Runs: runs(100, 100, 90)}
	ours.summarize()
	theirs.summarize()
	r := &Results{Run: RunInfo{Rounds: 3, LowRounds: 5, LowRates: []int{2000}}, FixedRate: []FixedRate{ours, theirs}}
	rows := newView(r, "results.json", nil).FixedRows("node")
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	if rows[0].PerRun != "50.0 · 60.0 · 45.0" || rows[0].ByRound != "—" {
		t.Errorf("ours: each run %q, by round %q", rows[0].PerRun, rows[0].ByRound)
	}
	if rows[1].PerRun != "100.0 · 100.0 · 90.0" || rows[1].ByRound != "0.50 · 0.60 · 0.50" || rows[1].VsOurs != "0.53" {
		t.Errorf("theirs: each run %q, by round %q, of the means %q", rows[1].PerRun, rows[1].ByRound, rows[1].VsOurs)
	}
	md, err := renderResults(r, "results.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "5 rounds of") {
		t.Errorf("the lowrate section does not say its 5 rounds:\n%s", md)
	}
}

// The chain's text says the node role's upstream lines the run recorded, and what older runs
// used when none are recorded.
func TestChainUpstreamText(t *testing.T) {
	r := fixture()
	md, err := renderResults(r, "results.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "Ours: nodecache (`upstream tcp`, a TCP connection per") {
		t.Errorf("a run without the lines recorded: the text of upstream tcp missing")
	}
	for i := range r.Scenarios {
		if r.Scenarios[i].ID == "chainmiss" {
			r.Scenarios[i].NodeUpstream = []string{"pipelined 169.254.77.2:5353", "tcp 169.254.77.2:53"}
		}
	}
	if md, err = renderResults(r, "results.json", nil); err != nil {
		t.Fatal(err)
	}
	if want := "`upstream pipelined 169.254.77.2:5353` then `upstream tcp 169.254.77.2:53` (pipelined to the central role's"; !strings.Contains(string(md), want) {
		t.Errorf("the recorded lines: want %q in the chain's text", want)
	}
}
