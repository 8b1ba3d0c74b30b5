package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// newClient is a clientset for the kubeconfig at path: protobuf, no client-side rate limit, and
// the given request timeout.
func newClient(path string, timeout time.Duration) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = 100000, 100000
	cfg.Timeout = timeout
	return kubernetes.NewForConfig(cfg)
}

// apiRequests: what the apiserver served, since it started, for the resources a DNS
// watches: LIST and finished WATCH requests (apiserver_request_total counts a watch when it
// ends) and streaming lists (WATCHLIST: a watch with sendInitialEvents that has sent its initial
// events, apiserver_watch_list_duration_seconds_count). After a restart over a compacted etcd,
// a LIST or a WATCHLIST per resource and watcher shows that the watchers listed again, and
// EVENTS (apiserver_watch_events_total) about as many as there are objects, that they were sent
// everything again.
func apiRequests(kubeconfig string) (map[string]float64, error) {
	client, err := newClient(kubeconfig, 60*time.Second)
	if err != nil {
		return nil, err
	}
	b, err := client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return nil, err
	}
	counts := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		verbOverride := ""
		switch {
		case strings.HasPrefix(line, "apiserver_request_total{"):
		case strings.HasPrefix(line, "apiserver_watch_list_duration_seconds_count{"):
			verbOverride = "WATCHLIST"
		case strings.HasPrefix(line, "apiserver_watch_events_total{"):
			verbOverride = "EVENTS"
		default:
			continue
		}
		labels := map[string]string{}
		inner := line[strings.Index(line, "{")+1 : strings.LastIndex(line, "}")]
		for _, kv := range strings.Split(inner, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		if verbOverride != "" {
			labels["verb"] = verbOverride
		}
		if labels["resource"] == "" {
			labels["resource"] = strings.ToLower(labels["kind"]) + "s"
		}
		switch labels["resource"] {
		case "pods", "services", "endpointslices", "namespaces":
		default:
			continue
		}
		if labels["verb"] != "LIST" && labels["verb"] != "WATCH" && labels["verb"] != "WATCHLIST" && labels["verb"] != "EVENTS" {
			continue
		}
		var v float64
		fmt.Sscan(strings.TrimSpace(line[strings.LastIndex(line, " ")+1:]), &v)
		counts[labels["verb"]+" "+labels["resource"]] += v
	}
	return counts, nil
}

// watchEvents are the EVENTS counts of apiRequests, per resource, in the order namespaces,
// services, endpointslices, pods (those above 0).
func watchEvents(counts map[string]float64) []ResourceCount {
	var out []ResourceCount
	for _, res := range []string{"namespaces", "services", "endpointslices", "pods"} {
		if n := counts["EVENTS "+res]; n > 0 {
			out = append(out, ResourceCount{Resource: res, Count: int(n)})
		}
	}
	return out
}
