package main

import (
	"strconv"
	"strings"
	"testing"
)

const dnsperfReport = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 169.254.77.1 -p 53 -d q -l 10 -c 8 -q 100
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         203524
  Queries completed:    203424 (99.95%)
  Queries lost:         100 (0.05%)

  Response codes:       NOERROR 183082 (90.00%), NXDOMAIN 20342 (10.00%)
  Average packet size:  request 40, response 207
  Run time (s):         2.000433
  Queries per second:   101688.357457

  Average Latency (s):  0.000934 (min 0.000016, max 0.006111)
  Latency StdDev (s):   0.000587
`

func TestParseDnsperf(t *testing.T) {
	rep, err := parseDnsperf(strings.NewReader(dnsperfReport))
	if err != nil {
		t.Fatal(err)
	}
	want := DnsperfReport{Sent: 203524, Completed: 203424, Lost: 100, Rcodes: "NOERROR:90.00%,NXDOMAIN:10.00%",
		ResponseBytes: 207, RunSeconds: 2.000433, QPS: 101688.357457}
	if rep.Sent != want.Sent || rep.Completed != want.Completed || rep.Lost != want.Lost || rep.Rcodes != want.Rcodes ||
		rep.ResponseBytes != want.ResponseBytes || rep.RunSeconds != want.RunSeconds || rep.QPS != want.QPS {
		t.Errorf("got %+v\nwant %+v", rep, want)
	}
	if rep.RcodeCounts["NXDOMAIN"] != 20342 || rep.RcodeCounts["SERVFAIL"] != 0 {
		t.Errorf("rcode counts %v", rep.RcodeCounts)
	}
}

// tcpload prints its report in dnsperf's words; the handover reads both alike.
func TestParseTCPLoadReport(t *testing.T) {
	rep, err := parseDnsperf(strings.NewReader("  Queries sent:         27100\n  Queries completed:    27098\n  Queries lost:         2\n  Response codes:       NOERROR 27000, SERVFAIL 98\n  Queries per second:   3306.2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 27100 || rep.Lost != 2 || rep.RcodeCounts["SERVFAIL"] != 98 || int(rep.QPS) != 3306 {
		t.Errorf("got %+v", rep)
	}
}

func TestParseDnsperfRefusesAnUnfinishedRun(t *testing.T) {
	_, err := parseDnsperf(strings.NewReader("Error: socket: Cannot assign requested address\n"))
	if err == nil {
		t.Fatal("want an error for a report without its statistics")
	}
}

func TestLatencies(t *testing.T) {
	var b strings.Builder
	b.WriteString("[Status] Sending queries\n> T web-1.default.svc.cluster.local A\n")
	for i := 1; i <= 100; i++ {
		b.WriteString("> NOERROR web-1.default.svc.cluster.local A ")
		b.WriteString(strconv.FormatFloat(float64(i)/1000, 'f', 6, 64))
		b.WriteString("\n")
	}
	lat, err := latenciesOf(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	p := percentiles(lat)
	if p.N != 100 || p.P50 != 51 || p.P99 != 100 || p.Max != 100 {
		t.Errorf("got %+v (a timeout counted, or percentiles off)", p)
	}
}
