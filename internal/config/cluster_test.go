package config

import "testing"

func TestClusterNameRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name, model, version string
		ok                   bool
	}{
		{name: ClusterName("bert", "1"), model: "bert", version: "1", ok: true},
		{name: ClusterName("e5.small-v2", "2024_01"), model: "e5.small-v2", version: "2024_01", ok: true},
		{name: "batchmesh|bert", ok: false},
		{name: "batchmesh||1", ok: false},
		{name: "batchmesh|bert|", ok: false},
		{name: "outbound|8000||bert.default.svc.cluster.local", ok: false},
		{name: "", ok: false},
	} {
		m, v, ok := ParseClusterName(tt.name)
		if ok != tt.ok || (ok && (m != tt.model || v != tt.version)) {
			t.Errorf("ParseClusterName(%q) = %q, %q, %v; want %q, %q, %v", tt.name, m, v, ok, tt.model, tt.version, tt.ok)
		}
	}
}
