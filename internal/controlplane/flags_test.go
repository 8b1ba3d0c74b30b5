package controlplane

import (
	"slices"
	"testing"
)

func TestWithFlags(t *testing.T) {
	defaults := []string{"--secure-port=1", "--disable-admission-plugins=ServiceAccount", "--profiling=false"}
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"none", nil, defaults},
		{"replaces a default of the same name", []string{"--disable-admission-plugins=ServiceAccount,PodSecurity"},
			[]string{"--secure-port=1", "--disable-admission-plugins=ServiceAccount,PodSecurity", "--profiling=false"}},
		{"adds a new flag", []string{"--enable-priority-and-fairness=false"},
			append(slices.Clone(defaults), "--enable-priority-and-fairness=false")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := withFlags(defaults, tc.extra); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if defaults[1] != "--disable-admission-plugins=ServiceAccount" {
		t.Errorf("defaults changed: %q", defaults)
	}
}
