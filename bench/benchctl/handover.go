package main

// Scenario handover: a node cache (instance A) serves on loopback while three clients ask it as
// fast as they can, with a mix of hits and misses: dnsperf over UDP; TCP as stub resolvers use
// it, a new connection per query (benchctl tcpload); and dnsperf over long-lived TCP connections
// with queries pipelined on each (which no stub resolver does, shown for its known limit); a
// second instance (B) starts beside A, A gets SIGTERM and hands over. Behind the node cache is a
// central role (./coredns: cluster.local from a template, example.org forwarded to a resolver that
// takes SLOW_DELAY to answer), so misses are in flight when A is told to stop. Per round, the rate
// each client reached, the queries it sent, lost (no answer within 5 s) and answered SERVFAIL.
//
// Queries, in a repeating pattern of 64: 47 hits (100 names, warmed first), 16 cluster-zone misses
// (each name new) and 1 miss answered by the slow resolver (each name new). Knobs beside run's:
// SLOW_DELAY (200ms), LOAD_SECONDS (8) and COMPARE_BINARY, a second binary to run the same rounds
// with (one built without the socket detach, say). Everything shares both CPUs, unpinned.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const handoverCentral = `cluster.local:5300 {
    bind 127.0.0.2
    template IN A cluster.local {
        answer "{{ .Name }} 30 IN A 10.96.0.42"
    }
}
example.org:5300 {
    bind 127.0.0.2
    forward . 127.0.0.3:5302
}
`

const handoverNodecache = `cluster.local:1053 example.org:1053 {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.2:5300
        timeout 2s
        max_concurrent 1024
    }
}
`

func (b *bench) scenarioHandover() error {
	slow := os.Getenv("SLOW_DELAY")
	if slow == "" {
		slow = "200ms"
	}
	seconds := 8
	if v := os.Getenv("LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("LOAD_SECONDS: %w", err)
		}
		seconds = n
	}
	logf("handover: %d rounds", b.cfg.Rounds)
	h := &Handover{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Commit: b.res.Run.Commit, LoadSeconds: seconds, SlowDelay: slow, Cores: runtimeCores()}
	files := map[string]string{}
	for _, q := range []struct{ name, prefix string }{{"udp", "u"}, {"tcp", "t"}, {"pipe", "p"}} {
		path, err := b.handoverQueries("handover."+q.name+".txt", q.prefix)
		if err != nil {
			return err
		}
		files[q.name] = path
	}
	var warm bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&warm, "web-%d.default.svc.cluster.local A\n", i)
	}
	warmFile, err := b.writeFile("handover.warm.txt", warm.String())
	if err != nil {
		return err
	}
	files["warm"] = warmFile
	centralConf, err := b.writeFile("Corefile.handover-central", handoverCentral)
	if err != nil {
		return err
	}
	conf, err := b.writeFile("Corefile.handover", handoverNodecache)
	if err != nil {
		return err
	}
	slowResolver, err := b.start("handover.slow", -1, b.cfg.Goceiling, "-listen", "127.0.0.3:5302", "-tcp", "-a", "192.0.2.80", "-delay", slow)
	if err != nil {
		return err
	}
	defer slowResolver.Stop(5 * time.Second)
	central, err := b.start("handover.central", -1, b.cfg.Coredns, "-conf", centralConf)
	if err != nil {
		return err
	}
	defer central.Stop(5 * time.Second)
	binaries := [][2]string{{b.cfg.Coredns, "./coredns"}}
	if c := os.Getenv("COMPARE_BINARY"); c != "" {
		binaries = append(binaries, [2]string{c, filepath.Base(c)})
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for _, bin := range binaries {
			rows, err := b.handoverRound(bin[0], bin[1], conf, files, seconds)
			if err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
			h.Rows = append(h.Rows, rows...)
			for _, r := range rows {
				logf("handover round %d %s %s: %d q/s, %d sent, %d lost, %d SERVFAIL", round, r.Binary, r.Clients, r.QPS, r.Sent, r.Lost, r.Servfail)
			}
		}
	}
	b.res.Handover = h
	return nil
}

// handoverQueries writes the pattern of 64, long enough that no miss name comes round twice.
func (b *bench) handoverQueries(name, prefix string) (string, error) {
	f, err := os.Create(b.path(name))
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range 640000 {
		switch k := i % 64; {
		case k == 63:
			fmt.Fprintf(w, "slow-%s%d.example.org A\n", prefix, i)
		case k%4 == 3:
			fmt.Fprintf(w, "miss-%s%d.default.svc.cluster.local A\n", prefix, i)
		default:
			fmt.Fprintf(w, "web-%d.default.svc.cluster.local A\n", i%100)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}

// handoverRound: A starts and is warmed; the three clients ask for seconds; 3 s in, B starts
// beside A; 1.5 s later A gets SIGTERM.
func (b *bench) handoverRound(bin, label, conf string, files map[string]string, seconds int) ([]HandoverRow, error) {
	a, err := b.start("handover.a", -1, bin, "-conf", conf)
	if err != nil {
		return nil, err
	}
	defer a.Stop(30 * time.Second)
	time.Sleep(time.Second)
	exec.Command("dnsperf", "-s", "127.0.0.1", "-p", "1053", "-d", files["warm"], "-n", "1").Run() //nolint:errcheck // a warm-up
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := strconv.Itoa(seconds)
	clients := []struct {
		kind string
		argv []string
	}{
		{"UDP", []string{"dnsperf", "-s", "127.0.0.1", "-p", "1053", "-d", files["udp"], "-l", l, "-c", "4", "-q", "200", "-t", "5"}},
		{"TCP", []string{self, "tcpload", "-server", "127.0.0.1:1053", "-d", files["tcp"], "-l", l, "-c", "32", "-t", "5s"}},
		{"TCP pipelined", []string{"dnsperf", "-m", "tcp", "-s", "127.0.0.1", "-p", "1053", "-d", files["pipe"], "-l", l, "-c", "8", "-q", "64", "-t", "5"}},
	}
	outs := make([][]byte, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { outs[i], _ = exec.Command(c.argv[0], c.argv[1:]...).CombinedOutput() })
	}
	time.Sleep(3 * time.Second)
	second, err := b.start("handover.b", -1, bin, "-conf", conf)
	if err != nil {
		wg.Wait()
		return nil, err
	}
	defer second.Stop(30 * time.Second)
	time.Sleep(1500 * time.Millisecond)
	a.Stop(60 * time.Second)
	wg.Wait()
	second.Stop(30 * time.Second)
	var rows []HandoverRow
	for i, c := range clients {
		rep, err := parseDnsperf(bytes.NewReader(outs[i]))
		if err != nil {
			return nil, fmt.Errorf("%s client: %w: %s", c.kind, err, tail(outs[i], 5))
		}
		rows = append(rows, HandoverRow{Binary: label, Clients: c.kind, QPS: int(rep.QPS), Sent: rep.Sent, Lost: rep.Lost, Servfail: rep.RcodeCounts["SERVFAIL"]})
	}
	return rows, nil
}
