package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/clusterdns/clusterdns/internal/plugincfg"
)

// TestGeneratedFilesMatchPluginCfg fails when plugin.cfg was edited without `go generate`.
func TestGeneratedFilesMatchPluginCfg(t *testing.T) {
	f, err := os.Open("../../plugin.cfg")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plugins, err := plugincfg.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want, err := plugincfg.Files("main", plugins)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range want {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v (run `go generate ./cmd/coredns`)", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s is stale against plugin.cfg: run `go generate ./cmd/coredns` (or ./build.sh)", name)
		}
	}
}

// TestDirectivesFollowPluginCfg checks the compiled-in order, not just the files on disk.
func TestDirectivesFollowPluginCfg(t *testing.T) {
	index := map[string]int{}
	for i, d := range directives {
		index[d] = i
	}
	for _, name := range []string{"k8sdiscovery", "nodecache", "searchpath"} {
		if _, ok := index[name]; !ok {
			t.Fatalf("directive %q missing from the build", name)
		}
	}
	order := [][2]string{
		{"searchpath", "autopath"}, {"searchpath", "nodecache"}, {"searchpath", "cache"},
		{"nodecache", "cache"}, {"k8sdiscovery", "kubernetes"}, {"nodecache", "k8sdiscovery"},
		{"k8sdiscovery", "forward"},
	}
	for _, o := range order {
		if index[o[0]] >= index[o[1]] {
			t.Errorf("directive %q must come before %q", o[0], o[1])
		}
	}
	for _, cloud := range []string{"route53", "azure", "clouddns"} {
		if _, ok := index[cloud]; ok {
			t.Errorf("cloud-provider plugin %q must not be in the build", cloud)
		}
	}
}
