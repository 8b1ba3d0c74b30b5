package k8sdiscovery

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"
)

func TestParseStanza(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string // substring; empty means it must parse
		check   func(t *testing.T, c config)
	}{
		{name: "zones from the server block", input: "k8sdiscovery", check: func(t *testing.T, c config) {
			if len(c.zones) != 1 || c.zones[0] != "cluster.local." || c.podMode != podsDisabled || c.ttl != 5 || c.headlessTTL != 5 {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "every option", input: `k8sdiscovery Cluster.Local in-addr.arpa {
			kubeconfig /tmp/kc ctx
			endpoint https://10.0.0.1:6443
			namespaces a b
			labels app=web,tier!=cache
			pods verified
			ttl 30
			headless_ttl 2
			endpoint_pod_names
			ptr_hostname_only
			externalname_ip
			dns_service kube-system/dns
			fallthrough in-addr.arpa
			zonal
		}`, check: func(t *testing.T, c config) {
			if c.zones[0] != "cluster.local." || c.kubeconfig != "/tmp/kc" || c.kubeContext != "ctx" || c.endpoint != "https://10.0.0.1:6443" ||
				!c.namespaces["a"] || !c.namespaces["b"] || c.labelSelector != "app=web,tier!=cache" || c.podMode != podsVerified ||
				c.ttl != 30 || c.headlessTTL != 2 || !c.endpointPodName || !c.ptrHostnameOnly || !c.externalNameIP ||
				c.dnsService != "kube-system/dns" || !c.fall || c.fallthroughZones[0] != "in-addr.arpa" || !c.zonal {
				t.Errorf("parsed %+v", c)
			}
		}},
		{name: "upstream kubernetes options", input: `k8sdiscovery cluster.local {
			endpoint https://10.0.0.1:6443
			tls /c.crt /c.key /ca.crt
			apiserver_qps 50.5
			apiserver_burst 100
			apiserver_max_inflight 10
			noendpoints
			ignore empty_service
			startup_timeout 12s
			namespace_labels team=a,env!=dev
		}`, check: func(t *testing.T, c config) {
			if c.tlsCert != "/c.crt" || c.tlsKey != "/c.key" || c.tlsCA != "/ca.crt" || c.qps != 50.5 || c.burst != 100 ||
				c.maxInflight != 10 || !c.noEndpoints || !c.ignoreEmptyService || c.startupTimeout.String() != "12s" ||
				c.namespaceLabels != "team=a,env!=dev" {
				t.Errorf("parsed %+v", c)
			}
		}},
		{name: "startup_timeout default", input: "k8sdiscovery", check: func(t *testing.T, c config) {
			if c.startupTimeout != defaultStartupTimeout {
				t.Errorf("startup_timeout %v, want %v", c.startupTimeout, defaultStartupTimeout)
			}
		}},
		{name: "tls without endpoint", input: "k8sdiscovery {\ntls a b c\n}", wantErr: "Testfile:3 - Error during parsing: tls applies to the API server given by endpoint"},
		{name: "tls with two files", input: "k8sdiscovery {\nendpoint https://x\ntls a b\n}", wantErr: "Testfile:3 - Error during parsing: tls: want CERT KEY CACERT"},
		{name: "max_inflight below what the watch holds", input: "k8sdiscovery {\napiserver_max_inflight 2\n}", wantErr: "want 4 or more"},
		{name: "burst not an integer", input: "k8sdiscovery {\napiserver_burst 1.5\n}", wantErr: "apiserver_burst: want a non-negative number"},
		{name: "namespace_labels with namespaces", input: "k8sdiscovery {\nnamespaces a\nnamespace_labels x=y\n}", wantErr: "namespace_labels cannot be combined with namespaces"},
		{name: "bad namespace_labels", input: "k8sdiscovery {\nnamespace_labels a=b=c\n}", wantErr: "namespace_labels: want a label selector"},
		{name: "zonal without endpoints", input: "k8sdiscovery {\nzonal\nnoendpoints\n}", wantErr: "zonal needs the EndpointSlices"},
		{name: "multicluster", input: "k8sdiscovery cluster.local ClusterSet.Local {\nmulticluster clusterset.local\n}", check: func(t *testing.T, c config) {
			if len(c.multicluster) != 1 || c.multicluster[0] != "clusterset.local." {
				t.Errorf("multicluster: %v", c.multicluster)
			}
		}},
		{name: "multicluster without zones", input: "k8sdiscovery cluster.local clusterset.local {\nmulticluster\n}", wantErr: "Testfile:2 - Error during parsing: multicluster: want the zones"},
		{name: "multicluster zone not served", input: "k8sdiscovery cluster.local {\nmulticluster clusterset.local\n}", wantErr: "multicluster: clusterset.local. is not a forward zone of this k8sdiscovery"},
		{name: "multicluster with manifests", input: "k8sdiscovery cluster.local clusterset.local {\nmanifests /x\nmulticluster clusterset.local\n}", wantErr: "multicluster reads ServiceImports from an API server"},
		{name: "multicluster without endpoints", input: "k8sdiscovery cluster.local clusterset.local {\nmulticluster clusterset.local\nnoendpoints\n}", wantErr: "multicluster needs the EndpointSlices"},
		{name: "max_inflight with multicluster", input: "k8sdiscovery cluster.local clusterset.local {\nmulticluster clusterset.local\napiserver_max_inflight 4\n}", wantErr: "want 5 or more"},
		{name: "ignore something else", input: "k8sdiscovery {\nignore pods\n}", wantErr: "ignore: want empty_service"},
		{name: "bad startup_timeout", input: "k8sdiscovery {\nstartup_timeout soon\n}", wantErr: `startup_timeout: "soon" is not a duration`},
		{name: "headless_ttl follows ttl", input: "k8sdiscovery {\nttl 20\n}", check: func(t *testing.T, c config) {
			if c.headlessTTL != 20 {
				t.Errorf("headless ttl %d, want 20", c.headlessTTL)
			}
		}},
		{name: "unknown option names its line", input: "k8sdiscovery {\n  ttl 5\n  bogus 1\n}", wantErr: "Testfile:3 - Error during parsing: unknown option \"bogus\""},
		{name: "bad pods mode", input: "k8sdiscovery {\npods sometimes\n}", wantErr: "Testfile:2 - Error during parsing: pods: want disabled, insecure or verified"},
		{name: "ttl out of range", input: "k8sdiscovery {\nttl 99999\n}", wantErr: "ttl: want a number of seconds from 0 to 3600"},
		{name: "ttl not a number", input: "k8sdiscovery {\nttl five\n}", wantErr: "got \"five\""},
		{name: "bad label selector", input: "k8sdiscovery {\nlabels a=b=c\n}", wantErr: "labels: want a label selector"},
		{name: "endpoint without scheme", input: "k8sdiscovery {\nendpoint 10.0.0.1\n}", wantErr: "endpoint: want one URL"},
		{name: "kubeconfig without path", input: "k8sdiscovery {\nkubeconfig\n}", wantErr: "kubeconfig: want PATH [CONTEXT]"},
		{name: "flag with argument", input: "k8sdiscovery {\nexternalname_ip yes\n}", wantErr: "externalname_ip takes no arguments"},
		{name: "manifests and kubeconfig", input: "k8sdiscovery {\nmanifests /x\nkubeconfig /y\n}", wantErr: "manifests cannot be combined"},
		{name: "only reverse zones", input: "k8sdiscovery in-addr.arpa", wantErr: "want at least one forward zone"},
		{name: "dns_service without namespace", input: "k8sdiscovery {\ndns_service kube-dns\n}", wantErr: "dns_service: want NAMESPACE/NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := caddy.NewTestController("dns", tc.input)
			c.ServerBlockKeys = []string{"cluster.local:53"}
			cfg, err := parseStanza(c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

// TestSetupErrorNamesPlugin: a bad stanza fails startup with the plugin's name.
func TestSetupErrorNamesPlugin(t *testing.T) {
	c := caddy.NewTestController("dns", "k8sdiscovery {\nnope\n}")
	err := setup(c)
	if err == nil || !strings.HasPrefix(err.Error(), "plugin/k8sdiscovery: Testfile:2") {
		t.Fatalf("error %v, want it to start with plugin/k8sdiscovery: Testfile:2", err)
	}
}
