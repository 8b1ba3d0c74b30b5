package plugincfg

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Plugin
		wantErr string
	}{
		{name: "upstream and external", in: "# c\n\nlog:log\nours:example.org/x/ours\n",
			want: []Plugin{{"log", "github.com/coredns/coredns/plugin/log"}, {"ours", "example.org/x/ours"}}},
		{name: "missing package", in: "log\n", wantErr: "plugin.cfg:1: want `name:package`"},
		{name: "duplicate", in: "log:log\nlog:log\n", wantErr: "already listed on line 1"},
		{name: "empty", in: "# nothing\n", wantErr: "no plugins"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("plugin %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestImportsDeduplicate(t *testing.T) {
	out, err := Imports("main", []Plugin{{"a", "x/p"}, {"b", "x/p"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), `"x/p"`); n != 1 {
		t.Fatalf("import of x/p appears %d times, want 1:\n%s", n, out)
	}
}
