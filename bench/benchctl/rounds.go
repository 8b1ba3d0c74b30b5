package main

// The rounds of `benchctl run`: servers started and measured A/B/A/B, at full speed or at a
// fixed rate, and CPU profiles.

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// started is a server under test and, for a chain, the central role started with it.
type started struct {
	server, extra *proc
}

// contender is one server of an A/B comparison.
type contender struct {
	name, label string
	start       func(logName string) (started, error)
}

// queryFile gives the dnsperf input of a server's run ("tp1", "lat2", "q2000.1").
type queryFile func(server, run string) (string, error)

func (b *bench) path(name string) string { return filepath.Join(b.cfg.Out, name) }

// writeFile writes OUT/name and returns its path.
func (b *bench) writeFile(name, body string) (string, error) {
	p := b.path(name)
	return p, os.WriteFile(p, []byte(body), 0o644)
}

// serve starts ./coredns with the Corefile OUT/Corefile.<corefile> on cpu and waits until it
// answers the probes at addr.
func (b *bench) serve(logName string, cpu int, corefile, body, addr string, probes []probe) (*proc, error) {
	conf, err := b.writeFile("Corefile."+corefile, body)
	if err != nil {
		return nil, err
	}
	return b.startAnswering(logName, cpu, addr, probes, b.cfg.Coredns, "-conf", conf)
}

// startAnswering starts argv on cpu and waits until it answers the probes at addr.
func (b *bench) startAnswering(logName string, cpu int, addr string, probes []probe, argv ...string) (*proc, error) {
	// Another process on the address would answer the probes for a server that failed to bind.
	if err := addressFree(addr); err != nil {
		return nil, fmt.Errorf("%s: %w (a process left from an earlier run?)", logName, err)
	}
	p, err := b.start(logName, cpu, argv...)
	if err != nil {
		return nil, err
	}
	if _, err := waitAnswer(addr, probes, time.Now(), 60*time.Second); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("%w; last lines of %s.log:\n%s", err, logName, b.logTail(logName, 20))
	}
	select {
	case <-p.Done():
		return nil, fmt.Errorf("%s exited while %s answered; last lines of its log:\n%s", logName, addr, b.logTail(logName, 20))
	default:
	}
	return p, nil
}

// addressFree says whether nothing is bound to addr (ip:port), over UDP and TCP.
func addressFree(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("udp %s is taken: %w", addr, err)
	}
	pc.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s is taken: %w", addr, err)
	}
	ln.Close()
	return nil
}

func (b *bench) pprofLine() string {
	if b.pprof {
		return "    pprof " + b.cfg.addrServer() + ":6060"
	}
	return ""
}

// abRounds runs ROUNDS rounds, every server in order (A/B/A/B...): start, a warm-up (warm),
// a throughput run (RUN_SECONDS, -c 8 -q OUTSTANDING), stop. Then, at half the slowest server's
// mean QPS, a latency run per server and round with dnsperf -v.
func (b *bench) abRounds(id, title string, servers []contender, queries queryFile, warm bool) (Scenario, error) {
	sc := Scenario{ID: id, Title: title}
	for _, c := range servers {
		sc.Servers = append(sc.Servers, Server{Name: c.name, Label: c.label, Ours: len(sc.Servers) == 0})
	}
	runOne := func(i, round int, run string, measure func(s started, file string) error) error {
		c := servers[i]
		s, err := c.start(id + "." + c.name)
		if err != nil {
			return err
		}
		defer s.extra.Stop(10 * time.Second)
		defer s.server.Stop(10 * time.Second)
		file, err := queries(c.name, run+strconv.Itoa(round))
		if err != nil {
			return err
		}
		if warm {
			b.dnsperf(file, 1, "-c", "4", "-q", "100") //nolint:errcheck // a warm-up; the run after it reports
		}
		return measure(s, file)
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for i := range servers {
			srv := &sc.Servers[i]
			err := runOne(i, round, "tp", func(s started, file string) error {
				t, err := b.measure(s.server, s.extra, file, b.cfg.RunSeconds, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding))
				if err != nil {
					return err
				}
				rss, err := statusMiB(s.server.PID(), "VmHWM")
				if err != nil {
					return err
				}
				srv.Runs = append(srv.Runs, t)
				srv.PeakRSS = append(srv.PeakRSS, int(rss+0.5))
				logf("%s round %d %s: %.0f q/s, %d lost, CPU %.0f%%, %.2f µs/query, %s (load %s)", id, round, srv.Name, t.QPS, t.Lost, t.CPUPercent, t.CPUPerQuery, t.Rcodes, loadAvg(1))
				return nil
			})
			if err != nil {
				return sc, err
			}
			srv.summarize()
		}
	}
	slowest := slices.MinFunc(sc.Servers, func(a, c Server) int { return cmp.Compare(a.MeanQPS, c.MeanQPS) })
	sc.LatencyRate = int(slowest.MeanQPS+0.5) / 2
	lat := make([][]float64, len(servers))
	for round := 1; round <= b.cfg.Rounds; round++ {
		for i := range servers {
			err := runOne(i, round, "lat", func(s started, file string) error {
				_, out, err := b.dnsperf(file, b.cfg.LatencySecs, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding), "-Q", strconv.Itoa(sc.LatencyRate), "-v")
				if err != nil {
					return err
				}
				l, err := latenciesOf(bytes.NewReader(out))
				lat[i] = append(lat[i], l...)
				return err
			})
			if err != nil {
				return sc, err
			}
		}
	}
	for i := range sc.Servers {
		p := percentiles(lat[i])
		sc.Servers[i].P50ms, sc.Servers[i].P99ms, sc.Servers[i].MaxMs, sc.Servers[i].Answered = round(p.P50, 3), round(p.P99, 3), round(p.Max, 3), p.N
	}
	return sc, nil
}

// fixedRounds is the lowrate scenario's: LOWRATE_ROUNDS rounds, every server in order, a fresh process,
// a warm-up (warm) and a run of RUN_SECONDS at rate q/s.
func (b *bench) fixedRounds(id, role string, rate int, servers []contender, queries queryFile, warm bool) ([]FixedRate, error) {
	rows := make([]FixedRate, len(servers))
	for i, c := range servers {
		rows[i] = FixedRate{Role: role, Server: c.name, Label: c.label, Ours: i == 0, Rate: rate}
	}
	for round := 1; round <= b.cfg.LowRounds; round++ {
		for i, c := range servers {
			s, err := c.start(id + "." + c.name)
			if err != nil {
				return rows, err
			}
			file, err := queries(c.name, fmt.Sprintf("q%d.%d", rate, round))
			if err == nil && warm {
				b.dnsperf(file, 1, "-c", "4", "-q", "100") //nolint:errcheck // a warm-up
			}
			var t Throughput
			if err == nil {
				t, err = b.measure(s.server, nil, file, b.cfg.RunSeconds, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding), "-Q", strconv.Itoa(rate))
			}
			s.server.Stop(10 * time.Second)
			s.extra.Stop(10 * time.Second)
			if err != nil {
				return rows, err
			}
			rows[i].Runs = append(rows[i].Runs, t)
			rows[i].summarize()
			logf("lowrate %s %d q/s round %d %s: %.0f q/s, CPU %.0f%%, %.2f µs/query (load %s)", id, rate, round, c.name, t.QPS, t.CPUPercent, t.CPUPerQuery, loadAvg(1))
		}
	}
	return rows, nil
}

func lineCount(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// profileCPU is a 10 s dnsperf run against a server started with pprof, a CPU profile of 8 s of
// it, and its top entries.
func (b *bench) profileCPU(name string, c contender, file string) error {
	b.pprof = true
	s, err := c.start(strings.Replace(name, ".", ".profile.", 1))
	b.pprof = false
	if err != nil {
		return err
	}
	defer s.server.Stop(10 * time.Second)
	type result struct {
		rep DnsperfReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, _, err := b.dnsperf(file, 10, "-c", "8", "-q", strconv.Itoa(b.cfg.Outstanding))
		done <- result{rep, err}
	}()
	time.Sleep(time.Second)
	pb := b.path("profile." + name + ".cpu.pb.gz")
	ferr := fetchTo("http://"+b.cfg.addrServer()+":6060/debug/pprof/profile?seconds=8", pb)
	r := <-done
	if ferr != nil || r.err != nil {
		logf("profile %s not taken: %v %v", name, ferr, r.err)
		return nil
	}
	p := pprofTop(name, pb, "-nodecount=25")
	p.Summary = append([]string{fmt.Sprintf("Under dnsperf at %.0f QPS (load average %s).", r.rep.QPS, loadAvg(1))}, p.Summary...)
	b.res.Profiles = append(b.res.Profiles, p)
	return nil
}

// pprofTop is the top of a profile (go tool pprof -top): its summary lines and the first 15
// rows of its table.
func pprofTop(name, path string, args ...string) Profile {
	out, err := exec.Command("go", append(append([]string{"tool", "pprof", "-top"}, args...), path)...).Output()
	p := Profile{Name: name}
	if err != nil {
		logf("pprof %s: %v", path, err)
		return p
	}
	table := false
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		switch {
		case strings.Contains(l, "flat%"):
			table = true
		case strings.HasPrefix(l, "Duration:") || strings.HasPrefix(l, "Showing nodes"):
			p.Summary = append(p.Summary, l)
		}
		if table && len(p.Top) < 16 {
			p.Top = append(p.Top, l)
		}
	}
	return p
}
