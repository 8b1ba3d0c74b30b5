// Command benchctl is the benchmark harness of bench/: `benchctl run` runs the scenarios (every
// one a Go function) and writes bench/results.json, the plots and bench/RESULTS.md; bench/run.sh
// prepares the machine as root and runs it.
//
//	benchctl run                           the scenarios of $SCENARIOS (knobs: see bench/run.sh)
//	benchctl report [RESULTS.json [MD]]    RESULTS.md and its plots again from results.json (report.go, results.md.tmpl)
//	benchctl plot RESULTS.json DIR         PNG charts of those figures (plot.go)
//	benchctl walk ...                      a pod's ndots:5 search walk, counting queries (run pins it with taskset)
//	benchctl tcpload ...                   TCP load as stub resolvers make it: a connection per query
//	benchctl nodecache                     the quick node-cache A/B on loopback (bench/nodecache/bench.sh)
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchctl run|report|plot|walk|tcpload|nodecache ...")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"run":       run,
		"report":    report,
		"plot":      plotResults,
		"walk":      walk,
		"tcpload":   tcpLoad,
		"nodecache": nodecacheAB,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "benchctl: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := cmd(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "benchctl %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
