package searchpath

import (
	"fmt"
	"time"

	"github.com/clusterdns/clusterdns/internal/kube"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/plugin/pkg/upstream"
)

const pluginName = "searchpath"

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

// Client identity sources.
const (
	sourceNode         = "node"         // a watch of the pods on this node
	sourceK8sDiscovery = "k8sdiscovery" // the pod index of the k8sdiscovery plugin in this server
)

// config is the parsed searchpath stanza.
type config struct {
	zones         []string
	source        string
	nodeName      string
	kubeconfig    string
	kubeContext   string
	resolvConf    string
	clusterDomain string
	budget        time.Duration // the longest an expansion may take before the query goes on unexpanded
}

func setup(c *caddy.Controller) error {
	cfg, err := parseStanza(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	hostSearches, err := hostSearchDomains(cfg.resolvConf)
	if err != nil {
		return plugin.Error(pluginName, c.Errf("resolv_conf: %v", err))
	}
	sp := &SearchPath{config: cfg, hostSearches: hostSearches, resolver: upstream.New()}
	stop := make(chan struct{})
	switch cfg.source {
	case sourceK8sDiscovery:
		// Runs before k8sdiscovery's own startup (plugin.cfg order), so its pod watch is on from the start.
		c.OnStartup(func() error {
			h := dnsserver.GetConfig(c).Handler(sourceK8sDiscovery)
			idx, ok := h.(PodIndex)
			if !ok {
				return plugin.Error(pluginName, fmt.Errorf("source k8sdiscovery needs the k8sdiscovery plugin in the same server block"))
			}
			idx.WatchPods()
			ready, _ := h.(interface{ Ready() bool })
			sp.pods = indexSource{PodIndex: idx, ready: ready}
			return nil
		})
	default:
		c.OnStartup(func() error {
			client, err := kube.NewClient(kube.ClientConfig{Kubeconfig: cfg.kubeconfig, Context: cfg.kubeContext, UserAgent: "clusterdns (searchpath)"})
			if err != nil {
				return plugin.Error(pluginName, err)
			}
			pods := newNodePods(client, cfg.nodeName)
			pods.run(stop)
			sp.pods = pods
			return nil
		})
	}
	c.OnShutdown(func() error {
		close(stop)
		return nil
	})
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		sp.Next = next
		return sp
	})
	return nil
}

func parseStanza(c *caddy.Controller) (config, error) {
	cfg := config{source: sourceNode, resolvConf: "/etc/resolv.conf", clusterDomain: "cluster.local"}
	c.Next() // searchpath
	cfg.zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
	for c.NextBlock() {
		opt := c.Val()
		switch opt {
		case "source":
			if !c.NextArg() || (c.Val() != sourceNode && c.Val() != sourceK8sDiscovery) {
				return cfg, c.Errf("source: want %q or %q", sourceNode, sourceK8sDiscovery)
			}
			cfg.source = c.Val()
		case "node_name":
			if !c.NextArg() || c.Val() == "" {
				return cfg, c.Errf("node_name: want the name of this node (often {$NODE_NAME})")
			}
			cfg.nodeName = c.Val()
		case "kubeconfig":
			args := c.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return cfg, c.Errf("kubeconfig: want PATH [CONTEXT]")
			}
			cfg.kubeconfig = args[0]
			if len(args) == 2 {
				cfg.kubeContext = args[1]
			}
		case "resolv_conf":
			if !c.NextArg() {
				return cfg, c.Errf("resolv_conf: want the path of the node's resolv.conf")
			}
			cfg.resolvConf = c.Val()
		case "cluster_domain":
			if !c.NextArg() {
				return cfg, c.Errf("cluster_domain: want a domain such as cluster.local")
			}
			cfg.clusterDomain = c.Val()
		case "budget":
			if !c.NextArg() {
				return cfg, c.Errf("budget: want a duration such as 2s")
			}
			d, err := time.ParseDuration(c.Val())
			if err != nil || d <= 0 {
				return cfg, c.Errf("budget: %q is not a positive duration such as 2s", c.Val())
			}
			cfg.budget = d
		default:
			return cfg, c.Errf("unknown option %q (want source, node_name, kubeconfig, resolv_conf, cluster_domain or budget)", opt)
		}
		if c.NextArg() {
			return cfg, c.Errf("%s: unexpected extra argument %q", opt, c.Val())
		}
	}
	if cfg.source == sourceNode && cfg.nodeName == "" {
		return cfg, c.Errf("source node needs `node_name` (often {$NODE_NAME})")
	}
	return cfg, nil
}
