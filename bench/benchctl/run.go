package main

// benchctl run: the benchmarks side by side with upstream CoreDNS v1.15.0 (issue 7), every
// scenario a Go function (central.go, caches.go, search.go, memory.go, handover.go; the rounds in
// rounds.go). bench/run.sh prepares the machine (packages, builds, the bridge link) and runs this;
// see its header for the scenarios and the knobs, read here from the environment.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterdns/clusterdns/internal/controlplane"
)

// config is the run's knobs (environment variables of the same names, defaults as documented
// in bench/run.sh).
type config struct {
	Scenarios                                    []string
	Rounds, RunSeconds, Outstanding, LatencySecs int
	// LowRounds is the lowrate scenario's rounds (LOWRATE_ROUNDS): more than the others', as an
	// idle server's CPU per query varies more from run to run than a busy one's.
	LowRounds                                    int
	IndexServices, MissServices                  int
	MemServices, MemPods, MemSettle, RelistWatch int
	LowRates                                     []int
	ServerCPU, LoadCPU                           int
	Link, Net                                    string
	Out, ResultsMD                               string
	ControlPlaneBin                              string
	// Coredns is the binary under test (both sides), Goceiling bench/goceiling's.
	Coredns, Goceiling string
}

var allScenarios = []string{"index", "hit", "miss", "search", "memory", "handover", "lowrate", "chain"}

func configFromEnv(root string) (config, error) {
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	var errs []error
	// Counts and durations must be positive (MEM_SERVICES=0 divided by zero, ROUNDS=0 asked
	// dnsperf for 0 q/s); the CPU numbers may be 0.
	num := func(name string, def int) int {
		n, err := strconv.Atoi(env(name, strconv.Itoa(def)))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		case n < 0 || n == 0 && name != "SERVER_CPU" && name != "LOAD_CPU":
			errs = append(errs, fmt.Errorf("%s=%d: want a number above 0", name, n))
		}
		return n
	}
	c := config{
		Scenarios:       strings.Fields(env("SCENARIOS", strings.Join(allScenarios, " "))),
		Rounds:          num("ROUNDS", 3),
		LowRounds:       num("LOWRATE_ROUNDS", 5),
		RunSeconds:      num("RUN_SECONDS", 10),
		Outstanding:     num("OUTSTANDING", 100),
		LatencySecs:     num("LATENCY_SECONDS", 5),
		IndexServices:   num("INDEX_SERVICES", 1000),
		MissServices:    num("MISS_SERVICES", 100),
		MemServices:     num("MEM_SERVICES", 10000),
		MemPods:         num("MEM_PODS", 150000),
		MemSettle:       num("MEM_SETTLE", 20),
		RelistWatch:     num("RELIST_WATCH", 60),
		ServerCPU:       num("SERVER_CPU", 0),
		LoadCPU:         num("LOAD_CPU", 1),
		Link:            env("BENCH_LINK", "dnsbench0"),
		Net:             env("BENCH_NET", "169.254.77"),
		Out:             env("BENCH_OUT", filepath.Join(root, "bench/out/run")),
		ResultsMD:       env("BENCH_RESULTS", filepath.Join(root, "bench/RESULTS.md")),
		ControlPlaneBin: os.Getenv("CONTROLPLANE_BIN"),
	}
	for _, r := range strings.Fields(env("LOW_RATES", "2000 10000")) {
		n, err := strconv.Atoi(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("LOW_RATES: %w", err))
		} else if n <= 0 {
			errs = append(errs, fmt.Errorf("LOW_RATES: %d: want rates above 0", n))
		}
		c.LowRates = append(c.LowRates, n)
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(allScenarios, s) {
			errs = append(errs, fmt.Errorf("unknown scenario %s", s))
		}
	}
	c.Coredns = filepath.Join(c.Out, "coredns")
	c.Goceiling = filepath.Join(c.Out, "goceiling")
	return c, errors.Join(errs...)
}

func (c config) wants(s string) bool { return slices.Contains(c.Scenarios, s) }

// The addresses on the bench's bridge (bench/run.sh adds them).
func (c config) addrServer() string   { return c.Net + ".1" } // the server under test, port 53
func (c config) addrStub() string     { return c.Net + ".2" } // behind a cache: goceiling (hit), the central role (miss, chain)
func (c config) addrUpstream() string { return c.Net + ".3" } // the resolver behind the central DNS (search)
func (c config) addrPod() string      { return c.Net + ".9" } // the pod asking (search)

// bench is one run: its settings, the processes it started, its figures.
type bench struct {
	cfg   config
	root  string
	procs []*proc
	res   *Results
	// cp is the scenario's control plane while one is up; kubeconfig its admin's (set before any
	// server that reads it starts).
	cp         *controlplane.ControlPlane
	kubeconfig string
	// pprof: the next servers started serve pprof on addrServer:6060 (CPU profiles).
	pprof bool
	// mu guards procs and cp, which a signal's stopAll reads from another goroutine.
	mu          sync.Mutex
	interrupted atomic.Bool
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func run(args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("usage: benchctl run (settings from the environment; see bench/run.sh)")
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	cfg, err := configFromEnv(root)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, root: root, res: &Results{}}
	start := time.Now()
	b.res.Run = RunInfo{
		Date: start.UTC().Format("2006-01-02 15:04 UTC"), Commit: gitCommit(root),
		Rounds: cfg.Rounds, Seconds: cfg.RunSeconds, Outstanding: cfg.Outstanding, LatencySeconds: cfg.LatencySecs,
		Scenarios: cfg.Scenarios, IndexServices: cfg.IndexServices, MissServices: cfg.MissServices,
		MemServices: cfg.MemServices, MemPods: cfg.MemPods, MemSettle: cfg.MemSettle, RelistWatch: cfg.RelistWatch,
		LowRates: cfg.LowRates, LowRounds: cfg.LowRounds, ServerCPU: cfg.ServerCPU, LoadCPU: cfg.LoadCPU,
		Machine: machine(cfg.ControlPlaneBin), LoadStart: loadAvg(3),
	}
	// A signal stops every child (servers, control plane), so the scenario under way fails at
	// once and the run still writes what it measured.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		logf("%v: stopping the servers and the control plane", sig)
		b.interrupted.Store(true)
		b.stopAll()
	}()
	scenarios := map[string]func() error{
		"index": b.scenarioIndex, "hit": b.scenarioHit, "miss": b.scenarioMiss, "search": b.scenarioSearch,
		"memory": b.scenarioMemory, "handover": b.scenarioHandover, "lowrate": b.scenarioLowrate, "chain": b.scenarioChain,
	}
	var runErr error
	for _, s := range cfg.Scenarios {
		err := scenarios[s]()
		if b.interrupted.Load() {
			err = errors.New("interrupted")
		}
		if err != nil {
			runErr = fmt.Errorf("scenario %s: %w", s, err)
			break
		}
	}
	b.stopAll()
	b.res.Run.Minutes = int(time.Since(start).Minutes())
	b.res.Run.LoadEnd = loadAvg(3)
	if runErr != nil {
		b.res.Run.Status = fmt.Sprintf("failed after %d min: %v (see %s)", b.res.Run.Minutes, runErr, cfg.Out)
	}
	if err := b.writeResults(); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr == nil {
		logf("done in %d min", b.res.Run.Minutes)
	}
	return runErr
}

// resultsPaths are the JSON and the plot folder beside a RESULTS[.name].md: results[.name].json
// and plots[/name].
func resultsPaths(md string) (json, plotDir, plotRel string) {
	dir := filepath.Dir(md)
	name := strings.TrimPrefix(strings.TrimSuffix(filepath.Base(md), ".md"), "RESULTS")
	name = strings.TrimPrefix(name, ".")
	if name == "" {
		return filepath.Join(dir, "results.json"), filepath.Join(dir, "plots"), "plots"
	}
	return filepath.Join(dir, "results."+name+".json"), filepath.Join(dir, "plots", name), "plots/" + name
}

// writeResults writes results.json, the plots and RESULTS.md.
func (b *bench) writeResults() error {
	js, _, _ := resultsPaths(b.cfg.ResultsMD)
	if err := b.res.write(js); err != nil {
		return err
	}
	if err := renderAll(js, b.cfg.ResultsMD); err != nil {
		return err
	}
	logf("wrote %s and %s", js, b.cfg.ResultsMD)
	return nil
}

func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// loadAvg is the first n of /proc/loadavg's figures.
func loadAvg(n int) string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(n, len(f))], " ")
}

func machine(controlPlaneBin string) Machine {
	m := Machine{Cores: runtimeCores()}
	m.KubeVersion, m.EtcdVersion = controlPlaneVersions(controlPlaneBin)
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				m.MemGiB = int(atof(f[1])/1048576 + 0.5)
			}
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	m.DnsperfVersion = versionLine("dnsperf", "-h")
	m.UnboundVersion = versionLine("unbound", "-V")
	return m
}

// controlPlaneVersions are the versions kube-apiserver and etcd in dir print ("Kubernetes
// v1.37.1", "etcd Version: 3.7.0").
func controlPlaneVersions(dir string) (kube, etcd string) {
	if dir == "" {
		return "", ""
	}
	if out, err := exec.Command(filepath.Join(dir, "kube-apiserver"), "--version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 2 {
			kube = f[1]
		}
	}
	if out, err := exec.Command(filepath.Join(dir, "etcd"), "--version").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "etcd Version:"); ok {
				etcd = strings.TrimSpace(v)
			}
		}
	}
	return kube, etcd
}

// versionLine is the second word of the "Version ..." line a command prints.
func versionLine(cmd string, args ...string) string {
	out, _ := exec.Command(cmd, args...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Version" {
			return f[1]
		}
	}
	return ""
}
