package searchpath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredns/caddy"
)

func TestParseStanza(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string
	}{
		{"node source", "searchpath {\nnode_name n1\n}", ""},
		{"k8sdiscovery source", "searchpath cluster.local {\nsource k8sdiscovery\n}", ""},
		{"every option", "searchpath {\nnode_name n1\nkubeconfig /kc ctx\nresolv_conf /etc/r.conf\ncluster_domain example.local\n}", ""},
		{"node source needs a node name", "searchpath", "source node needs `node_name`"},
		{"bad source", "searchpath {\nsource everywhere\n}", "Testfile:2 - Error during parsing: source: want"},
		{"unknown option", "searchpath {\nnode_name n1\nndots 5\n}", "Testfile:3 - Error during parsing: unknown option \"ndots\""},
		{"extra argument", "searchpath {\nnode_name n1 n2\n}", "node_name: unexpected extra argument \"n2\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := caddy.NewTestController("dns", tc.input)
			_, err := parseStanza(c)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestHostSearchDomains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	body := "# comment\nnameserver 10.0.0.2\nsearch old.example\nsearch Corp.Example. lab.example corp.example\noptions ndots:2\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := hostSearchDomains(path)
	if err != nil || strings.Join(got, " ") != "corp.example lab.example" {
		t.Fatalf("got %v %v, want the last search line, deduplicated", got, err)
	}
	if got, err := hostSearchDomains(filepath.Join(t.TempDir(), "missing")); err != nil || got != nil {
		t.Fatalf("missing file: %v %v, want no domains", got, err)
	}
}
