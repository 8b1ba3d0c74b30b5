package k8sdiscovery

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/plugin/pkg/upstream"
	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/labels"
)

const pluginName = "k8sdiscovery"

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

// Pod record modes.
const (
	podsDisabled = "disabled"
	podsInsecure = "insecure"
	podsVerified = "verified"
)

// config is the parsed k8sdiscovery stanza.
type config struct {
	zones []string // forward and reverse zones, lower case, fully qualified

	kubeconfig  string
	kubeContext string
	endpoint    string
	manifests   string

	namespaces      map[string]bool // empty: all namespaces
	labelSelector   string
	podMode         string
	ttl             uint32
	headlessTTL     uint32
	endpointPodName bool
	ptrHostnameOnly bool
	externalNameIP  bool
	dnsService      string // namespace/name of the Service whose addresses ns.dns.<zone> has

	fallthroughZones []string
	fall             bool

	// Options with upstream kubernetes's names and meanings.
	tlsCert, tlsKey, tlsCA string        // tls CERT KEY CACERT, with endpoint
	qps                    float32       // apiserver_qps
	burst                  int           // apiserver_burst
	maxInflight            int           // apiserver_max_inflight (0: no limit)
	noEndpoints            bool          // noendpoints: no EndpointSlice watch, no endpoint records
	ignoreEmptyService     bool          // ignore empty_service: NXDOMAIN for a ClusterIP Service without ready endpoints
	startupTimeout         time.Duration // startup_timeout: the longest startup waits for the first sync
	namespaceLabels        string        // namespace_labels: only namespaces whose labels match are served
	zonal                  bool          // zonal: <zone>.pin|prefer._zone.<svc>.<ns>.svc names for headless Services
	multicluster           []string      // multicluster: the zones (among zones) of ServiceImports' names
}

func defaultConfig() config {
	return config{podMode: podsDisabled, ttl: 5, headlessTTL: 5, dnsService: "kube-system/kube-dns", startupTimeout: defaultStartupTimeout}
}

func setup(c *caddy.Controller) error {
	cfg, err := parseStanza(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	k := newK8sDiscovery(cfg)
	k.upstream = upstream.New()
	k.hostSearch = hostSearchFromResolvConf("/etc/resolv.conf")

	c.OnStartup(func() error {
		if err := k.start(); err != nil {
			return plugin.Error(pluginName, err)
		}
		return nil
	})
	c.OnShutdown(func() error {
		instanceStopped(c.Context())
		k.stop()
		return nil
	})
	registerDoor(c.Context(), k, dnsserver.GetConfig(c), c.ServerBlockKeys)
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		k.Next = next
		return k
	})
	return nil
}

// parseStanza reads one k8sdiscovery block. Errors carry the Corefile name and line.
func parseStanza(c *caddy.Controller) (config, error) {
	cfg := defaultConfig()
	c.Next() // k8sdiscovery
	cfg.zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
	for i, z := range cfg.zones {
		cfg.zones[i] = strings.ToLower(dns.Fqdn(z))
	}
	headlessTTLSet := false
	for c.NextBlock() {
		opt := c.Val()
		args := c.RemainingArgs()
		switch opt {
		case "kubeconfig":
			if len(args) < 1 || len(args) > 2 {
				return cfg, c.Errf("kubeconfig: want PATH [CONTEXT]")
			}
			cfg.kubeconfig = args[0]
			if len(args) == 2 {
				cfg.kubeContext = args[1]
			}
		case "endpoint":
			if len(args) != 1 || !(strings.HasPrefix(args[0], "https://") || strings.HasPrefix(args[0], "http://")) {
				return cfg, c.Errf("endpoint: want one URL such as https://10.0.0.1:6443")
			}
			cfg.endpoint = args[0]
		case "manifests":
			if len(args) != 1 {
				return cfg, c.Errf("manifests: want one folder of Kubernetes YAML files")
			}
			cfg.manifests = args[0]
		case "namespaces":
			if len(args) == 0 {
				return cfg, c.Errf("namespaces: want one or more namespace names")
			}
			cfg.namespaces = map[string]bool{}
			for _, ns := range args {
				cfg.namespaces[ns] = true
			}
		case "labels":
			sel := strings.Join(args, " ")
			if _, err := labels.Parse(sel); err != nil || sel == "" {
				return cfg, c.Errf("labels: want a label selector such as app=web,tier!=cache: %v", err)
			}
			cfg.labelSelector = sel
		case "pods":
			if len(args) != 1 || (args[0] != podsDisabled && args[0] != podsInsecure && args[0] != podsVerified) {
				return cfg, c.Errf("pods: want disabled, insecure or verified")
			}
			cfg.podMode = args[0]
		case "ttl", "headless_ttl":
			if len(args) != 1 {
				return cfg, c.Errf("%s: want a number of seconds from 0 to 3600", opt)
			}
			n, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || n > 3600 {
				return cfg, c.Errf("%s: want a number of seconds from 0 to 3600, got %q", opt, args[0])
			}
			if opt == "ttl" {
				cfg.ttl = uint32(n)
			} else {
				cfg.headlessTTL, headlessTTLSet = uint32(n), true
			}
		case "endpoint_pod_names", "ptr_hostname_only", "externalname_ip":
			if len(args) != 0 {
				return cfg, c.Errf("%s takes no arguments", opt)
			}
			switch opt {
			case "endpoint_pod_names":
				cfg.endpointPodName = true
			case "ptr_hostname_only":
				cfg.ptrHostnameOnly = true
			default:
				cfg.externalNameIP = true
			}
		case "dns_service":
			if len(args) != 1 || strings.Count(args[0], "/") != 1 {
				return cfg, c.Errf("dns_service: want NAMESPACE/NAME of the cluster DNS Service")
			}
			cfg.dnsService = args[0]
		case "fallthrough":
			cfg.fall = true
			cfg.fallthroughZones = args
		case "namespace_labels":
			sel := strings.Join(args, " ")
			if _, err := labels.Parse(sel); err != nil || sel == "" {
				return cfg, c.Errf("namespace_labels: want a label selector such as team=payments,env!=dev: %v", err)
			}
			cfg.namespaceLabels = sel
		case "tls":
			if len(args) != 3 {
				return cfg, c.Errf("tls: want CERT KEY CACERT (files), for the API server given by endpoint")
			}
			cfg.tlsCert, cfg.tlsKey, cfg.tlsCA = args[0], args[1], args[2]
		case "apiserver_qps", "apiserver_burst", "apiserver_max_inflight":
			if len(args) != 1 {
				return cfg, c.Errf("%s: want one number", opt)
			}
			n, err := strconv.ParseFloat(args[0], 32)
			if err != nil || n < 0 || (opt != "apiserver_qps" && n != float64(int(n))) {
				return cfg, c.Errf("%s: want a non-negative number, got %q", opt, args[0])
			}
			switch opt {
			case "apiserver_qps":
				cfg.qps = float32(n)
			case "apiserver_burst":
				cfg.burst = int(n)
			default:
				cfg.maxInflight = int(n)
			}
		case "zonal":
			if len(args) != 0 {
				return cfg, c.Errf("zonal takes no arguments")
			}
			cfg.zonal = true
		case "multicluster":
			if len(args) == 0 {
				return cfg, c.Errf("multicluster: want the zones of the Multi-Cluster Services names, such as clusterset.local (each also a zone of k8sdiscovery)")
			}
			for _, a := range args {
				z := strings.ToLower(dns.Fqdn(a))
				if !slices.Contains(cfg.zones, z) || isReverseZone(z) {
					return cfg, c.Errf("multicluster: %s is not a forward zone of this k8sdiscovery (its zones: %s); name it after k8sdiscovery too, as in `k8sdiscovery cluster.local clusterset.local`",
						z, strings.Join(cfg.zones, " "))
				}
				cfg.multicluster = appendUnique(cfg.multicluster, z)
			}
		case "noendpoints":
			if len(args) != 0 {
				return cfg, c.Errf("noendpoints takes no arguments")
			}
			cfg.noEndpoints = true
		case "ignore":
			if len(args) != 1 || args[0] != "empty_service" {
				return cfg, c.Errf("ignore: want empty_service")
			}
			cfg.ignoreEmptyService = true
		case "startup_timeout":
			if len(args) != 1 {
				return cfg, c.Errf("startup_timeout: want a duration such as 5s")
			}
			d, err := time.ParseDuration(args[0])
			if err != nil || d < 0 {
				return cfg, c.Errf("startup_timeout: %q is not a duration such as 5s", args[0])
			}
			cfg.startupTimeout = d
		default:
			return cfg, c.Errf("unknown option %q (want kubeconfig, endpoint, tls, manifests, namespaces, namespace_labels, labels, pods, ttl, headless_ttl, "+
				"endpoint_pod_names, ptr_hostname_only, externalname_ip, dns_service, fallthrough, noendpoints, ignore empty_service, "+
				"startup_timeout, zonal, multicluster, apiserver_qps, apiserver_burst or apiserver_max_inflight)", opt)
		}
	}
	if !headlessTTLSet {
		cfg.headlessTTL = cfg.ttl
	}
	if cfg.zonal && cfg.noEndpoints {
		return cfg, c.Errf("zonal needs the EndpointSlices (their endpoints' zones); remove noendpoints")
	}
	if cfg.namespaceLabels != "" && len(cfg.namespaces) > 0 {
		return cfg, c.Errf("namespace_labels cannot be combined with namespaces (as upstream): pick one")
	}
	if cfg.tlsCert != "" && cfg.endpoint == "" {
		return cfg, c.Errf("tls applies to the API server given by endpoint; with a kubeconfig, put the certificates in the kubeconfig")
	}
	if need, what := cfg.requests(); cfg.maxInflight > 0 && cfg.maxInflight < need {
		return cfg, c.Errf("apiserver_max_inflight %d: the plugin keeps one request open per resource it watches (up to %d: %s); want %d or more, or leave it out",
			cfg.maxInflight, need, what, need)
	}
	if len(cfg.multicluster) > 0 && cfg.noEndpoints {
		return cfg, c.Errf("multicluster needs the EndpointSlices (Headless imports and <hostname>.<cluster> names come from them); remove noendpoints")
	}
	if len(cfg.multicluster) > 0 && cfg.manifests != "" {
		return cfg, c.Errf("multicluster reads ServiceImports from an API server (a custom resource); it cannot be combined with manifests")
	}
	if len(cfg.multicluster) > 0 && cfg.zonal {
		for _, z := range cfg.multicluster {
			log.Infof("zonal names are not served in the multicluster zone %s (as upstream)", z)
		}
	}
	if cfg.manifests != "" && (cfg.kubeconfig != "" || cfg.endpoint != "") {
		return cfg, c.Errf("manifests cannot be combined with kubeconfig or endpoint: pick one source of objects")
	}
	forward := 0
	for _, z := range cfg.zones {
		if !isReverseZone(z) {
			forward++
		}
	}
	if forward == 0 {
		return cfg, c.Errf("want at least one forward zone such as cluster.local, got only %v", cfg.zones)
	}
	return cfg, nil
}

// requests is the most list and watch requests the plugin keeps open at once (one per resource
// it may watch), and those resources.
func (cfg config) requests() (int, string) {
	if len(cfg.multicluster) > 0 {
		return maxRequests + 1, "services, endpointslices, namespaces, pods, serviceimports"
	}
	return maxRequests, "services, endpointslices, namespaces, pods"
}

// durationSince is time.Since, replaceable in tests.
var durationSince = time.Since
