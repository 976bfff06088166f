package xdsclient

import (
	"fmt"
	"math"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// resilience reads a batchmesh cluster's circuit breakers and hedging:
// circuit_breakers' DEFAULT-priority threshold (max_requests: batches in
// flight, absent for no bound; retry_budget) and the metadata's
// circuit_breakers and hedging (f, the cluster's filter_metadata fields).
// max_pending_requests is ignored: the queue bound, in rows, is
// batching.max_queue_size in the metadata. Absent values take their
// defaults.
func resilience(c *cluster.Cluster, f map[string]*structpb.Value, r *mdReader) (config.CircuitBreakers, config.Hedging) {
	b, h := config.DefaultCircuitBreakers(), config.DefaultHedging()
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() != core.RoutingPriority_DEFAULT {
			continue
		}
		if v := th.GetMaxRequests(); v != nil {
			b.MaxBatches = clampInt(v.GetValue())
		}
		if rb := th.GetRetryBudget(); rb != nil {
			if p := rb.GetBudgetPercent(); p != nil {
				if v := p.GetValue(); v >= 1 && v <= 100 {
					b.RetryBudgetPercent = int(math.Round(v))
				} else {
					r.fail("circuit_breakers.retry_budget.budget_percent", fmt.Errorf("%v is not 1 to 100", v))
				}
			}
			if v := rb.GetMinRetryConcurrency(); v != nil {
				b.MinRetryConcurrency = clampInt(v.GetValue())
			}
		}
	}
	if m := r.sub(f, "circuit_breakers"); m != nil {
		b.MaxRows = r.int(m, "max_rows", b.MaxRows)
		b.EndpointMaxBatches = r.int(m, "endpoint_max_batches", b.EndpointMaxBatches)
		b.EndpointMaxRows = r.int(m, "endpoint_max_rows", b.EndpointMaxRows)
	}
	if m := r.sub(f, "hedging"); m != nil {
		h.P99Multiple = r.int(m, "p99_multiple", h.P99Multiple)
		h.MinDelay = r.duration(m, "min_delay", h.MinDelay)
	}
	return b, h
}

func clampInt(v uint32) int { return int(min(v, math.MaxInt32)) }
