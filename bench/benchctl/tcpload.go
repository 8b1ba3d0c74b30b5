package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// tcpLoad -server ADDR -d FILE -l SECONDS -c WORKERS [-t TIMEOUT]: asks the queries of FILE
// ("NAME TYPE" per line, in order, round and round) over TCP the way a stub resolver retrying a
// truncated answer does: a new connection per query, closed after its answer. WORKERS run at
// once, as fast as answers come. Prints a report in dnsperf's words (Queries sent / completed /
// lost, Response codes, Queries per second) so that scripts read both alike.
func tcpLoad(args []string) error {
	fs := flag.NewFlagSet("tcpload", flag.ContinueOnError)
	server := fs.String("server", "127.0.0.1:53", "address to ask")
	file := fs.String("d", "", "query file: NAME TYPE per line")
	seconds := fs.Int("l", 10, "how long to ask, in seconds")
	workers := fs.Int("c", 32, "queries in flight (one connection each)")
	timeout := fs.Duration("t", 5*time.Second, "a query with no answer by then is lost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	qs, err := readQueries(*file)
	if err != nil {
		return err
	}
	var next, sent, lost atomic.Int64
	var mu sync.Mutex
	rcodes := map[int]int64{}
	deadline := time.Now().Add(time.Duration(*seconds) * time.Second)
	begin := time.Now()
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			c := &dns.Client{Net: "tcp", Timeout: *timeout}
			for time.Now().Before(deadline) {
				q := qs[int(next.Add(1)-1)%len(qs)]
				m := new(dns.Msg)
				m.SetQuestion(q.name, q.qtype)
				sent.Add(1)
				r, _, err := c.Exchange(m, *server)
				if err != nil || r.Id != m.Id {
					lost.Add(1)
					continue
				}
				mu.Lock()
				rcodes[r.Rcode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	var codes []string
	for code, n := range rcodes {
		codes = append(codes, fmt.Sprintf("%s %d", dns.RcodeToString[code], n))
	}
	fmt.Printf("  Queries sent:         %d\n", sent.Load())
	fmt.Printf("  Queries completed:    %d\n", sent.Load()-lost.Load())
	fmt.Printf("  Queries lost:         %d\n", lost.Load())
	fmt.Printf("  Response codes:       %s\n", strings.Join(codes, ", "))
	fmt.Printf("  Queries per second:   %f\n", float64(sent.Load()-lost.Load())/elapsed.Seconds())
	return nil
}

type question struct {
	name  string
	qtype uint16
}

func readQueries(path string) ([]question, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var qs []question
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			continue
		}
		t, ok := dns.StringToType[strings.ToUpper(fields[1])]
		if !ok {
			return nil, fmt.Errorf("%s: unknown type %q", path, fields[1])
		}
		qs = append(qs, question{dns.Fqdn(fields[0]), t})
	}
	if len(qs) == 0 {
		return nil, fmt.Errorf("%s: no queries", path)
	}
	return qs, sc.Err()
}
