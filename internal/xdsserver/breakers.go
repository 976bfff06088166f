package xdsserver

import (
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// circuitBreakers maps a model's circuit breakers onto a cluster's
// circuit_breakers, one DEFAULT-priority threshold: max_requests is the
// batches in flight over the version (absent when unbounded),
// max_pending_requests the queue bound (batching.max_queue_size, in rows;
// for Envoy and gRPC clients: the sidecar reads it from the metadata), and
// retry_budget the hedges' and retries' budget. The bounds Envoy has no
// field for (rows, per endpoint) travel in the metadata (resilienceMetadata).
func circuitBreakers(m *config.Model) *cluster.CircuitBreakers {
	b := m.CircuitBreakers
	if b == (config.CircuitBreakers{}) {
		b = config.DefaultCircuitBreakers()
	}
	th := &cluster.CircuitBreakers_Thresholds{
		Priority: core.RoutingPriority_DEFAULT,
		RetryBudget: &cluster.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: float64(b.RetryBudgetPercent)},
			MinRetryConcurrency: wrapperspb.UInt32(uint32(b.MinRetryConcurrency)),
		},
	}
	if b.MaxBatches > 0 {
		th.MaxRequests = wrapperspb.UInt32(uint32(b.MaxBatches))
	}
	if m.Batching.Enabled() {
		th.MaxPendingRequests = wrapperspb.UInt32(uint32(m.Batching.MaxQueueSize))
	}
	return &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{th}}
}

// resilienceMetadata is what the cluster's filter_metadata["batchmesh"]
// carries of a model's circuit breakers and hedging beyond the standard
// fields: the row and per-endpoint bounds, and the hedging settings.
func resilienceMetadata(m *config.Model) map[string]any {
	b, h := m.CircuitBreakers, m.Hedging
	if h == (config.Hedging{}) {
		h = config.DefaultHedging()
	}
	return map[string]any{
		"circuit_breakers": map[string]any{
			"max_rows":             b.MaxRows,
			"endpoint_max_batches": b.EndpointMaxBatches,
			"endpoint_max_rows":    b.EndpointMaxRows,
		},
		"hedging": map[string]any{
			"p99_multiple": h.P99Multiple,
			"min_delay":    h.MinDelay.String(),
		},
	}
}
