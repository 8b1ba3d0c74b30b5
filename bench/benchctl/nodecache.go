package main

// benchctl nodecache: the quick node-cache A/B on loopback (bench/nodecache/bench.sh runs it):
// nodecache against CoreDNS cache + forward { force_tcp }, hits (100 names, warmed, UDP) and
// cluster-zone misses (every name new, so every query goes upstream over TCP) to a cluster DNS
// answering from a template. Server under test on CPU 0, dnsperf (-c 8 -q 500) and the cluster DNS
// on CPU 1, rounds A/B/A/B. No apiserver and no bridge: the harness's hit and miss scenarios
// (benchctl run) are the full measurement. Writes OUT/nodecache.json and OUT/nodecache.md.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

const loopbackCluster = `cluster.local:5300 {
    bind 127.0.0.2
    template IN A cluster.local {
        answer "{{ .Name }} 30 IN A 10.96.0.42"
    }
}
`

var loopbackCorefiles = map[string]string{
	"ours": `cluster.local:1053 {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.2:5300
    }
}
`,
	"upstream": `cluster.local:1053 {
    bind 127.0.0.1
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . 127.0.0.2:5300 {
        force_tcp
    }
}
`,
}

// NodecacheAB is what `benchctl nodecache` measured.
type NodecacheAB struct {
	Seconds   int              `json:"seconds_per_run"`
	Cores     int              `json:"cores"`
	Kernel    string           `json:"kernel"`
	Load      string           `json:"load_avg"`
	Scenarios []NodecacheABRow `json:"scenarios"`
}

// NodecacheABRow is one scenario: each side's runs.
type NodecacheABRow struct {
	Scenario string       `json:"scenario"` // "hit" or "miss"
	Ours     []Throughput `json:"ours"`
	Upstream []Throughput `json:"upstream"`
}

var nodecacheABTemplate = template.Must(template.New("nodecache.md").Funcs(template.FuncMap{
	"qps": func(runs []Throughput) string {
		var parts []string
		for _, t := range runs {
			parts = append(parts, fmt.Sprintf("%.0f", t.QPS))
		}
		return fmt.Sprintf("%.0f (%s)", r0(mean(runs, func(t Throughput) float64 { return t.QPS })), strings.Join(parts, ", "))
	},
	"ratio": func(a, b []Throughput) string {
		q := func(t Throughput) float64 { return t.QPS }
		return ratio(r0(mean(a, q)), r0(mean(b, q)))
	},
	"lost": lostOf,
	"label": func(s string) string {
		if s == "hit" {
			return "cache hit (UDP)"
		}
		return "cluster-zone miss (upstream over TCP)"
	},
}).Parse(`| scenario | nodecache QPS (per run) | cache+forward force_tcp QPS (per run) | ratio (mean) | lost (ours / theirs) |
| --- | --- | --- | --- | --- |
{{range .Scenarios -}}
| {{label .Scenario}} | {{qps .Ours}} | {{qps .Upstream}} | {{ratio .Ours .Upstream}} | {{lost .Ours}} / {{lost .Upstream}} |
{{end}}
Server under test on CPU 0 (taskset), dnsperf (-c 8 -q 500) and the cluster DNS on CPU 1; {{.Seconds}}s per run, A/B/A/B; {{.Cores}} cores, {{.Kernel}}; load average {{.Load}}. Lost: dnsperf's count over both runs (mostly its first burst of 500 queries overflowing a default-sized socket buffer).
`))

func nodecacheAB(args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("usage: benchctl nodecache (SECONDS_PER_RUN, BENCH_OUT; see bench/nodecache/bench.sh)")
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	seconds := 10
	if v := os.Getenv("SECONDS_PER_RUN"); v != "" {
		if seconds, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("SECONDS_PER_RUN: %w", err)
		}
	}
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = filepath.Join(root, "bench/out/nodecache")
	}
	b := &bench{cfg: config{Out: out, ServerCPU: 0, LoadCPU: 1, Coredns: filepath.Join(out, "coredns")}, root: root, res: &Results{}}
	defer b.stopAll()
	conf, err := b.writeFile("Corefile.cluster", loopbackCluster)
	if err != nil {
		return err
	}
	if _, err := b.start("cluster", 1, b.cfg.Coredns, "-conf", conf); err != nil {
		return err
	}
	hit, err := b.hitQueries("", "")
	if err != nil {
		return err
	}
	res := NodecacheAB{Seconds: seconds, Cores: runtimeCores(), Kernel: machine("").Kernel}
	missRun := 0
	for _, scenario := range []string{"hit", "miss"} {
		row := NodecacheABRow{Scenario: scenario}
		for round := 1; round <= 2; round++ {
			for _, name := range []string{"ours", "upstream"} {
				file := hit
				if scenario == "miss" {
					// A fresh set of never-asked names for every miss run.
					missRun++
					if file, err = b.loopbackMissQueries(missRun); err != nil {
						return err
					}
				}
				t, err := b.loopbackRun(name, scenario, file, seconds)
				if scenario == "miss" {
					os.Remove(file)
				}
				if err != nil {
					return err
				}
				if name == "ours" {
					row.Ours = append(row.Ours, t)
				} else {
					row.Upstream = append(row.Upstream, t)
				}
				logf("%s round %d %s: %.0f qps (lost %d)", scenario, round, name, t.QPS, t.Lost)
			}
		}
		res.Scenarios = append(res.Scenarios, row)
	}
	res.Load = loadAvg(3)
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "nodecache.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := nodecacheABTemplate.Execute(&md, res); err != nil {
		return err
	}
	os.Stdout.Write(md.Bytes())
	return os.WriteFile(filepath.Join(out, "nodecache.md"), md.Bytes(), 0o644)
}

// loopbackRun starts one side on CPU 0, warms it for a hit run, and measures a dnsperf run.
func (b *bench) loopbackRun(name, scenario, file string, seconds int) (Throughput, error) {
	conf, err := b.writeFile("Corefile."+name, loopbackCorefiles[name])
	if err != nil {
		return Throughput{}, err
	}
	p, err := b.startAnswering(name+"."+scenario, 0, "127.0.0.1:1053", cacheProbes, b.cfg.Coredns, "-conf", conf)
	if err != nil {
		return Throughput{}, err
	}
	defer p.Stop(10 * time.Second)
	dnsperf := func(args ...string) (DnsperfReport, error) {
		rep, _, err := b.dnsperfAt("127.0.0.1", "1053", file, args...)
		return rep, err
	}
	if scenario == "hit" {
		dnsperf("-l", "1", "-c", "4", "-q", "100") //nolint:errcheck // a warm-up
	}
	rep, err := dnsperf("-l", strconv.Itoa(seconds), "-c", "8", "-q", "500")
	if err != nil {
		return Throughput{}, err
	}
	return Throughput{QPS: rep.QPS, Completed: rep.Completed, Lost: rep.Lost, Rcodes: rep.Rcodes, ResponseBytes: rep.ResponseBytes}, nil
}

// loopbackMissQueries: 700,000 names never asked before (run n's own).
func (b *bench) loopbackMissQueries(n int) (string, error) {
	f, err := os.Create(b.path(fmt.Sprintf("miss.%d.txt", n)))
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 1; i <= 700000; i++ {
		fmt.Fprintf(w, "svc-%d-%d.bench.svc.cluster.local A\n", n, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}
