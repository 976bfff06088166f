package proxy

import (
	"testing"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadreport"
)

// TestAllowAdaptive: weights: adaptive is accepted when the control plane
// sets the weights (AllowAdaptive, which sidecar -xds sets).
func TestAllowAdaptive(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte("weights: adaptive\nmodels:\n  - name: e\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Models: cfg, AllowAdaptive: true, Load: loadreport.New()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.Close()
}
