package xdsclient

import (
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/batchmesh/batchmesh/internal/config"
)

// TestCircuitBreakersRoundTrip: a model's circuit breakers and hedging
// reach the sidecar through the cluster's circuit_breakers (max_requests,
// retry_budget) and metadata; zero values come back as the defaults, and
// hedging off stays off.
func TestCircuitBreakersRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		breakers config.CircuitBreakers
		hedging  config.Hedging
		want     config.CircuitBreakers
		wantH    config.Hedging
	}{
		{
			name:     "set",
			breakers: config.CircuitBreakers{MaxBatches: 8, MaxRows: 512, EndpointMaxBatches: 3, EndpointMaxRows: 192, RetryBudgetPercent: 50, MinRetryConcurrency: 2},
			hedging:  config.Hedging{P99Multiple: 4, MinDelay: 20 * time.Millisecond},
			want:     config.CircuitBreakers{MaxBatches: 8, MaxRows: 512, EndpointMaxBatches: 3, EndpointMaxRows: 192, RetryBudgetPercent: 50, MinRetryConcurrency: 2},
			wantH:    config.Hedging{P99Multiple: 4, MinDelay: 20 * time.Millisecond},
		},
		{name: "zero values", want: config.DefaultCircuitBreakers(), wantH: config.DefaultHedging()},
		{
			name:    "hedging off",
			hedging: config.Hedging{MinDelay: 50 * time.Millisecond},
			want:    config.DefaultCircuitBreakers(), wantH: config.Hedging{MinDelay: 50 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(90, 10, 3)
			cfg.Models[0].CircuitBreakers, cfg.Models[0].Hedging = tt.breakers, tt.hedging
			v := served(t, cfg)
			th := v.clusters[config.ClusterName("bert", "1")].GetCircuitBreakers().GetThresholds()
			if len(th) != 1 || th[0].GetMaxPendingRequests().GetValue() != 100 {
				t.Errorf("thresholds %v: want one with max_pending_requests 100 (max_queue_size)", th)
			}
			got, err := translate(v)
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Validate(); err != nil {
				t.Fatal(err)
			}
			m := got.Models[0]
			if m.CircuitBreakers != tt.want || m.Hedging != tt.wantH {
				t.Errorf("got %+v %+v, want %+v %+v", m.CircuitBreakers, m.Hedging, tt.want, tt.wantH)
			}
		})
	}
}

// TestCircuitBreakersBadBudget: a retry budget outside 1..100 percent is
// refused with the key named.
func TestCircuitBreakersBadBudget(t *testing.T) {
	v := served(t, testConfig(90, 10, 3))
	for _, c := range v.clusters {
		c.CircuitBreakers.Thresholds[0].RetryBudget.BudgetPercent = &typev3.Percent{Value: 150}
	}
	_, err := translate(v)
	if err == nil || !strings.Contains(err.Error(), "retry_budget.budget_percent: 150 is not 1 to 100") {
		t.Fatalf("err = %v, want the budget named", err)
	}
}

// FuzzClusterMetadata feeds clusterMetadata (which reads the circuit
// breakers and hedging with the batching and cache settings) arbitrary
// Cluster bytes, seeded with the control plane's own clusters: it never
// panics, and what it accepts has a retry budget in range.
func FuzzClusterMetadata(f *testing.F) {
	cfg := testConfig(90, 10, 3)
	cfg.Models[0].CircuitBreakers = config.CircuitBreakers{MaxBatches: 8, MaxRows: 512, EndpointMaxBatches: 3, EndpointMaxRows: 192, RetryBudgetPercent: 50, MinRetryConcurrency: 2}
	cfg.Models[0].Hedging = config.Hedging{MinDelay: time.Millisecond}
	for _, c := range served(f, cfg).clusters {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c cluster.Cluster
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		md, err := clusterMetadata(&c)
		if err != nil {
			return
		}
		if p := md.breakers.RetryBudgetPercent; p < 1 || p > 100 {
			t.Fatalf("accepted a retry budget of %d%%", p)
		}
	})
}
