package main

// benchctl report [RESULTS.json [RESULTS.md]]: RESULTS.md and its plots from results.json, through
// the template results.md.tmpl. `benchctl run` ends with the same.

import (
	"bytes"
	_ "embed"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
)

//go:embed results.md.tmpl
var resultsTemplate string

func report(args []string) error {
	js, md := "bench/results.json", "bench/RESULTS.md"
	switch len(args) {
	case 0:
	case 1:
		js = args[0]
	case 2:
		js, md = args[0], args[1]
	default:
		return fmt.Errorf("usage: benchctl report [RESULTS.json [RESULTS.md]]")
	}
	return renderAll(js, md)
}

// renderAll draws the plots of js beside md and writes md.
func renderAll(js, md string) error {
	res, err := readResults(js)
	if err != nil {
		return err
	}
	_, plotDir, plotRel := resultsPaths(md)
	old, _ := filepath.Glob(filepath.Join(plotDir, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := drawPlots(res, plotDir); err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	var plots []string
	for _, p := range []string{"qps", "cpu", "latency", "memory", "relist", "fixed-rate-cpu"} {
		if _, err := os.Stat(filepath.Join(plotDir, p+".png")); err == nil {
			plots = append(plots, plotRel+"/"+p+".png")
		}
	}
	text, err := renderResults(res, filepath.Base(js), plots)
	if err != nil {
		return err
	}
	return os.WriteFile(md, text, 0o644)
}

// renderResults is RESULTS.md.
func renderResults(res *Results, jsonName string, plots []string) ([]byte, error) {
	t, err := template.New("results.md").Funcs(template.FuncMap{
		"f0":     func(x float64) string { return fmt.Sprintf("%.0f", x) },
		"f1":     func(x float64) string { return fmt.Sprintf("%.1f", x) },
		"f2":     func(x float64) string { return fmt.Sprintf("%.2f", x) },
		"f3":     func(x float64) string { return fmt.Sprintf("%.3f", x) },
		"ratio":  ratio,
		"add":    func(a, b int) int { return a + b },
		"div":    func(a, b int) int { return a / b },
		"base":   func(p string) string { return strings.TrimSuffix(filepath.Base(p), ".png") },
		"plural": plural,
	}).Parse(resultsTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, newView(res, jsonName, plots))
	return buf.Bytes(), err
}

// ratio is a ÷ b with two decimals ("n/a" when b is 0).
func ratio(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// ratioOf is a ÷ b as a number, NaN when b is 0.
func ratioOf(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return math.Round(a/b*100) / 100
}

// The tables show means rounded, and their ratios are of the rounded figures.
func r0(x float64) float64 { return math.Round(x) }
func r2(x float64) float64 { return math.Round(x*100) / 100 }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// view is what the template reads: the results and the rows computed from them.
type view struct {
	*Results
	JSONName  string
	Plots     []string
	Summary   []summaryRow
	Targets   []string
	Index     *Scenario
	Hit, Miss *Scenario
	ChainHit  *Scenario
	ChainMiss *Scenario
	Pipelined bool
	Rates     []int
	Profiles  []Profile
}

func newView(res *Results, jsonName string, plots []string) view {
	v := view{Results: res, JSONName: jsonName, Plots: plots,
		Index: res.scenario("index"), Hit: res.scenario("hit"), Miss: res.scenario("miss"),
		ChainHit: res.scenario("chainhit"), ChainMiss: res.scenario("chainmiss")}
	v.Pipelined = v.Miss.server("pipelined") != nil
	if res.MemWorld == nil {
		// A run whose memory figures came without their world (results.json of the shell harness).
		w := *res
		w.MemWorld = &MemWorld{}
		v.Results = &w
	}
	for _, f := range res.FixedRate {
		if !slices.Contains(v.Rates, f.Rate) {
			v.Rates = append(v.Rates, f.Rate)
		}
	}
	slices.Sort(v.Rates)
	// The profiles in the order of their file names (profile.<name>.txt), as before.
	v.Profiles = slices.Clone(res.Profiles)
	slices.SortFunc(v.Profiles, func(a, b Profile) int { return strings.Compare(a.Name+".txt", b.Name+".txt") })
	v.Summary = summaryRows(res)
	v.Targets = targetRows(res)
	return v
}

// summaryRow is one comparison of the summary table. The target is judged on QPS; "by CPU" is
// the same ratio from CPU time per answered query, which other processes disturb less than QPS.
type summaryRow struct {
	Label, Ours, Theirs string
	QO, QT, CO, CT      float64
	Ratio, ByCPU        string
	LatOurs, LatTheirs  string
	RSSOurs, RSSTheirs  int
	Target, Met         string
}

func summaryRows(res *Results) []summaryRow {
	var rows []summaryRow
	add := func(label, id, ours, theirs, oursLabel, theirsLabel, target string, threshold float64) {
		sc := res.scenario(id)
		o, t := sc.server(ours), sc.server(theirs)
		if o == nil || t == nil {
			return
		}
		r := summaryRow{Label: label, Ours: oursLabel, Theirs: theirsLabel,
			QO: r0(o.MeanQPS), QT: r0(t.MeanQPS), CO: r2(o.MeanCPUu), CT: r2(t.MeanCPUu),
			LatOurs: fmt.Sprintf("%.3f / %.3f", o.P50ms, o.P99ms), LatTheirs: fmt.Sprintf("%.3f / %.3f", t.P50ms, t.P99ms),
			RSSOurs: o.maxRSS(), RSSTheirs: t.maxRSS(), Target: target}
		r.Ratio, r.ByCPU = ratio(r.QO, r.QT), ratio(r.CT, r.CO)
		if threshold > 0 {
			r.Met = met(ratioOf(r.QO, r.QT) >= threshold)
		}
		rows = append(rows, r)
	}
	add("1. cluster names", "index", "ours", "upstream", "k8sdiscovery", "upstream kubernetes", "≥ 2.5×", 2.5)
	add("2. node-cache hits", "hit", "ours", "unbound", "nodecache", "Unbound", "≥ 1× Unbound", 1.0)
	add("2. node-cache hits", "hit", "ours", "cache", "nodecache", "CoreDNS cache", "", 0)
	add("2. node-cache hits", "hit", "ours", "goceiling", "nodecache", "Go ceiling", "", 0)
	add("3. cluster misses, TCP", "miss", "ours", "forward", "nodecache", "forward force_tcp", "", 0)
	add("3. cluster misses, TCP", "miss", "pipelined", "forward", "nodecache pipelined", "forward force_tcp", "", 0)
	add("3. cluster misses, TCP", "miss", "pipelined", "ours", "nodecache pipelined", "nodecache one query per connection", "", 0)
	add("8. whole chain, hits", "chainhit", "ours", "upstream", "nodecache → k8sdiscovery", "cache+forward → kubernetes", "", 0)
	add("8. whole chain, misses", "chainmiss", "ours", "upstream", "nodecache → k8sdiscovery", "cache+forward → kubernetes", "", 0)
	return rows
}

// targetRows are the rows of the targets table: "| target | measured | met |".
func targetRows(res *Results) []string {
	var rows []string
	row := func(format string, args ...any) { rows = append(rows, fmt.Sprintf(format, args...)) }
	if o, h := res.scenario("index").server("ours"), res.scenario("hit").server("ours"); o != nil && h != nil {
		ci, ch := r2(o.MeanCPUu), r2(h.MeanCPUu)
		row("| 1. cluster names: CPU per query within 1.5× of the node cache's CPU per hit (same run) | %.2f vs %.2f µs: %s× | %s |",
			ci, ch, ratio(ci, ch), met(ratioOf(ci, ch) <= 1.5))
	}
	if without, with := res.search("without"), res.search("with"); without != nil && with != nil {
		without, with := without.QueriesPerLookup, with.QueriesPerLookup
		row("| 4. one query per family for an external lookup with searchpath (ndots:5) | %.2f queries per lookup (A+AAAA) with searchpath, %.2f without | %s |",
			with, without, met(with <= 2))
	}
	for _, mode := range []string{"", "-verified"} {
		o, u := res.memory("ours"+mode), res.memory("upstream"+mode)
		if o == nil || u == nil {
			continue
		}
		suffix := ""
		if mode != "" {
			suffix = ", pods verified"
		}
		r := ratioOf(o.SteadyHeap, u.SteadyHeap)
		row("| 5. heap ≤ 0.5× upstream kubernetes%s | %.0f MiB vs %.0f MiB: %s× (RSS %.0f vs %.0f MiB: %s×) | %s |",
			suffix, o.SteadyHeap, u.SteadyHeap, ratio(o.SteadyHeap, u.SteadyHeap), o.SteadyRSS, u.SteadyRSS, ratio(o.SteadyRSS, u.SteadyRSS), met(r <= 0.5))
		r = ratioOf(o.RelistPeakRSS, o.WindowPeakRSS)
		row("| 5. relist peak ≤ 1.2× steady (k8sdiscovery%s, RSS) | %.0f MiB peak vs %.0f MiB in a steady window sampled the same way: %s× (vs %.0f MiB right after a forced GC: %s×; heap peak %s× that window's; upstream %s× and %s×) | %s |",
			suffix, o.RelistPeakRSS, o.WindowPeakRSS, ratio(o.RelistPeakRSS, o.WindowPeakRSS),
			o.SteadyRSS, ratio(o.RelistPeakRSS, o.SteadyRSS), ratio(o.RelistPeakHeap, o.WindowPeakHeap),
			ratio(u.RelistPeakRSS, u.WindowPeakRSS), ratio(u.RelistPeakRSS, u.SteadyRSS), met(r <= 1.2))
	}
	if h := res.Handover; h != nil {
		sum := map[string]*[5]int{} // q/s, rounds, sent, lost, SERVFAIL per clients
		for _, r := range h.Rows {
			if r.Binary != "./coredns" {
				continue
			}
			s := sum[r.Clients]
			if s == nil {
				s = new([5]int)
				sum[r.Clients] = s
			}
			s[0], s[1], s[2], s[3], s[4] = s[0]+r.QPS, s[1]+1, s[2]+r.Sent, s[3]+r.Lost, s[4]+r.Servfail
		}
		get := func(k string) [5]int {
			if s := sum[k]; s != nil {
				return *s
			}
			return [5]int{0, 1, 0, 0, 0}
		}
		u, t, p := get("UDP"), get("TCP"), get("TCP pipelined")
		row("| 0 queries lost across a node-cache handover at full load (UDP, and TCP a connection per query as stub resolvers ask) | %d lost, %d SERVFAIL of %d sent; UDP at %d q/s, TCP at %d q/s (mean of %d rounds); TCP pipelined on long-lived connections: %d lost of %d (a known limit) | %s |",
			u[3]+t[3], u[4]+t[4], u[2]+t[2], u[0]/u[1], t[0]/t[1], u[1], p[3], p[2], met(u[3]+t[3]+u[4]+t[4] == 0))
	}
	for _, role := range []struct{ role, label, theirs string }{
		{"central", "central role (k8sdiscovery vs kubernetes)", "upstream"},
		{"node", "node role, hits (nodecache vs cache + forward)", "cache"},
	} {
		for _, o := range res.FixedRate {
			if o.Role != role.role || !o.Ours {
				continue
			}
			for _, t := range res.FixedRate {
				if t.Role == role.role && t.Rate == o.Rate && t.Server == role.theirs {
					co, ct := r2(o.MeanCPUu), r2(t.MeanCPUu)
					row("| 7. CPU per query at %d q/s ≤ 0.5× upstream, %s | %.2f vs %.2f µs: %s× | %s |", o.Rate, role.label, co, ct, ratio(co, ct), met(ratioOf(co, ct) <= 0.5))
				}
			}
		}
	}
	return rows
}

// Figures of a server's runs, as the detail tables show them.

func (s Server) maxRSS() int {
	if len(s.PeakRSS) == 0 {
		return 0
	}
	return slices.Max(s.PeakRSS)
}

// QPSRuns is each run's QPS: "98990, 68629, 90359".
func (s Server) QPSRuns() string {
	var out []string
	for _, t := range s.Runs {
		out = append(out, fmt.Sprintf("%.0f", t.QPS))
	}
	return strings.Join(out, ", ")
}

func (s Server) MaxRSS() int { return s.maxRSS() }
func (s Server) CPUPercent() float64 {
	return mean(s.Runs, func(t Throughput) float64 { return t.CPUPercent })
}
func (s Server) Lost() int      { return lostOf(s.Runs) }
func (s Server) Rcodes() string { return rcodeSet(s.Runs) }
func (s Server) ResponseBytes() float64 {
	return mean(s.Runs, func(t Throughput) float64 { return float64(t.ResponseBytes) })
}
func (s Server) CentralCPU() float64 {
	return mean(s.Runs, func(t Throughput) float64 { return t.CentralCPUPerQuery })
}

// LoadRange is the 1-minute load averages seen across the runs: "1.59-2.23".
func (s Server) LoadRange() string {
	if len(s.Runs) == 0 {
		return ""
	}
	lo, hi := s.Runs[0].Load, s.Runs[0].Load
	for _, t := range s.Runs {
		lo, hi = min(lo, t.Load), max(hi, t.Load)
	}
	return fmt.Sprintf("%.2f-%.2f", lo, hi)
}

func lostOf(runs []Throughput) int {
	n := 0
	for _, t := range runs {
		n += t.Lost
	}
	return n
}

// VsOurs is ours' QPS ÷ this server's, "—" for ours.
func (sc *Scenario) VsOurs(s Server) string {
	o := sc.server("ours")
	if s.Name == "ours" || o == nil {
		return "—"
	}
	return ratio(r0(o.MeanQPS), r0(s.MeanQPS))
}

// chainCentralRow is a chain's central-role CPU per query, hits and misses ("—": not run).
type chainCentralRow struct{ Label, Hits, Misses string }

// ChainUpstream is our node role's upstream lines in the chain (none in runs before they were
// recorded).
func (v view) ChainUpstream() []string {
	for _, sc := range []*Scenario{v.ChainHit, v.ChainMiss} {
		if sc != nil && len(sc.NodeUpstream) > 0 {
			return sc.NodeUpstream
		}
	}
	return nil
}

// ChainCentralRows pairs the chain scenarios' servers by name, not by position.
func (v view) ChainCentralRows() []chainCentralRow {
	var rows []chainCentralRow
	seen := map[string]bool{}
	cpu := func(sc *Scenario, name string) string {
		if s := sc.server(name); s != nil {
			return fmt.Sprintf("%.2f", s.CentralCPU())
		}
		return "—"
	}
	for _, sc := range []*Scenario{v.ChainHit, v.ChainMiss} {
		if sc == nil {
			continue
		}
		for _, s := range sc.Servers {
			if seen[s.Name] {
				continue
			}
			seen[s.Name] = true
			rows = append(rows, chainCentralRow{s.Label, cpu(v.ChainHit, s.Name), cpu(v.ChainMiss, s.Name)})
		}
	}
	return rows
}

// FixedRows are the fixed-rate rows of one role, rate by rate, with ours ÷ theirs.
func (v view) FixedRows(role string) []fixedRow {
	var out []fixedRow
	for _, rate := range v.Rates {
		var ours *FixedRate
		for i, f := range v.FixedRate {
			if f.Role == role && f.Rate == rate && f.Ours {
				ours = &v.FixedRate[i]
			}
		}
		for _, f := range v.FixedRate {
			if f.Role != role || f.Rate != rate {
				continue
			}
			r := fixedRow{FixedRate: f, VsOurs: "—", ByRound: "—", QPS: mean(f.Runs, func(t Throughput) float64 { return t.QPS }), Lost: lostOf(f.Runs)}
			var each []string
			for _, t := range f.Runs {
				each = append(each, fmt.Sprintf("%.1f", t.CPUPerQuery))
			}
			r.PerRun = strings.Join(each, " · ")
			if !f.Ours && ours != nil {
				r.VsOurs = ratio(r2(ours.MeanCPUu), r2(f.MeanCPUu))
				// Round i of ours against round i of theirs (the runs of one round are next
				// to each other in time).
				var rs []string
				for i := range min(len(ours.Runs), len(f.Runs)) {
					rs = append(rs, ratio(r2(ours.Runs[i].CPUPerQuery), r2(f.Runs[i].CPUPerQuery)))
				}
				r.ByRound = strings.Join(rs, " · ")
			}
			out = append(out, r)
		}
	}
	return out
}

type fixedRow struct {
	FixedRate
	VsOurs string
	// PerRun is the CPU µs per query of each run, ByRound ours ÷ theirs round by round.
	PerRun, ByRound string
	QPS             float64
	Lost            int
}

// WatchEventsText is "213 namespaces, 20007 services, ...".
func (m Memory) WatchEventsText() string {
	var out []string
	for _, e := range m.WatchEvents {
		out = append(out, fmt.Sprintf("%d %s", e.Count, e.Resource))
	}
	return strings.Join(out, ", ")
}

// LoadedText is the load's phases and summary: "created ...; created ...; loaded ....".
func (l LoadReport) LoadedText() string {
	var out []string
	for _, p := range l.Phases {
		out = append(out, p.createdLine())
	}
	return strings.Join(append(out, l.loadedLine()), "; ") + "."
}

// LoadedLine is the load's summary alone.
func (l LoadReport) LoadedLine() string { return l.loadedLine() }

// plural is "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
