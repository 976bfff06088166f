package batch

// RetryBudget bounds the hedges and retries of a lane in flight at once,
// as Envoy's retry budget does: Percent of the batches in flight, but never
// fewer than MinConcurrency. A hedge or retry past it is not sent (counted
// in batchmesh_retry_overflow_total). The zero value is Envoy's default.
type RetryBudget struct {
	// Percent of the batches in flight that may be hedges or retries;
	// default DefaultRetryBudgetPercent (20).
	Percent float64
	// MinConcurrency is the hedges and retries always allowed at once;
	// default DefaultMinRetryConcurrency (3).
	MinConcurrency int
}

// Retry budget defaults, as Envoy's.
const (
	DefaultRetryBudgetPercent  = 20
	DefaultMinRetryConcurrency = 3
)

func (r RetryBudget) withDefaults() RetryBudget {
	if r.Percent <= 0 {
		r.Percent = DefaultRetryBudgetPercent
	}
	if r.MinConcurrency <= 0 {
		r.MinConcurrency = DefaultMinRetryConcurrency
	}
	return r
}

// budgetAllowsLocked reports whether one more hedge or retry fits the
// budget.
func (l *Lane) budgetAllowsLocked() bool {
	active := 0
	for _, e := range l.eps {
		active += e.busy
	}
	allowed := max(l.cfg.RetryBudget.MinConcurrency, int(l.cfg.RetryBudget.Percent*float64(active)/100))
	return l.retries < allowed
}
