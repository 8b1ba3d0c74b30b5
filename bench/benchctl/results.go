package main

// bench/results.json: every figure of a run, typed and named, written by `benchctl run`, read by
// `benchctl report` (RESULTS.md, report.go) and `benchctl plot`.

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Results is bench/results.json.
type Results struct {
	Run       RunInfo     `json:"run"`
	Scenarios []Scenario  `json:"scenarios"`
	Search    []Search    `json:"search,omitempty"`
	Memory    []Memory    `json:"memory,omitempty"`
	MemWorld  *MemWorld   `json:"memory_world,omitempty"`
	Handover  *Handover   `json:"handover,omitempty"`
	FixedRate []FixedRate `json:"fixed_rate,omitempty"`
	Profiles  []Profile   `json:"profiles,omitempty"`
}

// RunInfo is when, where and with which knobs the run was made.
type RunInfo struct {
	Date    string `json:"date"`
	Commit  string `json:"commit"`
	Minutes int    `json:"minutes"`
	// Status is empty for a run that finished, else what stopped it.
	Status string `json:"status,omitempty"`
	Rounds int    `json:"rounds"`
	// Seconds is RUN_SECONDS, the length of a throughput run.
	Seconds        int      `json:"seconds_per_run"`
	Outstanding    int      `json:"outstanding"`
	LatencySeconds int      `json:"latency_seconds"`
	Scenarios      []string `json:"scenarios"`
	IndexServices  int      `json:"index_services"`
	MissServices   int      `json:"miss_services"`
	MemServices    int      `json:"mem_services"`
	MemPods        int      `json:"mem_pods"`
	MemSettle      int      `json:"mem_settle_s"`
	RelistWatch    int      `json:"relist_watch_s"`
	LowRates       []int    `json:"low_rates"`
	// LowRounds is the lowrate scenario's rounds (0 in runs before it had its own: Rounds).
	LowRounds int     `json:"lowrate_rounds,omitempty"`
	ServerCPU int     `json:"server_cpu"`
	LoadCPU   int     `json:"load_cpu"`
	Machine   Machine `json:"machine"`
	// LoadStart and LoadEnd are /proc/loadavg's three averages at the start and the end.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// Machine is what the run ran on.
type Machine struct {
	Cores          int    `json:"cores"`
	CPUModel       string `json:"cpu_model"`
	MemGiB         int    `json:"mem_gib"`
	Kernel         string `json:"kernel"`
	DnsperfVersion string `json:"dnsperf_version"`
	UnboundVersion string `json:"unbound_version,omitempty"`
	// KubeVersion and EtcdVersion are the control plane's (kube-apiserver and etcd --version).
	KubeVersion string `json:"kube_version,omitempty"`
	EtcdVersion string `json:"etcd_version,omitempty"`
}

// Scenario is one A/B comparison: the servers asked the same queries, ours first.
type Scenario struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	LatencyRate int      `json:"latency_rate_qps"` // the fixed rate of the latency runs
	Servers     []Server `json:"servers"`
	// Loaded is the control plane's objects, when the scenario has one.
	Loaded *LoadReport `json:"loaded,omitempty"`
	// QueryLines is the length of the query file, when every run asks the same one.
	QueryLines int `json:"query_lines,omitempty"`
	// NodeUpstream is our node role's upstream lines, where the scenario says them (the chain;
	// empty in runs before it did, which used "tcp" to the central role's port 53).
	NodeUpstream []string `json:"node_upstream,omitempty"`
}

// Server is one server's runs in a scenario.
type Server struct {
	Name     string       `json:"name"`
	Label    string       `json:"label"`
	Ours     bool         `json:"ours"`
	Runs     []Throughput `json:"runs"`
	P50ms    float64      `json:"p50_ms"`
	P99ms    float64      `json:"p99_ms"`
	MaxMs    float64      `json:"max_ms"`
	Answered int          `json:"latency_answered"` // queries the latency figures are from
	PeakRSS  []int        `json:"peak_rss_mib"`     // per round
	MeanQPS  float64      `json:"mean_qps"`
	MeanCPUu float64      `json:"mean_cpu_us_per_query"`
}

// Throughput is one dnsperf run and the server's CPU over it.
type Throughput struct {
	QPS           float64 `json:"qps"`
	Completed     int     `json:"completed,omitempty"`
	Lost          int     `json:"lost"`
	CPUPercent    float64 `json:"cpu_percent"`
	CPUPerQuery   float64 `json:"cpu_us_per_query"`
	Rcodes        string  `json:"rcodes"` // "NOERROR:100.00%", as dnsperf counts them
	ResponseBytes int     `json:"response_bytes"`
	Load          float64 `json:"load_avg_1m"`
	// CentralCPUPerQuery is the central role's CPU per answered query (scenario chain).
	CentralCPUPerQuery float64 `json:"central_cpu_us_per_query,omitempty"`
}

// LoadReport is what `load` created in the apiserver.
type LoadReport struct {
	Phases    []Phase `json:"phases"`
	Services  int     `json:"services"`
	Pods      int     `json:"pods"`
	Endpoints int     `json:"endpoints"`
	Seconds   float64 `json:"seconds"`
}

// Phase is one kind of object created.
type Phase struct {
	Name    string  `json:"name"`
	N       int     `json:"n"`
	Seconds float64 `json:"seconds"`
}

// Search is one row of scenario search: the central role with or without searchpath.
type Search struct {
	Mode             string  `json:"mode"` // "without" or "with"
	QueriesPerLookup float64 `json:"queries_per_lookup"`
	CentralRequests  int     `json:"central_requests"`
	UpstreamRequests int     `json:"upstream_requests"`
	OneAnswered      int     `json:"one_answered"`
	OneLookups       int     `json:"one_lookups"`
	ManyQueries      float64 `json:"many_queries_per_lookup"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	ManyAnswered     int     `json:"many_answered"`
	ManyLookups      int     `json:"many_lookups"`
	Expansions       int     `json:"searchpath_expansions"`
}

// MemWorld is the memory scenario's objects.
type MemWorld struct {
	Loaded      LoadReport `json:"loaded"`
	LoadSeconds int        `json:"load_seconds"`
}

// Memory is one DNS's memory at scale.
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
	// APIServerReady is how long the restarted apiserver took to be ready; Watched the seconds
	// from its restart to the end of the relist window.
	APIServerReady float64 `json:"apiserver_ready_s"`
	Watched        float64 `json:"relist_watched_s"`
	// WatchEvents is what the restarted apiserver sent on watches, per resource.
	WatchEvents []ResourceCount `json:"watch_events,omitempty"`
	// Relist is the relist timeline: RSS and heap every 100 ms from just before the API server
	// was stopped.
	Relist []Sample `json:"relist_samples,omitempty"`
}

// ResourceCount is a count for one Kubernetes resource.
type ResourceCount struct {
	Resource string `json:"resource"`
	Count    int    `json:"count"`
}

// Sample is one point of a timeline: seconds since it began, RSS and Go heap in use (MiB).
type Sample struct {
	T    float64 `json:"t_s"`
	RSS  float64 `json:"rss_mib"`
	Heap float64 `json:"heap_mib"`
}

// Handover is the handover scenario.
type Handover struct {
	Date        string        `json:"date"`
	Commit      string        `json:"commit"`
	LoadSeconds int           `json:"load_seconds"`
	SlowDelay   string        `json:"slow_delay"`
	Cores       int           `json:"cores"`
	Rows        []HandoverRow `json:"rows"`
}

// HandoverRow is one client's figures in one round.
type HandoverRow struct {
	Binary   string `json:"binary"`
	Clients  string `json:"clients"` // "UDP", "TCP", "TCP pipelined"
	QPS      int    `json:"qps"`
	Sent     int    `json:"sent"`
	Lost     int    `json:"lost"`
	Servfail int    `json:"servfail"`
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

// Profile is the top of one pprof profile.
type Profile struct {
	Name    string   `json:"name"`    // "index.ours", "memory.upstream"
	Summary []string `json:"summary"` // "Under dnsperf at ...", "Duration: ...", "Showing nodes ..."
	Top     []string `json:"top"`     // the table from its header line
}

func readResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func (r *Results) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// scenario is the scenario with this id, or nil.
func (r *Results) scenario(id string) *Scenario {
	for i := range r.Scenarios {
		if r.Scenarios[i].ID == id {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// search is the search scenario's row of a mode ("with" or "without" searchpath), or nil.
func (r *Results) search(mode string) *Search {
	for i := range r.Search {
		if r.Search[i].Mode == mode {
			return &r.Search[i]
		}
	}
	return nil
}

// server is the scenario's server of this name, or nil.
func (s *Scenario) server(name string) *Server {
	if s == nil {
		return nil
	}
	for i := range s.Servers {
		if s.Servers[i].Name == name {
			return &s.Servers[i]
		}
	}
	return nil
}

// memory is the memory run of this name, or nil.
func (r *Results) memory(name string) *Memory {
	for i := range r.Memory {
		if r.Memory[i].Name == name {
			return &r.Memory[i]
		}
	}
	return nil
}

// summarize fills the means from the runs.
func (s *Server) summarize() {
	s.MeanQPS, s.MeanCPUu = 0, 0
	for _, t := range s.Runs {
		s.MeanQPS += t.QPS / float64(len(s.Runs))
		s.MeanCPUu += t.CPUPerQuery / float64(len(s.Runs))
	}
}

func (f *FixedRate) summarize() {
	f.MeanCPUu, f.MeanCPU = 0, 0
	for _, t := range f.Runs {
		f.MeanCPUu += t.CPUPerQuery / float64(len(f.Runs))
		f.MeanCPU += t.CPUPercent / float64(len(f.Runs))
	}
}

// mean of one figure of the runs.
func mean(runs []Throughput, figure func(Throughput) float64) float64 {
	if len(runs) == 0 {
		return 0
	}
	var s float64
	for _, t := range runs {
		s += figure(t)
	}
	return s / float64(len(runs))
}

// rcodeSet is the distinct rcode strings of the runs, sorted, space separated.
func rcodeSet(runs []Throughput) string {
	var out []string
	for _, t := range runs {
		if !slices.Contains(out, t.Rcodes) {
			out = append(out, t.Rcodes)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
