package batch

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// batch is a set of pieces of one group on their way to one endpoint.
type batch struct {
	group    *group
	pieces   []piece
	rows     int
	deadline time.Time // the latest of its requests' deadlines
}

// scheduleLocked sends every batch that can go now and arms the timer for
// the next one that waits. It is called whenever rows arrive, a batch ends,
// an endpoint turns healthy or the timer fires.
func (l *Lane) scheduleLocked(now time.Time) {
	for l.queued > 0 && !l.laneOpenLocked() {
		g := l.nextGroupLocked()
		if g == nil {
			return
		}
		ep, idle := l.pickLocked(g.affinity())
		if ep == nil {
			return // every endpoint is full; the next batch to end reschedules
		}
		if at, wait := l.holdLocked(g, ep, idle, now); wait { // policy.go
			if !at.IsZero() {
				l.armLocked(at)
			}
			return
		}
		b := l.takeLocked(g, now)
		if b == nil {
			continue // everything it met had expired
		}
		l.startLocked(b, ep, now)
	}
}

// nextGroupLocked returns the group whose first live row has the highest
// priority, then the earliest arrival. It drops finished pieces it meets.
func (l *Lane) nextGroupLocked() *group {
	var best *group
	var bestPrio Priority
	var bestArrival time.Time
	for key, g := range l.groups {
		found := false
		for pr := range numPriorities {
			q := g.q[pr]
			for len(q) > 0 && q[0].p.finished {
				q = q[1:]
			}
			g.q[pr] = q
			if len(q) == 0 {
				continue
			}
			if a := q[0].p.arrival; best == nil || pr < bestPrio || (pr == bestPrio && a.Before(bestArrival)) {
				best, bestPrio, bestArrival = g, pr, a
			}
			found = true
			break
		}
		if !found && g.rows == 0 {
			delete(l.groups, key)
		}
	}
	return best
}

// pickLocked chooses an endpoint for the next batch: one with a free slot
// if any (idle), else one that may take a batch in transit.
func (l *Lane) pickLocked(key string) (ep *endpoint, idle bool) {
	for i, e := range l.eps {
		l.loads[i] = inference.EndpointLoad{InFlightRows: e.rows, Weight: e.Weight, Eligible: e.healthy && e.busy < e.limit && !l.endpointOpenLocked(e)}
	}
	if i := l.pick(key); i >= 0 {
		return l.eps[i], true
	}
	// Every slot is busy: the endpoint that frees first takes the batch in
	// transit.
	var best *endpoint
	var bestAt time.Time
	for _, e := range l.eps {
		if !e.healthy || e.busy >= e.limit+1 || l.endpointOpenLocked(e) {
			continue
		}
		if at := e.freeAt(); best == nil || at.Before(bestAt) {
			best, bestAt = e, at
		}
	}
	return best, false
}

// pick asks the picker for an endpoint among l.loads, with the affinity
// key when the picker hashes keys.
func (l *Lane) pick(key string) int {
	if kp, ok := l.cfg.Picker.(KeyPicker); ok {
		return kp.PickKey(key, l.loads)
	}
	return l.cfg.Picker.Pick(l.loads)
}

// affinity is the key of the group's first live request ("" if none).
func (g *group) affinity() string {
	for pr := range numPriorities {
		if len(g.q[pr]) > 0 {
			return g.q[pr][0].p.req.Affinity
		}
	}
	return ""
}

// freeAt predicts when e's earliest running batch ends; zero when unknown.
func (e *endpoint) freeAt() time.Time {
	if e.latency <= 0 || len(e.starts) == 0 {
		return time.Time{}
	}
	first := e.starts[0]
	for _, s := range e.starts[1:] {
		if s.Before(first) {
			first = s
		}
	}
	return first.Add(e.latency)
}

// sendAtLocked is when a batch in transit to ep should leave: MaxQueueDelay
// before ep's running batch is predicted to end.
func (l *Lane) sendAtLocked(ep *endpoint) time.Time {
	at := ep.freeAt()
	if at.IsZero() {
		return at
	}
	return at.Add(-l.cfg.MaxQueueDelay)
}

func (l *Lane) armLocked(at time.Time) {
	if l.timer != nil && !l.timerAt.IsZero() && !at.Before(l.timerAt) {
		return // an earlier wake-up is already set
	}
	d := time.Until(at)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.onTimer)
	} else {
		l.timer.Reset(d)
	}
	l.timerAt = at
}

func (l *Lane) onTimer() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timerAt = time.Time{}
	l.scheduleLocked(time.Now())
}

// takeLocked removes up to MaxBatchSize live rows from g, highest priority
// first, failing rows whose deadline has passed. It returns nil if it found
// no live rows.
func (l *Lane) takeLocked(g *group, now time.Time) *batch {
	b := &batch{group: g}
	for pr := range numPriorities {
		for len(g.q[pr]) > 0 && b.rows < l.cfg.MaxBatchSize {
			pc := &g.q[pr][0]
			p := pc.p
			if p.finished {
				g.q[pr] = g.q[pr][1:]
				continue
			}
			if !p.deadline.After(now) {
				l.failLocked(p, inference.Errorf(inference.KindDeadline,
					"batch: model %q: deadline passed while queued (%s)", l.cfg.Model, now.Sub(p.arrival).Round(time.Microsecond)))
				continue
			}
			n := min(pc.hi-pc.lo, l.cfg.MaxBatchSize-b.rows)
			b.pieces = append(b.pieces, piece{p: p, lo: pc.lo, hi: pc.lo + n})
			if pc.lo += n; pc.lo == pc.hi {
				g.q[pr] = g.q[pr][1:]
			}
			b.rows += n
			// The batch runs until its last waiting request's deadline: a
			// request with a shorter one fails alone (Submit's timer), and
			// cannot cancel the call for the others.
			if p.deadline.After(b.deadline) {
				b.deadline = p.deadline
			}
			l.dequeueLocked(p, n)
			if p.queued == 0 {
				p.result.QueueWait = now.Sub(p.arrival)
				l.m.queueWait.Record(context.Background(), p.result.QueueWait.Seconds(), l.m.attrs)
			}
		}
	}
	if b.rows == 0 {
		return nil
	}
	return b
}

func (l *Lane) startLocked(b *batch, ep *endpoint, now time.Time) {
	ep.busy++
	ep.rows += b.rows
	ep.starts = append(ep.starts, now)
	l.running++
	l.m.batchRows.Record(context.Background(), int64(b.rows), l.m.attrs)
	l.workers.run(func() { l.run(b, ep, now) })
}

// releaseLocked frees the slot on ep that b took at start.
func (l *Lane) releaseLocked(ep *endpoint, b *batch, start time.Time) {
	ep.busy--
	ep.rows -= b.rows
	for i, s := range ep.starts {
		if s.Equal(start) {
			ep.starts = append(ep.starts[:i], ep.starts[i+1:]...)
			break
		}
	}
	l.laneOpenLocked()
	l.closeEndpointBreakersLocked()
}

// finishLocked releases ep's slot taken at start and learns from the
// outcome.
func (l *Lane) finishLocked(ep *endpoint, b *batch, start time.Time, err error) {
	l.releaseLocked(ep, b, start)
	ep.batches++
	now := time.Now()
	ep.freedAt = now
	if err != nil {
		ep.failures++
		return
	}
	lat := now.Sub(start)
	ep.cost.observe(b.rows, lat)
	ep.tail.observe(lat)
	if ep.latency == 0 {
		ep.latency = lat
	} else {
		ep.latency += (lat - ep.latency) / 4
	}
}

// run sends b to ep (hedged or retried elsewhere, see send) and hands each
// piece its answer. It owns the batch until every piece is answered or
// failed.
func (l *Lane) run(b *batch, ep *endpoint, start time.Time) {
	outs, ep, err := l.send(b, ep, start)
	if err != nil && errors.Is(err, inference.ErrInvalid) && len(b.pieces) > 1 {
		l.bisect(b, ep, err, 2)
	} else {
		l.settle(b, ep.Address, outs, err)
	}
	l.mu.Lock()
	l.running--
	l.failIfNoEndpointLocked()
	l.scheduleLocked(time.Now())
	l.noteIdleLocked()
	l.mu.Unlock()
}

// bisect re-sends the halves of a batch the runtime refused, so that only
// the requests whose rows are bad fail. It runs on the batch's goroutine,
// one half after the other, on the same endpoint (which already refused
// quickly), until a half holds a single piece.
func (l *Lane) bisect(b *batch, ep *endpoint, cause error, attempt int) {
	if len(b.pieces) == 1 || time.Until(b.deadline) <= 0 {
		l.settle(b, ep.Address, nil, cause)
		return
	}
	mid := len(b.pieces) / 2
	for _, part := range [][]piece{b.pieces[:mid], b.pieces[mid:]} {
		h := &batch{group: b.group, pieces: part, deadline: b.deadline}
		for _, pc := range part {
			h.rows += pc.hi - pc.lo
		}
		outs, err := l.call(context.Background(), h, ep, attempt)
		if err != nil && errors.Is(err, inference.ErrInvalid) && len(part) > 1 {
			l.bisect(h, ep, err, attempt+1)
			continue
		}
		l.settle(h, ep.Address, outs, err)
	}
}

// call builds b's upstream request and sends it under b's deadline (and
// parent's cancel), in a client span that links every member request's
// span.
func (l *Lane) call(parent context.Context, b *batch, ep *endpoint, attempt int) ([]inference.Tensor, error) {
	tmpl := b.pieces[0].p.req // every request of a group has the same inputs, outputs and parameters
	req := &inference.Request{
		Model: l.cfg.Model, Version: l.cfg.Version,
		Parameters: tmpl.Parameters, Outputs: tmpl.Outputs,
		Inputs: make([]inference.Tensor, len(tmpl.Inputs)),
	}
	parts := make([]inference.Tensor, len(b.pieces))
	for i := range tmpl.Inputs {
		for j, pc := range b.pieces {
			in := &pc.p.req.Inputs[i]
			parts[j] = in.Slice(pc.p.offsets[i], pc.lo, pc.hi)
		}
		t, err := inference.Concat(parts)
		if err != nil {
			return nil, inference.Errorf(inference.KindInternal, "batch: model %q: %w", l.cfg.Model, err)
		}
		req.Inputs[i] = t
	}
	ctx, cancel := context.WithDeadline(parent, b.deadline)
	defer cancel()
	var links []trace.Link
	var first trace.SpanContext
	for i, pc := range b.pieces {
		if sc := pc.p.trace; sc.IsValid() && (i == 0 || pc.p != b.pieces[i-1].p) {
			links = append(links, trace.Link{SpanContext: sc})
			if !first.IsSampled() && sc.IsSampled() {
				first = sc
			}
		}
	}
	if links == nil {
		return l.cfg.Caller.Call(ctx, ep.Address, req)
	}
	// The batch span is a child of the first sampled member (so a sampled
	// request's trace shows its batch; with no member sampled it is not
	// sampled either) and links every member.
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("batchmesh.model", l.cfg.Model),
		attribute.String("batchmesh.version", l.cfg.Version),
		attribute.Int("batchmesh.batch_rows", b.rows),
		attribute.Int("batchmesh.batch_requests", len(links)),
		attribute.String("batchmesh.endpoint", ep.Address),
		attribute.Int("batchmesh.attempt", attempt),
	)}
	if !first.IsValid() {
		first = links[0].SpanContext
	}
	ctx = trace.ContextWithSpanContext(ctx, first)
	ctx, span := l.cfg.Tracer.Start(ctx, "batch "+l.cfg.Model, opts...)
	outs, err := l.cfg.Caller.Call(ctx, ep.Address, req)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return outs, err
}

// settle hands every piece of b its rows of outs, or err.
func (l *Lane) settle(b *batch, endpoint string, outs []inference.Tensor, err error) {
	if err == nil {
		err = checkRows(l.cfg.Model, endpoint, outs, b.rows)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		for _, pc := range b.pieces {
			l.failLocked(pc.p, err)
		}
		return
	}
	offs := make([][]int, len(outs))
	for i := range outs {
		offs[i] = outs[i].RowOffsets(nil)
	}
	row := 0
	for _, pc := range b.pieces {
		n := pc.hi - pc.lo
		mine := make([]inference.Tensor, len(outs))
		for i := range outs {
			mine[i] = outs[i].Slice(offs[i], row, row+n)
		}
		l.deliverLocked(pc.p, pc.lo, n, mine, b.rows, endpoint)
		row += n
	}
	if l.cfg.Policy == PolicyCohort {
		l.echo.answered(time.Now(), b.rows, l.cfg.MaxQueueDelay)
	}
}

// checkRows verifies that every output has one row per batch row: a
// mismatch is the runtime's fault and never a wrong answer.
func checkRows(model, endpoint string, outs []inference.Tensor, rows int) error {
	if len(outs) == 0 {
		return inference.Errorf(inference.KindUpstream, "batch: model %q: upstream %s returned no outputs", model, endpoint)
	}
	for i := range outs {
		if len(outs[i].Shape) == 0 || outs[i].Shape[0] != int64(rows) {
			return inference.Errorf(inference.KindUpstream, "batch: model %q: upstream %s returned output %q of shape %s for a batch of %d rows",
				model, endpoint, outs[i].Name, inference.FormatShape(outs[i].Shape), rows)
		}
		if err := outs[i].Validate(); err != nil {
			return inference.Errorf(inference.KindUpstream, "batch: model %q: upstream %s: %w", model, endpoint, err)
		}
	}
	return nil
}
