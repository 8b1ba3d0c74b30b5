// Command dnsload is test/realnode's load client for the rollouts: it asks the first nameserver of
// /etc/resolv.conf (what kubelet wrote: the node role with dnsPolicy ClusterFirst) a fixed mix of
// names at a steady rate, each query over UDP from a fresh socket as a stub resolver does, with
// no retry, and prints one line per second:
//
//	sec UNIX SENT OK FAILED
//
// A query fails when no answer comes within -timeout, or the answer's rcode is not NOERROR, or it
// has no answer record. The first failures of each second are printed as
//
//	fail UNIX NAME REASON
//
// (at most -fail-lines a second). It runs until -duration passes or SIGTERM, then prints
// "total SENT OK FAILED".
//
//	dnsload -rate 1000 kubernetes.default.svc.cluster.local. www.example.com.
//
// A name "POD" stands for this pod's own A record, <ip-with-dashes>.<namespace>.pod.cluster.local.,
// from $POD_IP and $POD_NAMESPACE.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	rate := flag.Int("rate", 1000, "queries a second")
	timeout := flag.Duration("timeout", 2*time.Second, "how long to wait for each answer")
	duration := flag.Duration("duration", 10*time.Minute, "how long to run")
	server := flag.String("server", "", "host:port to ask (default: the first nameserver of /etc/resolv.conf)")
	failLines := flag.Int("fail-lines", 5, "failures printed per second at most")
	flag.Parse()
	names := make([]string, 0, flag.NArg())
	for _, n := range flag.Args() {
		if n == "POD" {
			n = strings.ReplaceAll(os.Getenv("POD_IP"), ".", "-") + "." + os.Getenv("POD_NAMESPACE") + ".pod.cluster.local."
		}
		names = append(names, dns.Fqdn(n))
	}
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "dnsload: no names")
		os.Exit(2)
	}
	if *server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			fmt.Fprintln(os.Stderr, "dnsload: no nameserver:", err)
			os.Exit(2)
		}
		*server = conf.Servers[0] + ":53"
	}
	fmt.Printf("dnsload: %d q/s to %s, timeout %v, names %s\n", *rate, *server, *timeout, strings.Join(names, " "))

	var sent, ok, failed atomic.Int64
	type second struct{ sent, ok, failed, printed int64 }
	var mu sync.Mutex
	seconds := map[int64]*second{}
	record := func(unix int64, good bool, name, reason string) {
		mu.Lock()
		defer mu.Unlock()
		s := seconds[unix]
		if s == nil {
			s = &second{}
			seconds[unix] = s
		}
		if good {
			s.ok++
			ok.Add(1)
			return
		}
		s.failed++
		failed.Add(1)
		if s.printed < int64(*failLines) {
			s.printed++
			fmt.Printf("fail %d %s %s\n", unix, name, reason)
		}
	}
	count := func(unix int64) {
		mu.Lock()
		s := seconds[unix]
		if s == nil {
			s = &second{}
			seconds[unix] = s
		}
		s.sent++
		mu.Unlock()
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	end := time.After(*duration)
	var wg sync.WaitGroup
	client := &dns.Client{Net: "udp", Timeout: *timeout}
	// Paced by the clock, not by ticks (a ticker drops ticks when the loop is late): every 5 ms
	// the queries due since the start go out.
	tick := time.NewTicker(5 * time.Millisecond)
	begin := time.Now()
	var due int64
	report := time.NewTicker(time.Second)
	next := 0
	lastReported := time.Now().Unix()
	flush := func(upTo int64) {
		mu.Lock()
		defer mu.Unlock()
		for t := lastReported; t < upTo; t++ {
			if s := seconds[t]; s != nil {
				fmt.Printf("sec %d %d %d %d\n", t, s.sent, s.ok, s.failed)
				delete(seconds, t)
			}
		}
		lastReported = upTo
	}
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-end:
			break loop
		case <-report.C:
			// A second is complete once its last query has had its timeout.
			flush(time.Now().Add(-*timeout - time.Second).Unix())
		case now := <-tick.C:
			for due = int64(now.Sub(begin).Seconds() * float64(*rate)); sent.Load() < due; {
				name := names[next%len(names)]
				next++
				unix := now.Unix()
				count(unix)
				sent.Add(1)
				wg.Add(1)
				go func() {
					defer wg.Done()
					m := new(dns.Msg)
					m.SetQuestion(name, dns.TypeA)
					m.RecursionDesired = true
					r, _, err := client.Exchange(m, *server)
					switch {
					case err != nil:
						record(unix, false, name, strings.ReplaceAll(err.Error(), " ", "_"))
					case r.Rcode != dns.RcodeSuccess:
						record(unix, false, name, dns.RcodeToString[r.Rcode])
					case len(r.Answer) == 0:
						record(unix, false, name, "no_answer")
					default:
						record(unix, true, name, "")
					}
				}()
			}
		}
	}
	tick.Stop()
	wg.Wait()
	flush(time.Now().Unix() + 1)
	fmt.Printf("total %d %d %d\n", sent.Load(), ok.Load(), failed.Load())
}
