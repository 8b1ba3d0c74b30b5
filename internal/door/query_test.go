package door

import "testing"

func TestInZone(t *testing.T) {
	for _, tc := range []struct {
		name, zone string
		in         bool
	}{
		{"a.cluster.local.", "cluster.local.", true},
		{"cluster.local.", "cluster.local.", true},
		{"acluster.local.", "cluster.local.", false},
		{"x.", ".", true},
	} {
		if got := InZone([]byte(tc.name), tc.zone); got != tc.in {
			t.Errorf("%s in %s: %v, want %v", tc.name, tc.zone, got, tc.in)
		}
	}
}
