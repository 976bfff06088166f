package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// CircuitBreakers is a model's circuit_breakers: bounds on what one of its
// versions has in flight, over all its endpoints and per endpoint, and the
// retry budget of its hedges and retries. A batch past a bound waits in
// the queue, which refuses new requests with 429 and Retry-After once
// batching.max_queue_size rows wait. A zero bound means none; the zero
// value as a whole (a Config built in code, or from xDS without them)
// means DefaultCircuitBreakers.
type CircuitBreakers struct {
	MaxBatches         int // batches in flight over the version's endpoints; 0 or more
	MaxRows            int // rows in flight over them (a batch leaves while fewer are); 0 or more
	EndpointMaxBatches int // batches in flight on one endpoint; 0 or more
	EndpointMaxRows    int // rows in flight on one endpoint; 0 or more

	// RetryBudgetPercent of the batches in flight may be hedges or
	// retries, 1 to 100 (Envoy's budget_percent); MinRetryConcurrency,
	// 1 or more, are always allowed (Envoy's min_retry_concurrency).
	RetryBudgetPercent  int
	MinRetryConcurrency int
}

// DefaultCircuitBreakers returns the defaults of circuit_breakers' keys:
// no bounds beyond the endpoints' slots and the queue, Envoy's retry
// budget.
func DefaultCircuitBreakers() CircuitBreakers {
	return CircuitBreakers{RetryBudgetPercent: 20, MinRetryConcurrency: 3}
}

// Hedging is a model's hedging: a batch with no answer after P99Multiple
// times its endpoint's recent p99 latency, and at least MinDelay, is sent
// to another endpoint too while its deadline allows; the first answer
// wins. The zero value means DefaultHedging.
type Hedging struct {
	// P99Multiple is 1 or more; 0 turns hedging off (with MinDelay set,
	// as Parse leaves it).
	P99Multiple int
	// MinDelay is more than 0.
	MinDelay time.Duration
}

// DefaultHedging returns the defaults of hedging's keys.
func DefaultHedging() Hedging {
	return Hedging{P99Multiple: 3, MinDelay: 50 * time.Millisecond}
}

// Off reports whether hedging is turned off.
func (h Hedging) Off() bool { return h != (Hedging{}) && h.P99Multiple == 0 }

var (
	breakerKeys = []string{"max_batches", "max_rows", "endpoint_max_batches", "endpoint_max_rows", "retry_budget_percent", "min_retry_concurrency"}
	hedgingKeys = []string{"p99_multiple", "min_delay"}
)

func (d *decoder) breakers(n *yaml.Node, path string, b *CircuitBreakers) {
	d.mapping(n, path, breakerKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "max_batches":
			b.MaxBatches = d.int(v, path, b.MaxBatches)
		case "max_rows":
			b.MaxRows = d.int(v, path, b.MaxRows)
		case "endpoint_max_batches":
			b.EndpointMaxBatches = d.int(v, path, b.EndpointMaxBatches)
		case "endpoint_max_rows":
			b.EndpointMaxRows = d.int(v, path, b.EndpointMaxRows)
		case "retry_budget_percent":
			b.RetryBudgetPercent = d.int(v, path, b.RetryBudgetPercent)
		case "min_retry_concurrency":
			b.MinRetryConcurrency = d.int(v, path, b.MinRetryConcurrency)
		}
	})
}

func (d *decoder) hedging(n *yaml.Node, path string, h *Hedging) {
	d.mapping(n, path, hedgingKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "p99_multiple":
			h.P99Multiple = d.int(v, path, h.P99Multiple)
		case "min_delay":
			h.MinDelay = d.duration(v, path, h.MinDelay)
		}
	})
}

func (c *checker) resilience(m *Model, path string) {
	if b := m.CircuitBreakers; b != (CircuitBreakers{}) {
		bp := path + ".circuit_breakers"
		for _, f := range []struct {
			key string
			v   int
		}{{"max_batches", b.MaxBatches}, {"max_rows", b.MaxRows}, {"endpoint_max_batches", b.EndpointMaxBatches}, {"endpoint_max_rows", b.EndpointMaxRows}} {
			if f.v < 0 {
				c.errorf(bp+"."+f.key, "%d is negative; must be 1 or more, or 0 for no bound", f.v)
			}
		}
		if p := b.RetryBudgetPercent; p < 1 || p > 100 {
			c.errorf(bp+".retry_budget_percent", "%d is not a percentage; must be 1 to 100", p)
		}
		if b.MinRetryConcurrency < 1 {
			c.errorf(bp+".min_retry_concurrency", "%d must be 1 or more", b.MinRetryConcurrency)
		}
	}
	if h := m.Hedging; h != (Hedging{}) {
		hp := path + ".hedging"
		if h.P99Multiple < 0 {
			c.errorf(hp+".p99_multiple", "%d is negative; must be 1 or more, or 0 to turn hedging off", h.P99Multiple)
		}
		c.positive(hp+".min_delay", h.MinDelay)
	}
}
