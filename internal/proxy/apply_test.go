package proxy

import (
	"fmt"
	"testing"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/config"
)

// applyConfig is a one-version model on two endpoints (no traffic is sent:
// Apply's lane bookkeeping is what is tested).
func applyConfig(t *testing.T, weights string, w1, w2, slots int) *config.Config {
	t.Helper()
	cfg, err := config.Parse("apply.yaml", fmt.Appendf(nil, `weights: %s
models:
  - name: m
    versions:
      - version: "1"
        endpoints: [{address: "127.0.0.1:1", weight: %d, slots: %d}, {address: "127.0.0.1:2", weight: %d}]
`, weights, w1, slots, w2))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func laneOf(p *Proxy) *batch.Lane { return p.st.Load().models["m"].versions[0].lane }

// TestApplyWeightsKeepLane checks that a change of endpoint weights only
// (what adaptive weights push every few seconds) keeps the version's lane,
// with what it learned, and hands it the new weights; while a change of
// anything else about the endpoints, or of the weights mode, builds a new
// lane; and that a refused config changes no weight.
func TestApplyWeightsKeepLane(t *testing.T) {
	p, err := New(Config{AllowAdaptive: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(applyConfig(t, config.WeightsAdaptive, 1, 1, 3)); err != nil {
		t.Fatal(err)
	}
	first := laneOf(p)
	if err := p.Apply(applyConfig(t, config.WeightsAdaptive, 1000, 333, 3)); err != nil {
		t.Fatal(err)
	}
	if laneOf(p) != first {
		t.Fatal("a weight change built a new lane")
	}
	eps, _ := first.Status()
	if eps[0].Weight != 1000 || eps[1].Weight != 333 {
		t.Errorf("lane weights %d, %d after the push; want 1000, 333", eps[0].Weight, eps[1].Weight)
	}

	bad := applyConfig(t, config.WeightsAdaptive, 5, 5, 3)
	bad.Models[0].Cache.Enabled, bad.Models[0].Batching.MaxBatchSize = true, 0
	if err := p.Apply(bad); err == nil {
		t.Fatal("Apply took a config it cannot serve (a cache without batching)")
	}
	if eps, _ := first.Status(); eps[0].Weight != 1000 || eps[1].Weight != 333 {
		t.Errorf("a refused config changed the weights to %d, %d", eps[0].Weight, eps[1].Weight)
	}

	if err := p.Apply(applyConfig(t, config.WeightsAdaptive, 1000, 333, 2)); err != nil {
		t.Fatal(err)
	}
	second := laneOf(p)
	if second == first {
		t.Error("a change of slots kept the old lane")
	}
	if err := p.Apply(applyConfig(t, config.WeightsStatic, 1000, 333, 2)); err != nil {
		t.Fatal(err)
	}
	if laneOf(p) == second {
		t.Error("a change from adaptive to static weights kept the lane (its concurrency adapts only under adaptive)")
	}
}
