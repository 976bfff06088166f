package batch

import (
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// SetHealthy marks an endpoint healthy or not; unhealthy endpoints get no
// batches. Unknown addresses are ignored.
func (l *Lane) SetHealthy(address string, healthy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.eps {
		if e.Address == address {
			e.healthy = healthy
		}
	}
	if healthy {
		l.scheduleLocked(time.Now())
	} else {
		l.failIfNoEndpointLocked()
	}
}

// failIfNoEndpointLocked answers every queued request with 503 when no
// endpoint is healthy: they would otherwise wait out their deadlines.
func (l *Lane) failIfNoEndpointLocked() {
	if l.healthyLocked() || l.queued == 0 {
		return
	}
	err := inference.Errorf(inference.KindUnavailable, "batch: model %q version %q has no healthy endpoint left", l.cfg.Model, l.cfg.Version)
	for _, g := range l.groups {
		for pr := range numPriorities {
			for _, pc := range g.q[pr] {
				l.failLocked(pc.p, err)
			}
			g.q[pr] = nil
		}
	}
}

// SetWeights replaces the endpoints' weights (in the order of
// Config.Endpoints; a weight <= 0 means 1) and, when picker is not nil, the
// picker (a ring hash is built from the weights). Queues, in-flight batches
// and what the lane learned of each endpoint are kept. A wrong count of
// weights is ignored.
func (l *Lane) SetWeights(weights []int, picker Picker) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(weights) != len(l.eps) {
		return
	}
	for i, w := range weights {
		l.eps[i].Weight = max(w, 1)
	}
	if picker != nil {
		l.cfg.Picker = picker
	}
	l.scheduleLocked(time.Now())
}

// Observe takes the queue an endpoint's runtime reported with an answer:
// the batches waiting there for a slot, the ones other sidecars sent
// included (ORCA named_metrics.queue_depth). Under AdaptiveSlots the lane
// lowers the endpoint's concurrency limit by one while the runtime has a
// queue, and raises it by one, up to Slots, when the runtime has none and
// the lane uses its whole limit — at most one step per batch latency, so
// that each step is seen before the next. Many sidecars sharing a runtime
// thus each send fewer, fuller batches instead of queueing small ones
// there. Without AdaptiveSlots, or for an unknown address, it does
// nothing.
func (l *Lane) Observe(address string, runtimeQueue int) {
	if !l.cfg.AdaptiveSlots {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for _, e := range l.eps {
		if e.Address != address || now.Sub(e.limitAt) < e.latency {
			continue
		}
		switch {
		case runtimeQueue > 0 && e.limit > 1:
			e.limit--
			e.limitAt = now
		case runtimeQueue == 0 && e.limit < e.Slots && e.busy >= e.limit:
			e.limit++
			e.limitAt = now
			l.scheduleLocked(now)
		}
	}
}

// Healthy reports whether some endpoint is healthy.
func (l *Lane) Healthy() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.healthyLocked()
}

func (l *Lane) healthyLocked() bool {
	for _, e := range l.eps {
		if e.healthy {
			return true
		}
	}
	return false
}

// EndpointStatus is an endpoint's state for the admin /clusters page.
type EndpointStatus struct {
	Address      string  `json:"address"`
	Weight       int     `json:"weight"`
	Slots        int     `json:"slots"`
	Limit        int     `json:"concurrency_limit,omitempty"` // batches it sends at once (absent for pass-through)
	Healthy      bool    `json:"healthy"`
	InFlight     int     `json:"in_flight_batches"`
	InFlightRows int     `json:"in_flight_rows"`
	LatencyMs    float64 `json:"ewma_latency_ms"`
	// FixedMs and PerRowMs are the fitted batch cost, fixed + per row
	// (the cohort policy's model; absent before a batch is seen).
	FixedMs  float64 `json:"fixed_ms,omitempty"`
	PerRowMs float64 `json:"per_row_ms,omitempty"`
	Batches  int64   `json:"batches"`
	Failures int64   `json:"failures"`
}

// Status returns each endpoint's state and the rows queued.
func (l *Lane) Status() (eps []EndpointStatus, queued int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.eps {
		fixed, perRow := e.cost.fit()
		eps = append(eps, EndpointStatus{
			FixedMs: float64(fixed) / 1e6, PerRowMs: float64(perRow) / 1e6,
			Address: e.Address, Weight: e.Weight, Slots: e.Slots, Limit: e.limit, Healthy: e.healthy,
			InFlight: e.busy, InFlightRows: e.rows, LatencyMs: float64(e.latency) / 1e6,
			Batches: e.batches, Failures: e.failures,
		})
	}
	return eps, l.queued
}
