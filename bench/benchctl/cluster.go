package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/controlplane"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func freePort([]string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// secrets writes DIR/tokens.csv (one admin in system:masters), DIR/token and DIR/sa.key.
func secrets(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: secrets DIR")
	}
	dir := args[0]
	token, err := controlplane.NewToken()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		return err
	}
	return controlplane.WriteSecrets(dir, "bench-admin", token)
}

// kubeconfig -out FILE -server URL -ca FILE -token-file FILE: waits for the CA file (the
// apiserver writes its self-signed certificate at startup) and writes a kubeconfig with context
// "bench".
func kubeconfig(args []string) error {
	fs := flag.NewFlagSet("kubeconfig", flag.ContinueOnError)
	out := fs.String("out", "", "kubeconfig to write")
	server := fs.String("server", "", "apiserver URL")
	ca := fs.String("ca", "", "CA certificate file (waited for)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(*ca); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", *ca)
		}
		time.Sleep(100 * time.Millisecond)
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	return controlplane.WriteKubeconfig(*out, "bench", "bench-admin", *server, *ca, strings.TrimSpace(string(token)))
}

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

// ready -kubeconfig FILE -timeout D: polls /readyz until it says ok; prints the seconds waited.
func ready(args []string) error {
	fs := flag.NewFlagSet("ready", flag.ContinueOnError)
	kc := fs.String("kubeconfig", "", "kubeconfig")
	timeout := fs.Duration("timeout", 120*time.Second, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := newClient(*kc, 2*time.Second)
	if err != nil {
		return err
	}
	start := time.Now()
	var last error
	for time.Since(start) < *timeout {
		b, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && strings.TrimSpace(string(b)) == "ok" {
			fmt.Printf("%.1f\n", time.Since(start).Seconds())
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", *timeout, last)
}

// etcdCompact -endpoint URL: while the apiserver is down, writes one key (so etcd's revision
// moves past everything a watcher has seen) and compacts to the new revision, through etcd's
// JSON gateway. A watch resumed from an older resource version then gets "too old resource
// version" and the client lists everything again.
func etcdCompact(args []string) error {
	fs := flag.NewFlagSet("etcd-compact", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "etcd client URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	post := func(path string, body any) (map[string]any, error) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(*endpoint+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: %s %v", path, resp.Status, out)
		}
		return out, nil
	}
	enc := base64.StdEncoding.EncodeToString
	out, err := post("/v3/kv/put", map[string]string{"key": enc([]byte("/bench/relist-marker")), "value": enc([]byte(time.Now().String()))})
	if err != nil {
		return err
	}
	header, _ := out["header"].(map[string]any)
	rev, _ := header["revision"].(string)
	if rev == "" {
		return fmt.Errorf("no revision in %v", out)
	}
	if _, err := post("/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}); err != nil {
		return err
	}
	fmt.Println(rev)
	return nil
}

// apiRequests -kubeconfig FILE: what the apiserver served, since it started, for the resources a DNS
// watches: LIST and finished WATCH requests (apiserver_request_total counts a watch when it
// ends) and streaming lists (WATCHLIST: a watch with sendInitialEvents that has sent its initial
// events, apiserver_watch_list_duration_seconds_count). After a restart over a compacted etcd,
// a LIST or a WATCHLIST per resource and watcher shows that the watchers listed again, and
// EVENTS (apiserver_watch_events_total) about as many as there are objects, that they were sent
// everything again.
func apiRequests(args []string) error {
	fs := flag.NewFlagSet("api-requests", flag.ContinueOnError)
	kc := fs.String("kubeconfig", "", "kubeconfig")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := newClient(*kc, 60*time.Second)
	if err != nil {
		return err
	}
	b, err := client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return err
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
	var out []string
	var keys []string
	for _, verb := range []string{"LIST", "WATCHLIST", "WATCH", "EVENTS"} {
		for _, res := range []string{"namespaces", "services", "endpointslices", "pods"} {
			keys = append(keys, verb+" "+res)
		}
	}
	for _, k := range keys {
		if counts[k] > 0 {
			out = append(out, fmt.Sprintf("%s=%.0f", strings.ReplaceAll(k, " ", ":"), counts[k]))
		}
	}
	fmt.Println(strings.Join(out, " "))
	return nil
}
