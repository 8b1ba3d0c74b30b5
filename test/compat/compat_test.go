// Package compat checks that the Corefiles operators already run work with k8sdiscovery in
// place of upstream's kubernetes plugin: the defaults of kubeadm, the coredns Helm chart, EKS
// and kubespray (testdata/, each naming its source), and the plugins operators put beside
// kubernetes (autopath, transfer, metadata with log).
package compat

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// renamed turns a Corefile for kubernetes into one for k8sdiscovery: the directive, autopath's
// @kubernetes and k8s_external (k8sdiscovery_external, its equivalent); metadata labels
// (kubernetes/...) keep their names, as k8sdiscovery sets upstream's labels.
func renamed(corefile string) string {
	corefile = regexp.MustCompile(`(?m)^(\s*)kubernetes(\s)`).ReplaceAllString(corefile, "${1}k8sdiscovery${2}")
	corefile = regexp.MustCompile(`(?m)^(\s*)k8s_external(\s)`).ReplaceAllString(corefile, "${1}k8sdiscovery_external${2}")
	return strings.ReplaceAll(corefile, "@kubernetes", "@k8sdiscovery")
}

// Each Corefile, with kubernetes renamed, passes ./coredns -validate (every plugin's setup, the
// stanza of k8sdiscovery with upstream's options included).
func TestStockCorefilesValidate(t *testing.T) {
	bin, err := filepath.Abs("../../coredns")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: build it first (./build.sh build): %v", bin, err)
	}
	files, err := filepath.Glob("testdata/*.Corefile")
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata Corefiles: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			conf := renamed(string(b))
			if !strings.Contains(conf, "k8sdiscovery cluster.local") || strings.Contains(conf, "\n    kubernetes ") {
				t.Fatalf("the rename missed the directive:\n%s", conf)
			}
			path := filepath.Join(t.TempDir(), "Corefile")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "-conf", path, "-validate").CombinedOutput()
			if err != nil {
				t.Fatalf("./coredns -validate: %v\n%s\nCorefile:\n%s", err, out, conf)
			}
			t.Logf("valid: %s", strings.TrimSpace(string(out)))
		})
	}
}

// What startup would refuse, -validate refuses too: upstream's k8s_external left beside
// k8sdiscovery (it reads only upstream's kubernetes), autopath at a plugin not in the block.
func TestValidateFindsStartupRefusals(t *testing.T) {
	bin, _ := filepath.Abs("../../coredns")
	for corefile, want := range map[string]string{
		".:53 {\n    k8s_external example.com\n    k8sdiscovery cluster.local\n}\n": "k8s_external needs the kubernetes plugin",
		".:53 {\n    autopath @kubernetes\n    k8sdiscovery cluster.local\n}\n":     "autopath @kubernetes needs the kubernetes plugin",
	} {
		path := filepath.Join(t.TempDir(), "Corefile")
		os.WriteFile(path, []byte(corefile), 0o644)
		out, err := exec.Command(bin, "-conf", path, "-validate").CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), path+":2") {
			t.Errorf("%q: %v %s, want a failure at line 2 saying %q", corefile, err, out, want)
		}
	}
}

// The same check refuses what k8sdiscovery refuses: an option it does not have yet.
func TestUnknownOptionFailsValidate(t *testing.T) {
	bin, _ := filepath.Abs("../../coredns")
	path := filepath.Join(t.TempDir(), "Corefile")
	os.WriteFile(path, []byte(".:53 {\n    k8sdiscovery cluster.local {\n        multicluster clusterset.local\n    }\n}\n"), 0o644)
	out, err := exec.Command(bin, "-conf", path, "-validate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `plugin/k8sdiscovery`) || !strings.Contains(string(out), `multicluster`) {
		t.Fatalf("want a failure naming k8sdiscovery and the option, got %v: %s", err, out)
	}
}
