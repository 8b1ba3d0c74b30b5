package main

import (
	"strings"
	"testing"
)

// -validate finds what startup would refuse: a plugin without the one it leans on in its block.
func TestCrossReferences(t *testing.T) {
	cases := []struct{ name, corefile, wantErr string }{
		{"autopath and k8s_external beside kubernetes", ".:53 {\n autopath @kubernetes\n k8s_external example.com\n kubernetes cluster.local\n}", ""},
		{"the same beside k8sdiscovery", ".:53 {\n autopath @k8sdiscovery\n k8sdiscovery_external example.com\n k8sdiscovery cluster.local\n}", ""},
		{"k8s_external beside k8sdiscovery", ".:53 {\n k8s_external example.com\n k8sdiscovery cluster.local\n}",
			"Corefile:2 - k8s_external needs the kubernetes plugin in the same server block (.:53); beside k8sdiscovery use k8sdiscovery_external"},
		{"k8sdiscovery_external alone", "example.com {\n k8sdiscovery_external\n}", "Corefile:2 - k8sdiscovery_external needs the k8sdiscovery plugin"},
		{"autopath at a plugin that is not in the block", ".:53 {\n autopath @kubernetes\n k8sdiscovery cluster.local\n}",
			"Corefile:2 - autopath @kubernetes needs the kubernetes plugin in the same server block"},
		{"autopath at a plugin without search paths", ".:53 {\n autopath @forward\n forward . 1.1.1.1\n}", "autopath @forward: forward does not give search paths"},
		{"autopath with a resolv.conf", ".:53 {\n autopath /etc/resolv.conf\n forward . 1.1.1.1\n}", ""},
		{"searchpath from k8sdiscovery without it", "cluster.local {\n searchpath {\n  source k8sdiscovery\n }\n}",
			"Corefile:3 - searchpath source k8sdiscovery needs the k8sdiscovery plugin"},
		{"in another block does not count", "a.example {\n k8sdiscovery cluster.local\n}\nb.example {\n k8sdiscovery_external\n}",
			"Corefile:5 - k8sdiscovery_external needs the k8sdiscovery plugin in the same server block (b.example)"},
	}
	for _, c := range cases {
		err := crossReferences("Corefile", []byte(c.corefile))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: %v, want %q", c.name, err, c.wantErr)
		}
	}
}
