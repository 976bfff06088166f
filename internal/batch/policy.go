package batch

import (
	"math"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// Policy is the rule that decides when a batch that could wait is sent.
type Policy string

// The policies of Config.Policy (the batching.batch_policy setting).
const (
	// PolicyTransit keeps one batch in transit per endpoint while every
	// slot is busy and sends it MaxQueueDelay before the running batch is
	// predicted to end (the package comment). It is the zero value's
	// policy.
	PolicyTransit Policy = "transit"
	// PolicyCohort learns whether answered callers come straight back
	// (closed-loop callers) and, when they do, holds the next batch for
	// them instead of splitting them into cohorts: see cohortHoldLocked.
	// Without such callers it decides as PolicyTransit.
	PolicyCohort Policy = "cohort"
)

// ParsePolicy parses a policy name; "" is PolicyTransit.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case "", PolicyTransit:
		return PolicyTransit, nil
	case PolicyCohort:
		return PolicyCohort, nil
	}
	return "", inference.Errorf(inference.KindInvalid, "batch: batch_policy %q is not one of %s, %s", s, PolicyCohort, PolicyTransit)
}

// Constants of the cohort policy.
const (
	// minShare is the share of answered rows that must come back within
	// the echo window for the lane to hold batches for them.
	minShare = 0.5
	// arrivalRing is how many recent arrivals the lane remembers, to count
	// the rows that arrived in the window before an answer.
	arrivalRing = 256
	// costKeep is the weight the cost fit keeps of its past at each batch.
	costKeep = 0.95
)

// echo is what the lane learns of callers that return after their answer.
// After each batch's answer it opens a window of MaxQueueDelay and counts
// the rows that arrive in it, less those that arrived in the same length of
// time before the answer (the traffic that would have come anyway).
// share is the mean of that count over the rows answered, and ret the mean
// time by which the last returning row came.
type echo struct {
	at   [arrivalRing]time.Time
	rows [arrivalRing]int
	n    int // arrivals recorded; the next goes to n % arrivalRing

	start  time.Time // of the open window; zero when none is open
	win    time.Duration
	rowsOf int // rows answered at start
	before int // rows that arrived in the window's length before start
	in     int // rows that arrived since start
	last   time.Duration

	learned bool
	share   float64
	ret     time.Duration

	short     int64     // batches that left with callers of the last answer still out
	shortOpen time.Time // the window whose answer such a batch was counted for
}

// arrived records rows arriving at now.
func (e *echo) arrived(now time.Time, rows int) {
	e.expire(now)
	i := e.n % arrivalRing
	e.at[i], e.rows[i] = now, rows
	e.n++
	switch {
	case e.start.IsZero():
	case now.Before(e.start):
		// It arrived before the answer but reached the lane's lock
		// after it: traffic from before, not a caller coming back.
		e.before += rows
	default:
		e.in += rows
		e.last = now.Sub(e.start)
	}
}

// answered opens a window for rows answered at now, closing the open one.
func (e *echo) answered(now time.Time, rows int, w time.Duration) {
	if w <= 0 || rows <= 0 {
		return
	}
	// Rows that came back to the window still open belong to its answer,
	// not to the traffic before this one.
	from, to := now.Add(-w), now
	if !e.start.IsZero() {
		to = e.start
	}
	e.close()
	e.start, e.win, e.rowsOf, e.in, e.last = now, w, rows, 0, 0
	e.before = 0
	for k := 1; k <= min(e.n, arrivalRing); k++ {
		i := (e.n - k) % arrivalRing
		if e.at[i].Before(from) {
			break
		}
		if e.at[i].Before(to) || to.Equal(now) {
			e.before += e.rows[i]
		}
	}
}

// expire closes the open window once its length has passed.
func (e *echo) expire(now time.Time) {
	if !e.start.IsZero() && now.Sub(e.start) >= e.win {
		e.close()
	}
}

// close folds the open window into share and ret.
func (e *echo) close() {
	if e.start.IsZero() {
		return
	}
	back := e.in - e.before
	// Not clamped at 0: the noise of Poisson arrivals averages out.
	s := min(max(float64(back)/float64(e.rowsOf), -1), 1)
	e.share += (s - e.share) / 8 // from 0: six windows of full returns pass minShare
	if back > 0 {
		if e.ret == 0 {
			e.ret = e.last
		}
		e.ret += (e.last - e.ret) / 4
	}
	e.learned = true
	e.start = time.Time{}
}

// missing is how many of the rows answered when the open window opened
// have not come back yet; 0 when none is open.
func (e *echo) missing() int {
	if e.start.IsZero() {
		return 0
	}
	return max(e.rowsOf-e.in, 0)
}

// returning reports whether most answered callers come straight back.
func (e *echo) returning() bool { return e.learned && e.share >= minShare }

// costModel fits an endpoint's batch latency as fixed + perRow·rows by
// least squares over its recent batches, each weighted costKeep^age.
type costModel struct {
	s0, sn, snn, sl, snl float64       // sums of 1, n, n², latency, n·latency (latency in ns)
	fixed, perRow        time.Duration // the last fit over batches of several sizes
}

func (m *costModel) observe(rows int, lat time.Duration) {
	n, l := float64(rows), float64(lat)
	m.s0 = m.s0*costKeep + 1
	m.sn = m.sn*costKeep + n
	m.snn = m.snn*costKeep + n*n
	m.sl = m.sl*costKeep + l
	m.snl = m.snl*costKeep + n*l
	if a, b, ok := m.solve(); ok {
		m.fixed, m.perRow = a, b
	}
}

// fit returns the fixed and per-row cost. While the recent batches have
// (nearly) one size, it is the last fit over several sizes, or, before
// any, all of the mean latency counts as fixed. Zero when nothing was
// observed.
func (m *costModel) fit() (fixed, perRow time.Duration) {
	if a, b, ok := m.solve(); ok {
		return a, b
	}
	if m.fixed > 0 || m.perRow > 0 {
		return m.fixed, m.perRow
	}
	if m.s0 == 0 {
		return 0, 0
	}
	return time.Duration(m.sl / m.s0), 0
}

// solve is the least-squares fit; ok is false while the batches weighed
// have (nearly) one size.
func (m *costModel) solve() (fixed, perRow time.Duration, ok bool) {
	if m.s0 == 0 {
		return 0, 0, false
	}
	mean := m.sl / m.s0
	variance := m.snn/m.s0 - (m.sn/m.s0)*(m.sn/m.s0)
	if variance < 0.25 {
		return 0, 0, false
	}
	b := (m.s0*m.snl - m.sn*m.sl) / (m.s0*m.snn - m.sn*m.sn)
	a := (m.sl - b*m.sn) / m.s0
	switch {
	case b < 0:
		a, b = mean, 0
	case a < 0:
		a, b = 0, m.sl/m.sn
	}
	return time.Duration(a), time.Duration(b), true
}

// predict is the fitted latency of a batch of rows, or the endpoint's
// mean latency when nothing was fitted.
func (e *endpoint) predict(rows float64) time.Duration {
	a, b := e.cost.fit()
	if a == 0 && b == 0 {
		return e.latency
	}
	return (a + time.Duration(math.Round(rows*float64(b)))).Round(time.Microsecond)
}

// holdLocked is the policy's answer for g's next batch, bound for ep (idle
// when ep has a free slot): hold it until at (the lane arms its timer), or,
// with wait and a zero at, until a running batch ends; neither means send
// now. A full batch never waits.
func (l *Lane) holdLocked(g *group, ep *endpoint, idle bool, now time.Time) (at time.Time, wait bool) {
	if g.rows >= l.cfg.MaxBatchSize {
		return time.Time{}, false
	}
	if l.cfg.Policy == PolicyCohort {
		if at, wait, ok := l.cohortHoldLocked(g, ep, idle, now); ok {
			return at, wait
		}
	}
	if idle {
		return time.Time{}, false
	}
	at = l.sendAtLocked(ep)
	return at, at.After(now)
}

// cohortHoldLocked is the cohort policy's decision; ok is false where it
// has nothing to add to the transit policy's. It holds only for callers
// that come back (share ≥ minShare within MaxQueueDelay of their answer),
// and only when the runtime idling for their return time costs less than
// the fixed cost of the separate batch they would otherwise need:
//
//   - with a free slot, after an answer whose callers are not all back
//     yet, until they are, or 3/2 of their mean return time has passed
//     since the answer, whichever is first (a batch that leaves without
//     the late ones would cost the runtime a whole fixed cost more for
//     them, which every row after it waits for);
//   - with every slot busy, instead of sending a batch in transit, until
//     the running batch ends (its answer then opens the window above), so
//     that the rows waiting and the callers of the running batch leave in
//     one batch instead of two alternating cohorts.
//
// A hold never outlasts MaxQueueDelay after the slot freed or the oldest
// row arrived, whichever is later, nor lets any member's deadline pass
// before the batch's predicted end. Not sending in transit is worth it
// only while the rows it makes wait (queued × return time) are fewer than
// those it saves (expected × fixed cost). A lone caller never waits: it is
// the whole echo.
func (l *Lane) cohortHoldLocked(g *group, ep *endpoint, idle bool, now time.Time) (time.Time, bool, bool) {
	w := l.cfg.MaxQueueDelay
	e := &l.echo
	e.expire(now)
	if !l.cohortOnLocked(ep) {
		return time.Time{}, false, false
	}
	q := float64(g.rows)
	oldest, deadline := l.headLocked(g)
	if idle {
		missing := e.missing()
		if missing == 0 {
			return time.Time{}, false, true // everyone is back: send
		}
		ret := e.ret.Round(time.Microsecond)
		until := e.start.Add(min(w, ret+ret/2))
		until = minTime(until, maxTime(ep.freedAt, oldest).Add(w))
		until = minTime(until, deadline.Add(-ep.predict(q+float64(missing))))
		hold := until.Sub(now)
		if hold <= 0 {
			if !e.shortOpen.Equal(e.start) {
				e.short++ // counted once per answer: a batch that found every row expired tries again
				e.shortOpen = e.start
			}
			return time.Time{}, false, true
		}
		return until, true, true
	}
	if ep.busy == 0 {
		return time.Time{}, false, false
	}
	expect := e.share * float64(ep.rows) / float64(ep.busy)
	fixed, _ := ep.cost.fit()
	free := ep.freeAt()
	if expect < 0.5 || q+expect > float64(l.cfg.MaxBatchSize) || free.IsZero() ||
		q*float64(e.ret) >= expect*float64(fixed) ||
		free.Add(e.ret).Add(ep.predict(q+expect)).After(deadline) {
		return time.Time{}, false, false
	}
	return time.Time{}, true, true
}

// PolicyStatus is a lane's batch policy and, under cohort, what it has
// learned: for the admin /clusters page.
type PolicyStatus struct {
	Policy Policy        `json:"batch_policy"`
	Cohort *CohortStatus `json:"cohort,omitempty"`
}

// CohortStatus is what the cohort policy has learned of the callers.
type CohortStatus struct {
	// ReturningShare is the share of answered rows whose callers send
	// again within max_queue_delay; ReturnMs the mean time by which the
	// last of them came back.
	ReturningShare float64 `json:"returning_share"`
	ReturnMs       float64 `json:"return_ms"`
	// Holding is whether the rule is on: most callers come back, sooner
	// than a batch's fixed cost.
	Holding bool `json:"holding"`
	// BatchesShort counts held batches that left (at max_queue_delay, 3/2
	// of the return time, or a member's deadline) while callers of the
	// last answer were still out: when it grows with nearly every batch,
	// the callers need longer than max_queue_delay to come back.
	BatchesShort int64 `json:"batches_short"`
}

// PolicyStatus returns the lane's policy state.
func (l *Lane) PolicyStatus() PolicyStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.Policy != PolicyCohort {
		return PolicyStatus{Policy: PolicyTransit}
	}
	e := &l.echo
	e.expire(time.Now())
	cs := &CohortStatus{
		ReturningShare: math.Round(max(e.share, 0)*1000) / 1000,
		ReturnMs:       float64(e.ret.Microseconds()) / 1000,
		BatchesShort:   e.short,
	}
	for _, ep := range l.eps {
		cs.Holding = cs.Holding || l.cohortOnLocked(ep)
	}
	return PolicyStatus{Policy: PolicyCohort, Cohort: cs}
}

// cohortOnLocked reports whether the cohort rule holds batches bound for
// ep: a hold is allowed (max_queue_delay > 0), most answered callers come
// back, and sooner than ep's fixed cost per batch.
func (l *Lane) cohortOnLocked(ep *endpoint) bool {
	fixed, _ := ep.cost.fit()
	return l.cfg.MaxQueueDelay > 0 && l.echo.returning() && l.echo.ret < fixed
}

// headLocked returns the arrival of g's oldest live row and the earliest
// deadline among the rows of its next batch.
func (l *Lane) headLocked(g *group) (oldest, deadline time.Time) {
	rows := 0
	for pr := range numPriorities {
		for _, pc := range g.q[pr] {
			if rows >= l.cfg.MaxBatchSize {
				return oldest, deadline
			}
			if pc.p.finished {
				continue
			}
			if oldest.IsZero() || pc.p.arrival.Before(oldest) {
				oldest = pc.p.arrival
			}
			if deadline.IsZero() || pc.p.deadline.Before(deadline) {
				deadline = pc.p.deadline
			}
			rows += pc.hi - pc.lo
		}
	}
	return oldest, deadline
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
