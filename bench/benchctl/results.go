package main

// benchctl results RUN-DIR OUT.json: the figures of a bench run (bench/out/run) as JSON with named
// fields, read by `benchctl plot` and kept beside RESULTS.md. The shell side writes one file per
// measurement; this is the one place that knows their columns.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Results is bench/results.json.
type Results struct {
	Run       RunInfo     `json:"run"`
	Scenarios []Scenario  `json:"scenarios"`
	Memory    []Memory    `json:"memory,omitempty"`
	FixedRate []FixedRate `json:"fixed_rate,omitempty"`
}

// FixedRate is one server's runs at one fixed rate (scenario lowrate).
type FixedRate struct {
	Role     string       `json:"role"` // "central" or "node"
	Server   string       `json:"server"`
	Label    string       `json:"label"`
	Ours     bool         `json:"ours"`
	Rate     int          `json:"rate_qps"`
	Runs     []Throughput `json:"runs"`
	MeanCPUu float64      `json:"mean_cpu_us_per_query"`
	MeanCPU  float64      `json:"mean_cpu_percent"`
}

// RunInfo is when and how the run was made (bench/out/run/meta).
type RunInfo struct {
	Date    string `json:"date"`
	Commit  string `json:"commit"`
	Minutes int    `json:"minutes"`
	Rounds  int    `json:"rounds"`
	Seconds int    `json:"seconds_per_run"`
}

// Scenario is one A/B comparison: the servers asked the same queries, ours first.
type Scenario struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	LatencyRate int      `json:"latency_rate_qps"` // the fixed rate of the latency runs
	Servers     []Server `json:"servers"`
}

// Server is one server's runs in a scenario.
type Server struct {
	Name     string       `json:"name"`
	Label    string       `json:"label"`
	Ours     bool         `json:"ours"`
	Runs     []Throughput `json:"runs"`
	P50ms    float64      `json:"p50_ms"`
	P99ms    float64      `json:"p99_ms"`
	PeakRSS  []int        `json:"peak_rss_mib"` // per round
	MeanQPS  float64      `json:"mean_qps"`
	MeanCPUu float64      `json:"mean_cpu_us_per_query"`
}

// Throughput is one dnsperf throughput run.
type Throughput struct {
	QPS         float64 `json:"qps"`
	Lost        int     `json:"lost"`
	CPUPercent  float64 `json:"cpu_percent"`
	CPUPerQuery float64 `json:"cpu_us_per_query"`
	Rcodes      string  `json:"rcodes"`
	Load        float64 `json:"load_avg_1m"`
}

// Memory is one DNS's memory at scale (section 5 of RESULTS.md).
type Memory struct {
	Name           string  `json:"name"`
	Label          string  `json:"label"`
	Ours           bool    `json:"ours"`
	SyncSeconds    float64 `json:"first_sync_s"`
	SteadyRSS      float64 `json:"steady_rss_mib"`
	SteadyHeap     float64 `json:"steady_heap_mib"`
	RelistPeakRSS  float64 `json:"relist_peak_rss_mib"`
	RelistPeakHeap float64 `json:"relist_peak_heap_mib"`
	WindowPeakRSS  float64 `json:"window_peak_rss_mib"`
	WindowPeakHeap float64 `json:"window_peak_heap_mib"`
	// Relist is the relist timeline: RSS and heap every 100 ms from just before the API server
	// was stopped (memory.<name>.relist.samples; absent from runs before it was written).
	Relist []Sample `json:"relist_samples,omitempty"`
}

// Sample is one point of a timeline: seconds since it began, RSS and Go heap in use (MiB).
type Sample struct {
	T    float64 `json:"t_s"`
	RSS  float64 `json:"rss_mib"`
	Heap float64 `json:"heap_mib"`
}

// readSamples reads `benchctl mem -samples` output: a line per sample, "t rss heap".
func readSamples(path string) ([]Sample, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Sample
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var x Sample
		if _, err := fmt.Sscan(line, &x.T, &x.RSS, &x.Heap); err != nil {
			return nil, fmt.Errorf("%s: %q: %v", path, line, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// The scenarios of bench/run.sh and their servers, in the order of RESULTS.md.
var benchScenarios = []struct {
	id, title string
	servers   [][2]string // name, label; the first is ours
}{
	{"index", "1. cluster names", [][2]string{{"ours", "k8sdiscovery"}, {"upstream", "upstream kubernetes"}}},
	{"hit", "2. node-cache hits", [][2]string{{"ours", "nodecache"}, {"unbound", "Unbound"}, {"cache", "CoreDNS cache"}, {"goceiling", "Go ceiling"}}},
	{"miss", "3. cluster misses, TCP", [][2]string{{"ours", "nodecache"}, {"pipelined", "nodecache pipelined"}, {"forward", "forward force_tcp"}}},
	{"chainhit", "8. whole chain, hits", [][2]string{{"ours", "nodecache → k8sdiscovery"}, {"upstream", "cache+forward → kubernetes"}}},
	{"chainmiss", "8. whole chain, misses", [][2]string{{"ours", "nodecache → k8sdiscovery"}, {"upstream", "cache+forward → kubernetes"}}},
}

var memoryRuns = [][2]string{
	{"ours", "k8sdiscovery"}, {"upstream", "upstream kubernetes"},
	{"ours-verified", "k8sdiscovery, pods verified"}, {"upstream-verified", "upstream kubernetes, pods verified"},
}

func results(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: benchctl results RUN-DIR OUT.json")
	}
	dir, out := args[0], args[1]
	var res Results
	meta, err := readMeta(filepath.Join(dir, "meta"))
	if err != nil {
		return err
	}
	res.Run = RunInfo{Date: meta["RUN_DATE"], Commit: meta["RUN_COMMIT"], Minutes: atoi(meta["RUN_MINUTES"]),
		Rounds: atoi(meta["ROUNDS"]), Seconds: atoi(meta["RUN_SECONDS"])}
	for _, sc := range benchScenarios {
		if _, err := os.Stat(filepath.Join(dir, sc.id+".ours.runs")); err != nil {
			continue // not in this run
		}
		s := Scenario{ID: sc.id, Title: sc.title}
		if b, err := os.ReadFile(filepath.Join(dir, sc.id+".latency_rate")); err == nil {
			s.LatencyRate = atoi(strings.TrimSpace(string(b)))
		}
		for i, srv := range sc.servers {
			v, err := readServer(dir, sc.id, srv[0])
			if os.IsNotExist(err) && i > 0 {
				continue // a server added later than the run
			}
			if err != nil {
				return err
			}
			v.Label, v.Ours = srv[1], i == 0
			s.Servers = append(s.Servers, v)
		}
		res.Scenarios = append(res.Scenarios, s)
	}
	for _, rate := range fixedRates(dir) {
		for _, sc := range []struct{ scenario, role string }{{"index", "central"}, {"hit", "node"}} {
			for _, b := range benchScenarios {
				if b.id != sc.scenario {
					continue
				}
				for i, srv := range b.servers {
					runs, err := readRuns(filepath.Join(dir, sc.scenario+"."+srv[0]+".q"+rate+".runs"))
					if os.IsNotExist(err) {
						continue
					}
					if err != nil {
						return err
					}
					f := FixedRate{Role: sc.role, Server: srv[0], Label: srv[1], Ours: i == 0, Rate: atoi(rate), Runs: runs}
					for _, r := range runs {
						f.MeanCPUu += r.CPUPerQuery / float64(len(runs))
						f.MeanCPU += r.CPUPercent / float64(len(runs))
					}
					res.FixedRate = append(res.FixedRate, f)
				}
			}
		}
	}
	for _, m := range memoryRuns {
		f, err := fields(filepath.Join(dir, "memory."+m[0]))
		if err != nil {
			continue
		}
		if len(f) < 17 {
			return fmt.Errorf("memory.%s: %d fields, want 17", m[0], len(f))
		}
		// Columns as scenario_memory writes them: 1 sync, 2 steady RSS, 4 steady heap, 6 peak RSS,
		// 10 peak heap, 13 window peak RSS, 17 window peak heap.
		mem := Memory{Name: m[0], Label: m[1], Ours: strings.HasPrefix(m[0], "ours"),
			SyncSeconds: f[0], SteadyRSS: f[1], SteadyHeap: f[3], RelistPeakRSS: f[5], RelistPeakHeap: f[9],
			WindowPeakRSS: f[12], WindowPeakHeap: f[16]}
		if samples, err := readSamples(filepath.Join(dir, "memory."+m[0]+".relist.samples")); err == nil {
			mem.Relist = samples
		} else if !os.IsNotExist(err) {
			return err
		}
		res.Memory = append(res.Memory, mem)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

// readServer reads <scenario>.<name>.runs, .lat (benchctl latency: p50 p99 max n) and .rss (one
// peak per round).
func readServer(dir, scenario, name string) (Server, error) {
	base := filepath.Join(dir, scenario+"."+name)
	s := Server{Name: name}
	runs, err := readRuns(base + ".runs")
	if err != nil {
		return s, err
	}
	for _, t := range runs {
		s.Runs = append(s.Runs, t)
		s.MeanQPS += t.QPS / float64(len(runs))
		s.MeanCPUu += t.CPUPerQuery / float64(len(runs))
	}
	if lat, err := fields(base + ".lat"); err == nil && len(lat) >= 2 {
		s.P50ms, s.P99ms = lat[0], lat[1]
	}
	rss, _ := lines(base + ".rss")
	for _, l := range rss {
		s.PeakRSS = append(s.PeakRSS, atoi(l))
	}
	return s, nil
}

// fixedRates are the rates of the run's fixed-rate files (<scenario>.<server>.q<RATE>.runs),
// ascending.
func fixedRates(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.q*.runs"))
	seen := map[int]bool{}
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".runs")
		if i := strings.LastIndex(base, ".q"); i >= 0 {
			if n, err := strconv.Atoi(base[i+2:]); err == nil && n > 0 {
				seen[n] = true
			}
		}
	}
	var rates []int
	for n := range seen {
		rates = append(rates, n)
	}
	slices.Sort(rates)
	out := make([]string, len(rates))
	for i, n := range rates {
		out[i] = strconv.Itoa(n)
	}
	return out
}

// readRuns reads a .runs file (dnsperf_run: qps lost cpu% cpu-µs/query rcodes size load).
func readRuns(path string) ([]Throughput, error) {
	ls, err := lines(path)
	if err != nil {
		return nil, err
	}
	var out []Throughput
	for _, l := range ls {
		f := strings.Fields(l)
		if len(f) < 7 {
			return nil, fmt.Errorf("%s: %q has %d fields, want 7", path, l, len(f))
		}
		out = append(out, Throughput{QPS: atof(f[0]), Lost: atoi(f[1]), CPUPercent: atof(f[2]), CPUPerQuery: atof(f[3]), Rcodes: f[4], Load: atof(f[6])})
	}
	return out, nil
}

// readMeta reads the `declare -- NAME="value"` lines save_meta writes.
func readMeta(path string) (map[string]string, error) {
	ls, err := lines(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range ls {
		l = strings.TrimPrefix(l, "declare -- ")
		if k, v, ok := strings.Cut(l, "="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			out[k] = v
		}
	}
	return out, nil
}

func lines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

func fields(path string) ([]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []float64
	for _, f := range strings.Fields(string(b)) {
		out = append(out, atof(f))
	}
	return out, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(s))
	return n
}

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f
}
