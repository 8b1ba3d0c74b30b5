// Command benchctl holds the Go side of bench/run.sh: the steps a shell script does badly.
//
//	benchctl freeport                      print a free TCP port on 127.0.0.1
//	benchctl secrets DIR                   admin token file and service-account key for the apiserver
//	benchctl kubeconfig ...                a kubeconfig for the local apiserver
//	benchctl ready ...                     wait for the apiserver's /readyz
//	benchctl load ...                      create Namespaces, Services, Pods and EndpointSlices, in parallel
//	benchctl etcd-compact ...              move etcd's revision on and compact it (forces a relist)
//	benchctl sync ...                      time until a DNS server answers a name as expected
//	benchctl mem ...                       sample a process's RSS and Go heap (prometheus endpoint)
//	benchctl fetch URL [OUT]               save a URL (pprof profiles; heap?gc=1 forces a GC)
//	benchctl latency FILE                  p50/p99/max from dnsperf -v output
//	benchctl walk ...                      a pod's ndots:5 search walk, counting queries
//	benchctl metric URL NAME               the sum of a prometheus metric's samples
//	benchctl api-requests -kubeconfig FILE LIST/WATCH requests the apiserver served, per resource
//	benchctl tcpload ...                   TCP load as stub resolvers make it: a connection per query
//	benchctl results RUN-DIR OUT.json      a run's figures as JSON with named fields (results.go)
//	benchctl plot RESULTS.json DIR         PNG charts of those figures (plot.go)
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchctl freeport|secrets|kubeconfig|ready|load|etcd-compact|sync|mem|fetch|latency|walk|metric|api-requests|tcpload|results|plot ...")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"freeport":     freePort,
		"secrets":      secrets,
		"kubeconfig":   kubeconfig,
		"ready":        ready,
		"load":         load,
		"etcd-compact": etcdCompact,
		"sync":         syncTime,
		"mem":          mem,
		"fetch":        fetch,
		"latency":      latency,
		"walk":         walk,
		"metric":       metric,
		"api-requests": apiRequests,
		"tcpload":      tcpLoad,
		"results":      results,
		"plot":         plotResults,
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
