package batch

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// pending is one submitted request while it is in the lane. Its fields are
// guarded by the lane's mutex, except done, which is closed once when the
// result is final.
type pending struct {
	req      *Request
	deadline time.Time         // the context's, or arrival + Config.Timeout
	trace    trace.SpanContext // the caller's span, linked from the batch span; may be invalid
	group    *group
	offsets  [][]int // per input, the row offsets into its Data
	arrival  time.Time
	queued   int // rows still in a queue
	waiting  int // rows not yet answered
	finished bool
	pieces   []pieceResult
	result   Result
	err      error
	done     chan struct{}
}

type pieceResult struct {
	lo      int
	outputs []inference.Tensor
}

// piece is a range of a pending request's rows in a queue or a batch.
type piece struct {
	p      *pending
	lo, hi int
}

// group is the queue of one group key: a FIFO per priority.
type group struct {
	key  string
	q    [numPriorities][]piece
	rows int // rows queued in this group
}

// Submit queues r's rows, waits for their answer and returns it. ctx's
// deadline is r's (Config.Timeout when it has none) and its span, if any, is
// linked from the batch spans. It returns early with an error when r is
// refused (429 queue full or deadline infeasible, 503 no healthy endpoint
// or closed), when its deadline passes (504) or when ctx is cancelled; the
// batch r rode in goes on for its other members. Whatever happens, Submit
// returns exactly once and the lane forgets r.
func (l *Lane) Submit(ctx context.Context, r *Request) (Result, error) {
	now := time.Now()
	p := &pending{req: r, arrival: now, done: make(chan struct{}), trace: trace.SpanContextFromContext(ctx)}
	var ok bool
	if p.deadline, ok = ctx.Deadline(); !ok {
		p.deadline = now.Add(l.cfg.Timeout)
	}
	p.offsets = make([][]int, len(r.Inputs))
	for i := range r.Inputs {
		p.offsets[i] = r.Inputs[i].RowOffsets(nil)
	}
	if err := l.admit(p, now); err != nil {
		return Result{}, err
	}
	// A context with a deadline ends the wait itself (the proxy's do: its
	// timer is the request's); a timer of its own only for one without.
	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok || ctx.Done() == nil {
		timer := time.NewTimer(p.deadline.Sub(now))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-p.done:
	case <-expired:
		l.fail(p, inference.Errorf(inference.KindDeadline,
			"batch: model %q: deadline of %s passed before the answer came", l.cfg.Model, p.deadline.Sub(p.arrival).Round(time.Microsecond)))
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			l.fail(p, inference.Errorf(inference.KindDeadline,
				"batch: model %q: deadline of %s passed before the answer came", l.cfg.Model, p.deadline.Sub(p.arrival).Round(time.Microsecond)))
		} else {
			l.fail(p, inference.Errorf(inference.KindDeadline, "batch: model %q: %v", l.cfg.Model, context.Cause(ctx)))
		}
	}
	<-p.done
	return p.result, p.err
}

// admit checks r against the lane's limits and queues its rows.
func (l *Lane) admit(p *pending, now time.Time) error {
	r := p.req
	if r.Rows <= 0 {
		return inference.Errorf(inference.KindInvalid, "batch: model %q: request has no rows", l.cfg.Model)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return inference.Errorf(inference.KindUnavailable, "batch: model %q is draining", l.cfg.Model)
	case !l.healthyLocked():
		return inference.Errorf(inference.KindUnavailable, "batch: model %q version %q has no healthy endpoint", l.cfg.Model, l.cfg.Version)
	case r.Rows > l.cfg.MaxQueueSize:
		return inference.Errorf(inference.KindTooLarge, "batch: model %q: request of %d rows is larger than the whole queue (max_queue_size %d)", l.cfg.Model, r.Rows, l.cfg.MaxQueueSize)
	case !p.deadline.After(now):
		l.m.shed.Add(context.Background(), 1, l.m.shedAttrs[shedDeadline])
		return inference.Errorf(inference.KindDeadline, "batch: model %q: the deadline has already passed", l.cfg.Model)
	}
	// Choose the requests r would push out, but shed them only once r is
	// sure to be admitted.
	var victims []*pending
	ahead := l.queued
	if over := l.queued + r.Rows - l.cfg.MaxQueueSize; over > 0 {
		var freed int
		if victims, freed = l.pushOutLocked(r.Priority, over); victims == nil {
			l.m.shed.Add(context.Background(), 1, l.m.shedAttrs[shedQueueFull])
			return inference.Errorf(inference.KindOverloaded, "batch: model %q: queue full (%d of max_queue_size %d rows waiting)", l.cfg.Model, l.queued, l.cfg.MaxQueueSize)
		}
		ahead -= freed
	}
	if eta := l.earliestFinishLocked(now, ahead+r.Rows); !eta.IsZero() && eta.After(p.deadline) {
		l.m.shed.Add(context.Background(), 1, l.m.shedAttrs[shedDeadline])
		return inference.Errorf(inference.KindOverloaded, "batch: model %q: cannot finish within the deadline (%s) behind the %d rows queued; earliest about %s",
			l.cfg.Model, p.deadline.Sub(now).Round(time.Millisecond), ahead, eta.Sub(now).Round(time.Millisecond))
	}
	for _, v := range victims {
		l.m.shed.Add(context.Background(), 1, l.m.shedAttrs[shedPriority])
		l.failLocked(v, inference.Errorf(inference.KindOverloaded,
			"batch: model %q: shed to make room for higher-priority requests", l.cfg.Model))
	}
	key := r.Group
	if _, hashed := l.cfg.Picker.(KeyPicker); hashed && r.Affinity != "" {
		key += "\x00affinity=" + r.Affinity // a batch goes to one endpoint: one key per batch
	}
	g := l.groups[key]
	if g == nil {
		g = &group{key: key}
		l.groups[key] = g
	}
	p.group = g
	for lo := 0; lo < r.Rows; lo += l.cfg.MaxBatchSize {
		g.q[r.Priority] = append(g.q[r.Priority], piece{p: p, lo: lo, hi: min(lo+l.cfg.MaxBatchSize, r.Rows)})
	}
	p.queued, p.waiting = r.Rows, r.Rows
	g.rows += r.Rows
	l.queued += r.Rows
	l.m.queueDepth.Add(context.Background(), int64(r.Rows), l.m.attrs)
	if l.cfg.Policy == PolicyCohort {
		l.echo.arrived(now, r.Rows)
	}
	l.scheduleLocked(now)
	return nil
}

// earliestFinishLocked estimates when rows, counting those queued ahead,
// could all be answered if dispatched from now: the batches already in
// flight on healthy endpoints come first (counted whole: how far the
// running ones are is not known), then every queued batch full, every
// healthy slot busy, at the best recent latency. Counting the batches in
// flight keeps it from admitting a request that would wait out its
// deadline behind them (a 504 under overload). Zero when no latency is
// known yet.
func (l *Lane) earliestFinishLocked(now time.Time, rows int) time.Time {
	lat := l.bestLatencyLocked()
	if lat <= 0 {
		return time.Time{}
	}
	batches := (rows+l.cfg.MaxBatchSize-1)/l.cfg.MaxBatchSize + l.inFlightLocked()
	rounds := (batches + l.slotsLocked() - 1) / l.slotsLocked()
	return now.Add(time.Duration(rounds) * lat)
}

// inFlightLocked is the batches in flight on healthy endpoints.
func (l *Lane) inFlightLocked() int {
	n := 0
	for _, e := range l.eps {
		if e.healthy {
			n += e.busy
		}
	}
	return n
}

// pushOutLocked chooses the newest queued requests of lower priority than
// prio whose rows free at least need, and returns them and the rows they
// free; nil when it cannot free enough. It changes nothing: the caller
// sheds them.
func (l *Lane) pushOutLocked(prio Priority, need int) (victims []*pending, freed int) {
	for pr := numPriorities - 1; pr > prio && freed < need; pr-- {
		for _, g := range l.groups {
			for i := len(g.q[pr]) - 1; i >= 0 && freed < need; i-- {
				v := g.q[pr][i].p
				if v.finished || slices.Contains(victims, v) || v.queued < v.req.Rows {
					continue // a request partly sent cannot be shed
				}
				victims = append(victims, v)
				freed += v.queued
			}
		}
	}
	if freed < need {
		return nil, 0
	}
	return victims, freed
}

// fail ends p with err unless it has ended already.
func (l *Lane) fail(p *pending, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(p, err)
}

func (l *Lane) failLocked(p *pending, err error) {
	if p.finished {
		return
	}
	l.dequeueLocked(p, p.queued)
	p.finished, p.err = true, err
	close(p.done)
	l.noteIdleLocked()
}

// dequeueLocked accounts for n of p's rows leaving the queue.
func (l *Lane) dequeueLocked(p *pending, n int) {
	if n == 0 {
		return
	}
	p.queued -= n
	p.group.rows -= n
	l.queued -= n
	l.m.queueDepth.Add(context.Background(), -int64(n), l.m.attrs)
}

// deliverLocked records the outputs of rows [lo, lo+rows) of p and finishes
// p when every row is answered.
func (l *Lane) deliverLocked(p *pending, lo, rows int, outputs []inference.Tensor, batchRows int, endpoint string) {
	if p.finished {
		return
	}
	p.pieces = append(p.pieces, pieceResult{lo: lo, outputs: outputs})
	p.waiting -= rows
	p.result.BatchRows, p.result.Endpoint = batchRows, endpoint
	if p.waiting > 0 {
		return
	}
	slices.SortFunc(p.pieces, func(a, b pieceResult) int { return a.lo - b.lo })
	outs := make([]inference.Tensor, len(p.pieces[0].outputs))
	parts := make([]inference.Tensor, len(p.pieces))
	for i := range outs {
		for j := range p.pieces {
			parts[j] = p.pieces[j].outputs[i]
		}
		t, err := inference.Concat(parts)
		if err != nil {
			l.failLocked(p, inference.Errorf(inference.KindUpstream, "batch: model %q: pieces of output disagree: %w", l.cfg.Model, err))
			return
		}
		outs[i] = t
	}
	p.result.Outputs = outs
	p.pieces = nil
	p.finished = true
	close(p.done)
	l.noteIdleLocked()
}
