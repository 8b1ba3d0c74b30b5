package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run folder in the shapes bench/run.sh writes: two scenarios, one memory pair.
func fakeRun(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"meta":                       "declare -- RUN_DATE=\"2026-12-01 16:09 UTC\"\ndeclare -- RUN_COMMIT=\"abc1234\"\ndeclare -- ROUNDS=\"2\"\ndeclare -- RUN_SECONDS=\"10\"\ndeclare -- RUN_MINUTES=\"30\"\n",
		"index.ours.q2000.runs":      "2000 0 10 50.00 NOERROR:100.00% 211 1.0\n2000 0 12 60.00 NOERROR:100.00% 211 1.0\n",
		"index.upstream.q2000.runs":  "2000 0 20 100.00 NOERROR:100.00% 211 1.0\n",
		"hit.ours.q10000.runs":       "10000 0 15 15.00 NOERROR:100.00% 90 1.0\n",
		"index.ours.runs":            "40000 0 95 20.00 NOERROR:100.00% 211 1.88\n50000 1 93 18.00 NOERROR:100.00% 211 2.19\n",
		"index.ours.lat":             "0.144 10.329 20.868 229423\n",
		"index.ours.rss":             "54\n55\n",
		"index.upstream.runs":        "30000 0 95 30.00 NOERROR:100.00% 211 1.9\n30000 0 95 30.00 NOERROR:100.00% 211 1.9\n",
		"index.upstream.lat":         "0.179 19.754 30.1 229000\n",
		"index.upstream.rss":         "64\n64\n",
		"index.latency_rate":         "15000\n",
		"miss.ours.runs":             "24000 0 90 36.00 NOERROR:100.00% 90 1.1\n",
		"miss.ours.lat":              "0.3 7.5 9 1000\n",
		"miss.ours.rss":              "60\n",
		"miss.forward.runs":          "18000 0 90 50.00 NOERROR:100.00% 90 1.1\n",
		"miss.forward.lat":           "0.7 10.8 12 1000\n",
		"miss.forward.rss":           "57\n",
		"miss.latency_rate":          "9000\n",
		"memory.ours":                "2.6 77 77 33 33 100 100 100 34 54 96 21.3 96 96 96 32 49\n",
		"memory.upstream":            "2.7 211 234 105 105 350 298 350 164 301 98 23.0 215 215 215 142 158\n",
		"index.ours.dnsperf.last":    "ignored",
		"memory.ours.relist.samples": "0.00 77.0 33.0\n0.10 78.5 34.1\n12.3 96.2 41.0\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResultsNamesTheColumns(t *testing.T) {
	dir := fakeRun(t)
	out := filepath.Join(t.TempDir(), "results.json")
	if err := results([]string{dir, out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Run.Commit != "abc1234" || r.Run.Date != "2026-12-01 16:09 UTC" || r.Run.Rounds != 2 || r.Run.Minutes != 30 {
		t.Errorf("run: %+v", r.Run)
	}
	if len(r.Scenarios) != 2 || r.Scenarios[0].ID != "index" || r.Scenarios[1].ID != "miss" {
		t.Fatalf("scenarios (hit is not in this run): %+v", r.Scenarios)
	}
	ours, up := r.Scenarios[0].Servers[0], r.Scenarios[0].Servers[1]
	if !ours.Ours || up.Ours || ours.Label != "k8sdiscovery" || up.Label != "upstream kubernetes" {
		t.Errorf("servers: %+v %+v", ours, up)
	}
	if ours.MeanQPS != 45000 || ours.MeanCPUu != 19 || ours.P50ms != 0.144 || ours.P99ms != 10.329 || len(ours.PeakRSS) != 2 || ours.PeakRSS[1] != 55 {
		t.Errorf("ours: %+v", ours)
	}
	if ours.Runs[1].Lost != 1 || ours.Runs[1].CPUPercent != 93 || ours.Runs[1].Load != 2.19 || ours.Runs[1].Rcodes != "NOERROR:100.00%" {
		t.Errorf("second run: %+v", ours.Runs[1])
	}
	if r.Scenarios[0].LatencyRate != 15000 {
		t.Errorf("latency rate %d", r.Scenarios[0].LatencyRate)
	}
	if len(r.Memory) != 2 {
		t.Fatalf("memory: %+v", r.Memory)
	}
	if m := r.Memory[1]; m.SteadyRSS != 211 || m.SteadyHeap != 105 || m.RelistPeakRSS != 350 || m.RelistPeakHeap != 301 ||
		m.WindowPeakRSS != 215 || m.WindowPeakHeap != 158 || m.SyncSeconds != 2.7 || m.Ours {
		t.Errorf("upstream memory: %+v", m)
	}
}

// resultsOf runs `benchctl results` on a run folder and reads back what it wrote.
func resultsOf(t *testing.T, dir string) Results {
	t.Helper()
	out := filepath.Join(t.TempDir(), "results.json")
	if err := results([]string{dir, out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResultsFixedRates(t *testing.T) {
	r := resultsOf(t, fakeRun(t))
	if len(r.FixedRate) != 3 {
		t.Fatalf("fixed-rate rows: %+v", r.FixedRate)
	}
	ours := r.FixedRate[0]
	if ours.Role != "central" || !ours.Ours || ours.Rate != 2000 || ours.MeanCPUu != 55 || ours.MeanCPU != 11 || len(ours.Runs) != 2 {
		t.Errorf("central ours at 2000: %+v", ours)
	}
	if up := r.FixedRate[1]; up.Ours || up.Label != "upstream kubernetes" || up.MeanCPUu != 100 {
		t.Errorf("central upstream at 2000: %+v", up)
	}
	if hit := r.FixedRate[2]; hit.Role != "node" || hit.Rate != 10000 || hit.Label != "nodecache" {
		t.Errorf("node at 10000: %+v", hit)
	}
}

func TestResultsRefusesAShortRecord(t *testing.T) {
	dir := fakeRun(t)
	os.WriteFile(filepath.Join(dir, "index.ours.runs"), []byte("40000 0 95\n"), 0o644)
	err := results([]string{dir, filepath.Join(t.TempDir(), "r.json")})
	if err == nil || !strings.Contains(err.Error(), "want 7") {
		t.Fatalf("want an error naming the short record, got %v", err)
	}
}

// The relist timeline is read from memory.<name>.relist.samples where the run wrote one.
func TestResultsRelistSamples(t *testing.T) {
	r := resultsOf(t, fakeRun(t))
	for _, m := range r.Memory {
		want := map[string]int{"ours": 3, "upstream": 0}[m.Name]
		if len(m.Relist) != want {
			t.Errorf("%s: %d relist samples, want %d", m.Name, len(m.Relist), want)
		}
	}
	if s := r.Memory[0].Relist; len(s) == 3 && (s[2].T != 12.3 || s[2].RSS != 96.2 || s[2].Heap != 41) {
		t.Errorf("last sample %+v", s[2])
	}
}

func TestPlotWritesEveryChart(t *testing.T) {
	dir := fakeRun(t)
	js := filepath.Join(t.TempDir(), "results.json")
	if err := results([]string{dir, js}); err != nil {
		t.Fatal(err)
	}
	plots := t.TempDir()
	if err := plotResults([]string{js, plots}); err != nil {
		t.Fatal(err)
	}
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
