package batch

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// TestDeadlinePassesWhileQueued checks that a request whose deadline passes
// while its rows wait gets a 504 at its deadline and that its rows are never
// sent.
func TestDeadlinePassesWhileQueued(t *testing.T) {
	const latency = 10 * time.Millisecond
	tests := []struct {
		name     string
		deadline time.Duration // after submission; the slot frees at +latency
	}{
		{name: "before the slot frees", deadline: 5 * time.Millisecond},
		{name: "as the slot frees", deadline: latency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": latency})
				l := newTestLane(t, Config{Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				// No latency is known yet: the second request goes in
				// transit at once, and the endpoint has no room left.
				t0 := time.Now()
				running := submit(t.Context(), l, newRequest(1, 1))
				transit := submit(t.Context(), l, newRequest(2, 1))
				synctest.Wait()
				late := fp32Request(keysOf(3, 4))
				ctx, cancel := context.WithDeadline(t.Context(), t0.Add(tt.deadline))
				defer cancel()
				o := <-submit(ctx, l, late)
				checkKind(t, "late request", o.err, inference.KindDeadline)
				if !o.at.Equal(t0.Add(tt.deadline)) {
					t.Errorf("late request failed at +%v, want at its deadline +%v", o.at.Sub(t0), tt.deadline)
				}
				must(t, "running request", running)
				must(t, "request in transit", transit)
				synctest.Wait()
				for _, b := range f.sent() {
					if slices.Contains(b.keys, key(3, 0)) {
						t.Errorf("rows of the expired request were sent at +%v", b.at.Sub(t0))
					}
				}
				if _, queued := l.Status(); queued != 0 {
					t.Errorf("%d rows still queued", queued)
				}
			})
		})
	}
}

// TestLaneTimeoutWithoutContextDeadline: a request whose context has no
// deadline gets the lane's timeout, which Submit's own timer enforces
// (with a deadline, the context's timer does).
func TestLaneTimeoutWithoutContextDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency, timeout = 10 * time.Millisecond, 5 * time.Millisecond
		f := newFakeCaller(map[string]time.Duration{"a": latency})
		l := newTestLane(t, Config{Timeout: timeout, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
		long, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		t0 := time.Now()
		running := submit(long, l, newRequest(1, 1))
		transit := submit(long, l, newRequest(2, 1))
		synctest.Wait()
		o := <-submit(t.Context(), l, fp32Request(keysOf(3, 4)))
		checkKind(t, "request without a deadline", o.err, inference.KindDeadline)
		if !o.at.Equal(t0.Add(timeout)) {
			t.Errorf("request without a deadline failed at +%v, want at the lane's timeout +%v", o.at.Sub(t0), timeout)
		}
		must(t, "running request", running)
		must(t, "request in transit", transit)
	})
}

// TestAdmissionDeadline checks the deadline checks of Submit: a deadline
// already passed is a 504; one that the learned latency says cannot be met,
// even with every batch ahead full, is a 429 at once.
func TestAdmissionDeadline(t *testing.T) {
	const latency = 10 * time.Millisecond
	tests := []struct {
		name     string
		warm     bool          // latency learned
		ahead    int           // full 4-row requests queued behind a busy endpoint
		deadline time.Duration // from submission
		want     inference.Kind
		wantAt   time.Duration // when Submit returns
	}{
		{name: "passed", deadline: -time.Millisecond, want: inference.KindDeadline},
		{name: "now", deadline: 0, want: inference.KindDeadline},
		{name: "passed, warm", warm: true, deadline: -time.Hour, want: inference.KindDeadline},
		{name: "infeasible", warm: true, deadline: 5 * time.Millisecond, want: inference.KindOverloaded},
		{name: "feasible", warm: true, deadline: 11 * time.Millisecond, want: noError, wantAt: latency},
		// Unknown latency: admitted, then it runs out of time.
		{name: "cold", deadline: 5 * time.Millisecond, want: inference.KindDeadline, wantAt: 5 * time.Millisecond},
		// 8 rows ahead plus 1 make 3 batches of 4, behind the 2 in flight:
		// 5 batches on one slot need 50ms. (The fake computes the batch in
		// transit at once instead of after the running one, so the answer
		// comes at 30ms.)
		{name: "infeasible behind queue", warm: true, ahead: 2, deadline: 45 * time.Millisecond, want: inference.KindOverloaded},
		{name: "feasible behind queue", warm: true, ahead: 2, deadline: 55 * time.Millisecond, want: noError, wantAt: 30 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": latency})
				l := newTestLane(t, Config{MaxBatchSize: 4, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				if tt.warm {
					warm(t, l)
				}
				var others []<-chan outcome
				if tt.ahead > 0 {
					// Two full batches fill the slot and the transit.
					for i := range 2 + tt.ahead {
						others = append(others, submit(t.Context(), l, newRequest(100+i, 4)))
						synctest.Wait()
					}
				}
				before := len(f.sent())
				start := time.Now()
				r := fp32Request(keysOf(1, 1))
				ctx, cancel := context.WithDeadline(t.Context(), start.Add(tt.deadline))
				defer cancel()
				res, err := l.Submit(ctx, r)
				checkKind(t, "Submit", err, tt.want)
				if err == nil {
					checkEcho(t, r, res)
				}
				if got := time.Since(start); got != tt.wantAt {
					t.Errorf("Submit returned after %v, want %v", got, tt.wantAt)
				}
				for _, ch := range others {
					must(t, "request ahead", ch)
				}
				refused := tt.want == inference.KindOverloaded || tt.wantAt == 0
				for _, b := range f.sentAfter(before) {
					if refused && slices.Contains(b.keys, key(1, 0)) {
						t.Errorf("refused request was sent")
					}
				}
			})
		})
	}
}

// TestQueueLimits checks MaxQueueSize and priorities: a request that does
// not fit is a 429, unless it can push out the newest queued requests of
// lower priority; and queued rows leave highest priority first.
func TestQueueLimits(t *testing.T) {
	type sub struct {
		prio Priority
		rows int
	}
	var (
		high   = func(n int) sub { return sub{PriorityHigh, n} }
		normal = func(n int) sub { return sub{PriorityNormal, n} }
		low    = func(n int) sub { return sub{PriorityLow, n} }
	)
	tests := []struct {
		name   string
		queued []sub // in arrival order, MaxQueueSize 8
		next   sub
		want   inference.Kind // for next
		shed   []int          // indices of queued pushed out
		order  []int          // request indices (len(queued) is next) in the order their rows are sent
	}{
		{name: "fits", queued: []sub{normal(2), normal(2), normal(2)}, next: normal(2), want: noError, order: []int{0, 1, 2, 3}},
		{name: "full", queued: []sub{normal(2), normal(2), normal(2), normal(2)}, next: normal(1), want: inference.KindOverloaded, order: []int{0, 1, 2, 3}},
		{name: "full of low, low", queued: []sub{low(4), low(4)}, next: low(1), want: inference.KindOverloaded, order: []int{0, 1}},
		{name: "too large", queued: nil, next: normal(9), want: inference.KindTooLarge},
		{
			name:   "high pushes newest low",
			queued: []sub{normal(2), low(2), low(2), low(2)}, next: high(3),
			want: noError, shed: []int{2, 3}, order: []int{4, 0, 1},
		},
		{
			name:   "newest low goes, older low stays",
			queued: []sub{low(2), normal(3), low(3)}, next: high(2),
			want: noError, shed: []int{2}, order: []int{3, 1, 0},
		},
		{
			name:   "high pushes normal",
			queued: []sub{normal(4), normal(4)}, next: high(1),
			want: noError, shed: []int{1}, order: []int{2, 0},
		},
		{
			name:   "low first, then normal",
			queued: []sub{low(2), normal(2), normal(2), normal(2)}, next: high(4),
			want: noError, shed: []int{0, 3}, order: []int{4, 1, 2},
		},
		{
			name:   "normal pushes low, not high",
			queued: []sub{high(2), low(2), high(2), low(2)}, next: normal(2),
			want: noError, shed: []int{3}, order: []int{0, 2, 4, 1},
		},
		{
			name:   "not enough to push out",
			queued: []sub{high(2), high(2), high(2), low(2)}, next: normal(4),
			want: inference.KindOverloaded, order: []int{0, 1, 2, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxBatchSize: 4, MaxQueueSize: 8, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				// Two full batches fill the slot and the transit. They
				// end 1ms apart, so that the batches after them leave at
				// distinct instants, in the lane's order.
				b1 := submit(t.Context(), l, newRequest(8000, 4))
				synctest.Wait()
				time.Sleep(time.Millisecond)
				b2 := submit(t.Context(), l, newRequest(8001, 4))
				synctest.Wait()
				before := len(f.sent())

				var outs []<-chan outcome
				for i, s := range append(slices.Clone(tt.queued), tt.next) {
					r := newRequest(i, s.rows)
					r.Priority = s.prio
					outs = append(outs, submit(t.Context(), l, r))
					synctest.Wait()
					time.Sleep(time.Microsecond) // distinct arrivals
				}
				last := len(tt.queued)
				for i, ch := range outs {
					o := <-ch
					want := noError
					switch {
					case i == last:
						want = tt.want
					case slices.Contains(tt.shed, i):
						want = inference.KindOverloaded
					}
					checkKind(t, "request "+itoa(i), o.err, want)
				}
				must(t, "blocker", b1)
				must(t, "blocker", b2)

				var order []int
				for _, b := range f.sentAfter(before) {
					for _, k := range b.keys {
						if id := int(k) / 1000; len(order) == 0 || order[len(order)-1] != id {
							order = append(order, id)
						}
					}
				}
				if !slices.Equal(order, tt.order) {
					t.Errorf("requests sent in the order %v, want %v", order, tt.order)
				}
			})
		})
	}
}

// TestRefusalShedsNothing checks that a high-priority request refused for
// its deadline pushes nothing out: the low requests it would have displaced
// still get their answers.
func TestRefusalShedsNothing(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration
		want     inference.Kind
		shed     int // low requests pushed out
	}{
		// After pushing one low request out, 6 queued rows + 2 make two
		// batches of 4, behind the 2 in flight: 40ms on one slot.
		{name: "infeasible", deadline: 35 * time.Millisecond, want: inference.KindOverloaded, shed: 0},
		{name: "feasible", deadline: 45 * time.Millisecond, want: noError, shed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCaller(map[string]time.Duration{"a": 10 * time.Millisecond})
				l := newTestLane(t, Config{MaxBatchSize: 4, MaxQueueSize: 8, Endpoints: []Endpoint{{Address: "a", Slots: 1}}}, f)
				warm(t, l)
				b1 := submit(t.Context(), l, newRequest(8000, 4))
				b2 := submit(t.Context(), l, newRequest(8001, 4))
				synctest.Wait()
				var lows []<-chan outcome
				for i := range 4 {
					r := newRequest(i, 2)
					r.Priority = PriorityLow
					lows = append(lows, submit(t.Context(), l, r))
					synctest.Wait()
				}
				r := fp32Request(keysOf(10, 2))
				r.Priority = PriorityHigh
				ctx, cancel := context.WithTimeout(t.Context(), tt.deadline)
				defer cancel()
				o := <-submit(ctx, l, r)
				checkKind(t, "high request", o.err, tt.want)
				shed := 0
				for _, ch := range lows {
					if o := <-ch; o.err != nil {
						checkKind(t, "low request", o.err, inference.KindOverloaded)
						shed++
					}
				}
				if shed != tt.shed {
					t.Errorf("%d low requests pushed out, want %d", shed, tt.shed)
				}
				must(t, "blocker", b1)
				must(t, "blocker", b2)
			})
		})
	}
}

// TestSubmitRefusals checks the refusals that need no queue.
func TestSubmitRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller(nil)
		l := newTestLane(t, Config{}, f)
		empty := newRequest(1, 1)
		empty.Rows = 0
		_, err := l.Submit(t.Context(), empty)
		checkKind(t, "no rows", err, inference.KindInvalid)

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		// Sent at once on the idle lane, but its caller is gone.
		_, err = l.Submit(ctx, newRequest(2, 1))
		if err != nil && !errors.Is(err, inference.ErrDeadline) {
			t.Errorf("cancelled context: %v, want success or a 504", err)
		}
		synctest.Wait()
		if _, queued := l.Status(); queued != 0 {
			t.Errorf("%d rows queued", queued)
		}
	})
}

func TestParsePriority(t *testing.T) {
	tests := []struct {
		in      string
		want    Priority
		str     string // want.String()
		wantErr bool
	}{
		{in: "", want: PriorityNormal, str: "normal"},
		{in: "normal", want: PriorityNormal, str: "normal"},
		{in: "high", want: PriorityHigh, str: "high"},
		{in: "low", want: PriorityLow, str: "low"},
		{in: "HIGH", wantErr: true},
		{in: "urgent", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePriority(tt.in)
		if tt.wantErr {
			if inference.KindOf(err) != inference.KindInvalid {
				t.Errorf("ParsePriority(%q) = %v, %v; want a KindInvalid error", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want || got.String() != tt.str {
			t.Errorf("ParsePriority(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestNewLaneValidates(t *testing.T) {
	ok := Config{Model: "m", Endpoints: []Endpoint{{Address: "a"}}, Caller: newFakeCaller(nil)}
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{name: "no endpoints", modify: func(c *Config) { c.Endpoints = nil }},
		{name: "no caller", modify: func(c *Config) { c.Caller = nil }},
		{name: "negative batch size", modify: func(c *Config) { c.MaxBatchSize = -1 }},
		{name: "negative queue size", modify: func(c *Config) { c.MaxQueueSize = -1 }},
		{name: "negative delay", modify: func(c *Config) { c.MaxQueueDelay = -time.Millisecond }},
	}
	for _, tt := range tests {
		cfg := ok
		tt.modify(&cfg)
		if _, err := NewLane(cfg); err == nil {
			t.Errorf("%s: NewLane succeeded, want an error", tt.name)
		}
	}
	l, err := NewLane(ok)
	if err != nil {
		t.Fatalf("NewLane: %v", err)
	}
	eps, queued := l.Status()
	want := []EndpointStatus{{Address: "a", Weight: 1, Slots: 1, Limit: 1, Healthy: true}}
	if !slices.Equal(eps, want) || queued != 0 {
		t.Errorf("Status() = %+v, %d; want %+v, 0 (defaults)", eps, queued, want)
	}
	if got := l.RetryAfter(); got != time.Second {
		t.Errorf("RetryAfter() = %v before any latency is known, want 1s", got)
	}
}
