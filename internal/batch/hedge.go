package batch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Hedge configures hedged attempts: a batch that has no answer after
// Multiple times its endpoint's recent p99 latency, or half the time left
// to its deadline if that comes first, and never sooner than MinDelay, is
// sent to another healthy endpoint too, while the batch's deadline leaves
// time; the first answer wins. The zero value hedges with the defaults.
type Hedge struct {
	// Multiple of the endpoint's p99 latency estimate after which a batch
	// is hedged; default DefaultHedgeMultiple (3). Negative turns hedging
	// off (a failed batch is still retried once).
	Multiple float64
	// MinDelay is the least wait before a hedge; default
	// DefaultHedgeMinDelay (50ms).
	MinDelay time.Duration
}

// Hedging defaults.
const (
	DefaultHedgeMultiple = 3
	DefaultHedgeMinDelay = 50 * time.Millisecond
)

func (h Hedge) withDefaults() Hedge {
	if h.Multiple == 0 {
		h.Multiple = DefaultHedgeMultiple
	}
	if h.MinDelay <= 0 {
		h.MinDelay = DefaultHedgeMinDelay
	}
	return h
}

// CallReporter is the optional method of a HealthReporter that counts
// data-path outcomes for outlier detection: the lane reports an attempt
// that got no answer within its hedge delay and lost to its hedge as a
// failed call (a timeout). *health.Table has it.
type CallReporter interface {
	ReportCall(address string, failed bool)
}

// latencyTail is a cheap estimate of an endpoint's batch latency
// distribution: a smoothed mean and mean deviation, as TCP's RTO estimator
// keeps (RFC 6298); mean + 4 deviations stands for the p99.
type latencyTail struct {
	mean, dev time.Duration
}

func (t *latencyTail) observe(d time.Duration) {
	if t.mean == 0 {
		t.mean, t.dev = d, d/2
		return
	}
	diff := d - t.mean
	t.mean += diff / 8
	t.dev += (diff.Abs() - t.dev) / 4
}

// p99 is the estimate, 0 before the first sample.
func (t latencyTail) p99() time.Duration { return t.mean + 4*t.dev }

// hedgeDelayLocked is how long a batch on e waits for an answer before it
// is hedged; 0 means never (hedging off, or no latency known yet).
func (l *Lane) hedgeDelayLocked(e *endpoint) time.Duration {
	h := l.cfg.Hedge
	p99 := e.tail.p99()
	if h.Multiple < 0 || p99 <= 0 {
		return 0
	}
	return max(h.MinDelay, time.Duration(h.Multiple*float64(p99)))
}

// attempt is one send of a batch to one endpoint.
type attempt struct {
	ep     *endpoint
	start  time.Time
	extra  bool // a hedge or a retry: it holds a share of the retry budget
	cancel context.CancelFunc
	// dropped: the lane gave up on it, its answer is ignored; returned:
	// its answer is in (both guarded by l.mu).
	dropped, returned bool
	outs              []inference.Tensor
	err               error
}

// unsent reports whether err says the attempt never reached its runtime:
// its connection could not be made. Sending the batch elsewhere then adds
// no load to the runtimes beyond the batch itself, so the retry budget,
// which guards them against retry storms, does not hold it back (a
// runtime restarting under load refuses every batch sent its way at once).
func unsent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retriable reports whether err may be cured by another endpoint.
func retriable(err error) bool {
	return errors.Is(err, inference.ErrUnavailable) || errors.Is(err, inference.ErrUpstream) || errors.Is(err, inference.ErrDeadline)
}

// send runs b on ep, whose slot the caller has taken at start, with at most
// one more attempt on another endpoint: a hedge when ep is late, a retry
// when it fails with a connection error or a 5xx. The first success (or
// refusal of the input) wins; the other attempt is cancelled and forgotten
// (its slot freed at once; the HTTP call runs until the batch's deadline,
// since the upstream client cannot abandon a call it began). It returns the
// winning answer and endpoint.
func (l *Lane) send(b *batch, ep *endpoint, start time.Time) ([]inference.Tensor, *endpoint, error) {
	done := make(chan *attempt, 2)
	first := l.launch(b, &attempt{ep: ep, start: start}, 1, done)
	live := []*attempt{first}
	var hedge <-chan time.Time
	l.mu.Lock()
	delay := l.hedgeDelayLocked(ep)
	l.mu.Unlock()
	// Leave the hedge at least half the time left (a p99 inflated by a
	// slow spell must not rule hedging out), but never hedge before
	// MinDelay.
	left := time.Until(b.deadline)
	if delay > left/2 {
		delay = max(left/2, l.cfg.Hedge.MinDelay)
	}
	if delay > 0 && left > delay {
		t := time.NewTimer(delay)
		defer t.Stop()
		hedge = t.C
	}
	tries := 1
	for {
		select {
		case <-hedge:
			hedge = nil
			if a := l.extraAttempt(b, first.ep, true, false); a != nil {
				tries++
				live = append(live, l.launch(b, a, tries, done))
			}
		case a := <-done:
			live = removeAttempt(live, a)
			if a.err != nil && retriable(a.err) && len(live) == 0 && tries == 1 {
				if r := l.extraAttempt(b, a.ep, false, unsent(a.err)); r != nil {
					tries++
					hedge = nil
					live = append(live, l.launch(b, r, tries, done))
					continue
				}
			}
			if a.err != nil && retriable(a.err) && len(live) > 0 {
				continue // the other attempt may still answer
			}
			l.drop(b, live, a, tries > 1)
			return a.outs, a.ep, a.err
		}
	}
}

// launch starts a's call in a goroutine that reports on done, unless the
// lane has dropped a by then.
func (l *Lane) launch(b *batch, a *attempt, n int, done chan<- *attempt) *attempt {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	l.mu.Lock()
	l.running++
	l.mu.Unlock()
	l.workers.run(func() {
		outs, err := l.call(ctx, b, a.ep, n)
		cancel()
		l.mu.Lock()
		dropped := a.dropped
		down := false
		if !dropped {
			a.outs, a.err, a.returned = outs, err, true
			l.finishLocked(a.ep, b, a.start, err)
			if down = err != nil && errors.Is(err, inference.ErrUnavailable); down {
				a.ep.healthy = false // no more batches until the health reporter turns it back on
			}
			if a.extra {
				l.retries--
			}
		}
		l.running--
		if dropped || err != nil {
			// A success is settled first (run schedules after it), so
			// that the cohort policy sees the answer before the freed
			// slot; anything else may free a slot the queue can use now.
			l.scheduleLocked(time.Now())
		}
		l.noteIdleLocked()
		l.mu.Unlock()
		if down && l.cfg.Health != nil {
			l.cfg.Health.ReportFailure(a.ep.Address, err)
		}
		if !dropped {
			done <- a
		}
	})
	return a
}

// drop cancels the attempts still running when winner has answered, frees
// their slots and counts the outcome. A primary attempt that lost to its
// hedge got no answer within its hedge delay: it counts as a timeout for
// outlier detection. A cancelled hedge says nothing of its endpoint.
func (l *Lane) drop(b *batch, live []*attempt, winner *attempt, hedged bool) {
	if !hedged {
		return
	}
	outcome := hedgeLost
	switch {
	case winner.err != nil:
		outcome = hedgeFailed
	case winner.extra:
		outcome = hedgeWon
	}
	var late []string
	l.mu.Lock()
	for _, a := range live {
		if a.returned {
			continue // answered meanwhile: its goroutine freed its slot
		}
		a.dropped = true
		a.cancel()
		l.releaseLocked(a.ep, b, a.start)
		if a.extra {
			l.retries--
		} else if winner.err == nil {
			late = append(late, a.ep.Address)
		}
	}
	l.mu.Unlock()
	l.m.hedges.Add(context.Background(), 1, l.m.hedgeAttrs[outcome])
	if cr, ok := l.cfg.Health.(CallReporter); ok {
		for _, addr := range late {
			cr.ReportCall(addr, true)
		}
	}
}

func removeAttempt(live []*attempt, a *attempt) []*attempt {
	for i, x := range live {
		if x == a {
			return append(live[:i], live[i+1:]...)
		}
	}
	return live
}

// extraAttempt picks another healthy endpoint than failed for a hedge or a
// retry of b, when b's deadline leaves room and the retry budget allows
// (a retry of an unsent attempt needs no budget), and takes a slot on it;
// nil otherwise.
func (l *Lane) extraAttempt(b *batch, failed *endpoint, hedge, unsent bool) *attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !b.deadline.After(now) {
		return nil
	}
	for i, e := range l.eps {
		l.loads[i] = inference.EndpointLoad{InFlightRows: e.rows, Weight: e.Weight,
			Eligible: e.healthy && e != failed && !l.endpointOpenLocked(e) && (!hedge || e.tail.mean < b.deadline.Sub(now))}
	}
	i := l.pick(b.pieces[0].p.req.Affinity)
	if i < 0 {
		return nil
	}
	if !unsent && !l.budgetAllowsLocked() {
		l.m.retryOverflow.Add(context.Background(), 1, l.m.attrs)
		return nil
	}
	e := l.eps[i]
	l.retries++
	e.busy++
	e.rows += b.rows
	e.starts = append(e.starts, now)
	return &attempt{ep: e, start: now, extra: true}
}

// Hedge outcomes, the values of batchmesh_hedges_total's outcome label:
// the hedge answered first (won), the first attempt did (lost), or every
// attempt failed (failed). A retry after a failure counts as a hedge too.
const (
	hedgeWon    = "won"
	hedgeLost   = "lost"
	hedgeFailed = "failed"
)

// newResilienceMetrics adds the hedging, retry budget and circuit breaker
// instruments to lm.
func newResilienceMetrics(m metric.Meter, model string, lm *laneMetrics) error {
	lm.hedgeAttrs = map[string]metric.MeasurementOption{}
	for _, o := range []string{hedgeWon, hedgeLost, hedgeFailed} {
		lm.hedgeAttrs[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("model", model), attribute.String("outcome", o)))
	}
	for i, name := range breakerNames {
		lm.breakerAttrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("model", model), attribute.String("breaker", name)))
	}
	var errs [3]error
	lm.hedges, errs[0] = m.Int64Counter("batchmesh_hedges",
		metric.WithDescription("Batches sent to a second endpoint (a hedge of a late batch or a retry of a failed one), by which attempt answered."))
	lm.retryOverflow, errs[1] = m.Int64Counter("batchmesh_retry_overflow",
		metric.WithDescription("Hedges and retries not sent because the retry budget was spent."))
	lm.circuitOpen, errs[2] = m.Int64Gauge("batchmesh_circuit_open",
		metric.WithDescription("1 while a circuit breaker holds batches back, else 0."))
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("batch: metrics: %w", err)
	}
	return nil
}

// zero exports the resilience series at zero.
func (lm *laneMetrics) zero() {
	for _, o := range lm.hedgeAttrs {
		lm.hedges.Add(context.Background(), 0, o)
	}
	lm.retryOverflow.Add(context.Background(), 0, lm.attrs)
	for _, o := range lm.breakerAttrs {
		lm.circuitOpen.Record(context.Background(), 0, o)
	}
}
