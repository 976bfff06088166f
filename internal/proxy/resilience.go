package proxy

import (
	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/config"
)

// hedgeOf is the lane's hedging from a model's (the zero value: the
// defaults).
func hedgeOf(h config.Hedging) batch.Hedge {
	if h.Off() {
		return batch.Hedge{Multiple: -1}
	}
	return batch.Hedge{Multiple: float64(h.P99Multiple), MinDelay: h.MinDelay}
}

// budgetOf is the lane's retry budget from a model's circuit breakers.
func budgetOf(b config.CircuitBreakers) batch.RetryBudget {
	return batch.RetryBudget{Percent: float64(b.RetryBudgetPercent), MinConcurrency: b.MinRetryConcurrency}
}

// breakersOf is the lane's circuit breakers from a model's.
func breakersOf(b config.CircuitBreakers) batch.Breakers {
	return batch.Breakers{MaxBatches: b.MaxBatches, MaxRows: b.MaxRows, EndpointMaxBatches: b.EndpointMaxBatches, EndpointMaxRows: b.EndpointMaxRows}
}
