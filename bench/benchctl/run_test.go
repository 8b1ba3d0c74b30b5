package main

import (
	"net"
	"slices"
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	for _, k := range []string{"SCENARIOS", "ROUNDS", "LOWRATE_ROUNDS", "RUN_SECONDS", "OUTSTANDING", "LATENCY_SECONDS", "INDEX_SERVICES", "MISS_SERVICES",
		"MEM_SERVICES", "MEM_PODS", "MEM_SETTLE", "RELIST_WATCH", "LOW_RATES", "BENCH_LINK", "BENCH_NET", "SERVER_CPU", "LOAD_CPU",
		"BENCH_OUT", "BENCH_RESULTS", "CONTROLPLANE_BIN"} {
		t.Setenv(k, "")
	}
	c, err := configFromEnv("/repo")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Scenarios, allScenarios) || c.Rounds != 3 || c.LowRounds != 5 || c.RunSeconds != 10 || c.Outstanding != 100 || c.LatencySecs != 5 ||
		c.IndexServices != 1000 || c.MissServices != 100 || c.MemServices != 10000 || c.MemPods != 150000 || c.MemSettle != 20 ||
		c.RelistWatch != 60 || !slices.Equal(c.LowRates, []int{2000, 10000}) || c.ServerCPU != 0 || c.LoadCPU != 1 ||
		c.Link != "dnsbench0" || c.Net != "169.254.77" || c.Out != "/repo/bench/out/run" || c.ResultsMD != "/repo/bench/RESULTS.md" {
		t.Errorf("defaults: %+v", c)
	}
	t.Setenv("SCENARIOS", "hit memory")
	t.Setenv("LOW_RATES", "500")
	t.Setenv("BENCH_NET", "169.254.78")
	t.Setenv("ROUNDS", "1")
	t.Setenv("LOWRATE_ROUNDS", "7")
	if c, err = configFromEnv("/repo"); err != nil {
		t.Fatal(err)
	}
	if !c.wants("memory") || c.wants("index") || !slices.Equal(c.LowRates, []int{500}) || c.Rounds != 1 || c.LowRounds != 7 || c.addrServer() != "169.254.78.1" || c.addrPod() != "169.254.78.9" {
		t.Errorf("set: %+v", c)
	}
	t.Setenv("SCENARIOS", "hit dns")
	t.Setenv("ROUNDS", "three")
	_, err = configFromEnv("/repo")
	if err == nil || !strings.Contains(err.Error(), "unknown scenario dns") || !strings.Contains(err.Error(), "ROUNDS") {
		t.Errorf("want both mistakes named, got %v", err)
	}
	t.Setenv("SCENARIOS", "")
	t.Setenv("ROUNDS", "0")
	t.Setenv("MEM_SERVICES", "0")
	t.Setenv("LOW_RATES", "2000 -5")
	t.Setenv("SERVER_CPU", "0")
	_, err = configFromEnv("/repo")
	for _, want := range []string{"ROUNDS=0", "MEM_SERVICES=0", "LOW_RATES: -5"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q named, got %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "SERVER_CPU") {
		t.Errorf("CPU 0 refused: %v", err)
	}
}

func TestResultsPaths(t *testing.T) {
	for _, tc := range []struct{ md, json, plots, rel string }{
		{"bench/RESULTS.md", "bench/results.json", "bench/plots", "plots"},
		{"/tmp/x/RESULTS.miss.md", "/tmp/x/results.miss.json", "/tmp/x/plots/miss", "plots/miss"},
	} {
		js, plots, rel := resultsPaths(tc.md)
		if js != tc.json || plots != tc.plots || rel != tc.rel {
			t.Errorf("%s: %s %s %s", tc.md, js, plots, rel)
		}
	}
}

// A server's address must be free before it starts: a process left on it would answer the
// probes of a server that failed to bind (a stray stub once made the bench measure it).
func TestAddressFree(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if err := addressFree(addr); err == nil || !strings.Contains(err.Error(), "udp "+addr+" is taken") {
		t.Errorf("UDP bound: %v", err)
	}
	pc.Close()
	if err := addressFree(addr); err != nil {
		t.Errorf("after close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	if err := addressFree(addr); err == nil || !strings.Contains(err.Error(), "tcp "+addr+" is taken") {
		t.Errorf("TCP bound: %v", err)
	}
}
